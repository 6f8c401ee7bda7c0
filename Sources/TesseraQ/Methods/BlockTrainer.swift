import Foundation
import TQKernels

/// A linear layer whose weights a block is trained through (TesseraQ's rounding, LWC's clipping).
protocol TrainableLinear: AnyObject {
    /// The weights (out x in) the block runs on, refreshed by `materialize`.
    var wHat: FloatBuffer { get }
    func materialize()
    /// The gradients of the layer's own variables from dL/dwHat.
    func backward(_ dW: UnsafePointer<Float>)
}

/// The block reconstruction loop TesseraQ and LWC share: each step draws a batch of calibration
/// sequences, runs the block on the trainable linears' weights, and backpropagates the output MSE
/// against the full-precision targets into them.
final class BlockTrainer {
    let config: LlamaConfig
    let calibration: CalibrationOptions
    let layer: Int
    let linears: [TrainableLinear]
    private let train: BlockWeights
    private let work: BlockWorkspace
    private let grads: BlockGradients
    private let x, target, y, dY: FloatBuffer
    /// The loss of the last step run (NaN before the first).
    private(set) var lastLoss = Double.nan

    /// Trains `linears` (in `LinearKind` order) inside `block`, whose other tensors stay fixed; the
    /// block's GEMMs run at `compute`, its split sums formed as `reduction` forms them. A
    /// tensor-parallel shard passes its config, its reduction and `kvSums` (BlockWorkspace).
    init(config: LlamaConfig, calibration: CalibrationOptions, layer: Int, block: BlockWeights,
         linears: [TrainableLinear], compute: ComputeDType, reduction: PartialReduction = .whole, kvSums: PartialSums? = nil) throws {
        self.config = config
        self.calibration = calibration
        self.layer = layer
        self.linears = linears
        train = block.replacingLinears(linears.map(\.wHat))
        let B = calibration.batch, L = calibration.seqLen, d = config.hidden
        work = try BlockWorkspace(config: config, sequences: B, length: L, compute: compute, reduction: reduction)
        work.kvSums = kvSums
        grads = try BlockGradients(config: config, rows: B * L)
        x = try FloatBuffer(count: B * L * d); target = try FloatBuffer(count: B * L * d)
        y = try FloatBuffer(count: B * L * d); dY = try FloatBuffer(count: B * L * d)
    }

    /// `steps` steps on inputs `xq` towards targets `yfp`, batches drawn with `rng`; `update(step)`
    /// applies the optimiser once the gradients are in. Progress reports this as `round` of `rounds`.
    func run(steps: Int, rng: inout SeededGenerator, xq: ActivationCache, yfp: ActivationCache, round: Int, rounds: Int,
             progress: QuantProgressHandler?, update: (Int) -> Void) throws {
        let B = calibration.batch, L = calibration.seqLen, d = config.hidden
        for step in stride(from: 1, through: steps, by: 1) {
            var order = Array(0..<xq.samples)
            order.shuffle(using: &rng)
            let batch = Array(order.prefix(B))
            xq.gather(batch, into: x.p)
            yfp.gather(batch, into: target.p)
            for l in linears { l.materialize() }
            work.forward(x.p, weights: train, into: y.p)
            lastLoss = tqk_l2_loss(y.p, target.p, Int64(B * L), Int64(d), dY.p)
            guard lastLoss.isFinite else {
                throw TQError(.numeric, "loss is \(lastLoss) at block \(layer), round \(round), step \(step)")
            }
            work.backward(dY.p, weights: train, into: grads)
            for (k, l) in linears.enumerated() { l.backward(grads.dW[k].p) }
            update(step)
            try checkQuantProgress(progress, QuantProgress(block: layer, blocks: config.layers, round: round, rounds: rounds,
                                                           step: step, steps: steps, loss: lastLoss))
        }
    }
}
