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
    /// `massive_token_cap` (0: the plain MSE) and the per-token loss weights it sets each step.
    private let tokenCap: Double
    private let rowWeight: FloatBuffer?
    /// The loss of the last step run (NaN before the first).
    private(set) var lastLoss = Double.nan

    /// Trains `linears` (in `LinearKind` order) inside `block`, whose other tensors stay fixed; the
    /// block's GEMMs run at `compute`, its split sums formed as `reduction` forms them. A
    /// tensor-parallel shard passes its config, its reduction and `kvSums` (BlockWorkspace).
    init(config: LlamaConfig, calibration: CalibrationOptions, layer: Int, block: BlockWeights,
         linears: [TrainableLinear], compute: ComputeDType, tokenCap: Double = 0, reduction: PartialReduction = .whole,
         kvSums: PartialSums? = nil) throws {
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
        self.tokenCap = tokenCap
        rowWeight = tokenCap > 0 ? try FloatBuffer(count: B * L) : nil
    }

    /// Reads config key `massive_token_cap` (TesseraQ's and LWC's): 0 (off) or at least 1.
    static func readTokenCap(_ r: KeyReader, default d: Double) throws -> Double {
        let cap = try r.double("massive_token_cap", default: d)
        guard cap == 0 || cap >= 1 else {
            throw TQError.invalid("config key massive_token_cap: must be 0 (off) or at least 1 (got \(cap))")
        }
        return cap
    }

    /// Turns the squared norms of a batch's target tokens, `w`, into their loss weights in place: a
    /// token whose norm exceeds `cap` times the batch's median token norm counts as a token of that
    /// norm with the same relative error, every other token with weight 1. Massive activations (an
    /// attention sink's residual, a hundred times the median norm from SmolLM2's block 11 on)
    /// otherwise make up most of the plain MSE, though after RMSNorm only their relative error matters.
    static func capTokenWeights(_ w: UnsafeMutablePointer<Float>, rows: Int, cap: Double) {
        let sorted = (0..<rows).map { w[$0] }.sorted()
        let median = rows % 2 == 1 ? sorted[rows / 2] : (sorted[rows / 2 - 1] + sorted[rows / 2]) / 2
        let limit = Float(cap * cap) * median
        for r in 0..<rows { w[r] = w[r] > limit ? limit / w[r] : 1 }
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
            if let rowWeight {
                tqk_row_sumsq(target.p, Int64(B * L), Int64(d), rowWeight.p)
                Self.capTokenWeights(rowWeight.p, rows: B * L, cap: tokenCap)
            }
            lastLoss = tqk_l2_loss(y.p, target.p, Int64(B * L), Int64(d), rowWeight.map { UnsafePointer($0.p) }, dY.p)
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
