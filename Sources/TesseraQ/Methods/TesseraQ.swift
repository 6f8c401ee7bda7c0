import Foundation
import TQKernels

/// TesseraQ (ALGORITHM.md section 3) as a block method: the grid from RTN (or AWQ once the
/// block is transformed), then progressive adaptive rounding and dequantisation scale tuning.
struct TesseraQMethod: BlockQuantizer {
    let options: TesseraQOptions
    var calibration: CalibrationOptions { options.calibration }
    var optionsJSON: [String: Any] { options.json }

    func quantize(layer: Int, model: LlamaConfig, block: BlockWeights, inputs: ActivationCache, targets: ActivationCache,
                  spec: QuantSpec, progress: QuantProgressHandler?) throws -> (linears: [QuantizedLinear], report: [String: Any]) {
        // AWQ initialisation: scales folded into `block` (norms included) and clipping, on the
        // quantized trajectory's inputs; the grids are then RTN's on the transformed, clipped weights.
        var awqReport: [String: Any] = [:]
        if options.initMethod == "awq" {
            var settings = AWQSettings()
            settings.samples = options.awqSamples
            awqReport = try AWQTransform(config: model, settings: settings, spec: spec, batch: calibration.batch, layer: layer)
                .apply(to: block, inputs: inputs)
        }
        let grids = try roundToNearest(block: block, layer: layer, config: model, spec: spec)
        let (linears, report) = try TesseraQBlock(config: model, options: options, layer: layer)
            .run(fp: block, grids: grids, xq: inputs, yfp: targets, progress: progress)
        return (linears, report.merging(awqReport) { $1 })
    }
}

/// Progressive adaptive rounding and dequantisation scale tuning of one block's seven linears
/// against the full-precision target.
struct TesseraQBlock {
    let config: LlamaConfig
    let options: TesseraQOptions
    let layer: Int

    /// Trains the block whose float weights are `fp` (after any AWQ transform) from the frozen
    /// `grids`, on inputs `xq` towards targets `yfp`. Returns the hard, exported layers.
    func run(fp: BlockWeights, grids: [QuantizedLinear], xq: ActivationCache, yfp: ActivationCache,
             progress: QuantProgressHandler?) throws -> (linears: [QuantizedLinear], report: [String: Any]) {
        let fq = try LinearKind.allCases.map { try FakeQuantLinear(weight: fp[$0].p, grid: grids[$0.rawValue]) }
        let train = fp.replacingLinears(fq.map(\.wHat))
        let B = options.calibration.batch, L = options.calibration.seqLen, d = config.hidden
        let work = try BlockWorkspace(config: config, sequences: B, length: L, compute: options.computeDType)
        let grads = try BlockGradients(config: config, rows: B * L)
        let x = try FloatBuffer(count: B * L * d), target = try FloatBuffer(count: B * L * d)
        let y = try FloatBuffer(count: B * L * d), dY = try FloatBuffer(count: B * L * d)
        var lastLoss = Double.nan
        let rounds = options.thresholds.count
        for (r, quantile) in options.thresholds.enumerated() {
            for l in fq { l.harden(quantile: quantile); l.resetOptimizer() }
            var rng = SeededGenerator.derived(options.calibration.seed, layer, r)
            for step in stride(from: 1, through: options.iters, by: 1) {
                var order = Array(0..<xq.samples)
                order.shuffle(using: &rng)
                let batch = Array(order.prefix(B))
                xq.gather(batch, into: x.p)
                yfp.gather(batch, into: target.p)
                for l in fq { l.materialize() }
                work.forward(x.p, weights: train, into: y.p)
                lastLoss = tqk_l2_loss(y.p, target.p, Int64(B * L), Int64(d), dY.p)
                guard lastLoss.isFinite else {
                    throw TQError(.numeric, "loss is \(lastLoss) at block \(layer), round \(r + 1), step \(step)")
                }
                work.backward(dY.p, weights: train, into: grads)
                for (k, l) in fq.enumerated() {
                    l.backward(grads.dW[k].p)
                    l.step(step, lr: Float(options.lr), scaleLR: Float(options.scaleLR), scaleWD: Float(options.scaleWD))
                }
                try checkQuantProgress(progress, QuantProgress(block: layer, blocks: config.layers, round: r + 1, rounds: rounds,
                                                               step: step, steps: options.iters, loss: lastLoss))
            }
        }
        for l in fq { l.harden(quantile: 0, final: true) }
        let linears = fq.map { $0.export() }
        let changed = zip(linears, grids).reduce(0) { acc, p in acc + zip(p.0.codes, p.1.codes).filter { $0 != $1 }.count }
        let total = linears.reduce(0) { $0 + $1.codes.count }
        let ranges = fq.map(\.dstRange)
        var report: [String: Any] = [
            "changed_from_nearest": Double(changed) / Double(total),
            "dst_min": Double(ranges.map(\.0).min()!), "dst_max": Double(ranges.map(\.1).max()!),
        ]
        // Absent when no step ran (iters 0): the report is JSON, which has no NaN.
        if !lastLoss.isNaN { report["last_step_loss"] = lastLoss }
        return (linears, report)
    }
}
