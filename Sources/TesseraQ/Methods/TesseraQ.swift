import Foundation
import TQKernels

/// TesseraQ (ALGORITHM.md section 3) as a block method: the grid from RTN (or AWQ once the
/// block is transformed, or LWC), then progressive adaptive rounding and dequantisation scale tuning.
struct TesseraQMethod: BlockQuantizer {
    let options: TesseraQOptions
    var calibration: CalibrationOptions { options.calibration }
    var computeDType: ComputeDType { options.computeDType }
    var optionsJSON: [String: Any] { options.json }

    func quantize(layer: Int, model: LlamaConfig, block: BlockWeights, inputs: ActivationCache, targets: ActivationCache,
                  spec: QuantSpec, progress: QuantProgressHandler?) throws -> (linears: [QuantizedLinear], report: [String: Any]) {
        let tesseraq = TesseraQBlock(config: model, options: options, layer: layer)
        switch options.initMethod {
        case .rtn:
            let grids = try roundToNearest(block: block, layer: layer, config: model, spec: spec)
            return try tesseraq.run(fp: block, grids: grids, xq: inputs, yfp: targets, progress: progress)
        case .awq:
            // AWQ scales folded into `block` (norms included) and clipping, on the quantized
            // trajectory's inputs; the grids are then RTN's on the transformed, clipped weights.
            let awqReport = try AWQTransform(config: model, settings: options.awq, spec: spec, batch: calibration.batch, layer: layer,
                                             dtype: options.computeDType, tokenCap: options.massiveTokenCap)
                .apply(to: block, inputs: inputs)
            let grids = try roundToNearest(block: block, layer: layer, config: model, spec: spec)
            let (linears, report) = try tesseraq.run(fp: block, grids: grids, xq: inputs, yfp: targets, progress: progress)
            return (linears, report.merging(awqReport) { $1 })
        case .lwc:
            // The LWC stage counts as the first round of the block's progress.
            let (grids, lwcReport) = try LWCBlock(config: model, calibration: calibration, settings: options.lwc, layer: layer,
                                                  compute: options.computeDType, tokenCap: options.massiveTokenCap)
                .run(fp: block, spec: spec, xq: inputs, yfp: targets, rounds: 1 + options.thresholds.count, progress: progress)
            let (linears, report) = try tesseraq.run(fp: block, grids: grids, xq: inputs, yfp: targets, roundsBefore: 1,
                                                     progress: progress)
            return (linears, report.merging(lwcReport) { $1 })
        }
    }
}

/// Progressive adaptive rounding and dequantisation scale tuning of one block's seven linears
/// against the full-precision target.
struct TesseraQBlock {
    let config: LlamaConfig
    let options: TesseraQOptions
    let layer: Int
    /// The ranks the training is split over (under mpirun); a world of one trains the whole block.
    var world: any Collectives = Communicator.world

    /// Trains the block whose float weights are `fp` (after any AWQ transform) from the frozen
    /// `grids`, on inputs `xq` towards targets `yfp`. Returns the hard, exported layers. Progress
    /// numbers the rounds after `roundsBefore` (an LWC initialisation's).
    func run(fp: BlockWeights, grids: [QuantizedLinear], xq: ActivationCache, yfp: ActivationCache, roundsBefore: Int = 0,
             progress: QuantProgressHandler?) throws -> (linears: [QuantizedLinear], report: [String: Any]) {
        let shard = try BlockShard(config: config, spec: grids[0].spec, world: world)
        let local = try shard.block(fp)
        let fq = try LinearKind.allCases.map { kind in
            try FakeQuantLinear(weight: local[kind].p, grid: shard.grid(grids[kind.rawValue], kind), stateDType: options.stateDType,
                                seed: UInt64(layer * 16 + kind.rawValue))
        }
        if options.stateDType == .bf16 {
            // Lean state: the float32 weights are not read again (the trainable layers hold floor and
            // rounding variable), so they are dropped for the rest of the block rather than kept in bf16.
            for kind in LinearKind.allCases { fp[kind] = try FloatBuffer(count: 0); local[kind] = try FloatBuffer(count: 0) }
        }
        let trainer = try BlockTrainer(config: shard.config, calibration: options.calibration, layer: layer, block: local,
                                       linears: fq, compute: options.computeDType, tokenCap: options.massiveTokenCap,
                                       reduction: shard.reduction, kvSums: shard.kvSums)
        let t0 = Date()
        for (r, quantile) in options.thresholds.enumerated() {
            try shard.harden(fq, quantile: quantile)
            for l in fq { l.resetOptimizer() }
            var rng = SeededGenerator.derived(options.calibration.seed, layer, r)
            try trainer.run(steps: options.iters, rng: &rng, xq: xq, yfp: yfp, round: roundsBefore + r + 1,
                            rounds: roundsBefore + options.thresholds.count, progress: progress) { step in
                shard.reduceSharedGradients(fq)
                for l in fq {
                    l.step(step, lr: Float(options.lr), scaleLR: Float(options.scaleLR), scaleWD: Float(options.scaleWD))
                }
            }
        }
        let trainSeconds = Date().timeIntervalSince(t0)
        let lastLoss = trainer.lastLoss
        for l in fq { l.harden(quantile: 0, final: true) }
        let linears = shard.gather(fq.map { $0.export() })
        let changed = zip(linears, grids).reduce(0) { acc, p in acc + zip(p.0.codes, p.1.codes).filter { $0 != $1 }.count }
        let total = linears.reduce(0) { $0 + $1.codes.count }
        let (dstMin, dstMax) = shard.dstRange(fq)
        var report: [String: Any] = [
            "changed_from_nearest": Double(changed) / Double(total), "dst_min": Double(dstMin), "dst_max": Double(dstMax),
            "train_seconds": trainSeconds,
        ]
        // Absent when no step ran (iters 0): the report is JSON, which has no NaN.
        if !lastLoss.isNaN { report["last_step_loss"] = lastLoss }
        return (linears, report)
    }
}
