import Foundation

/// Method "lwc": OmniQuant's learnable weight clipping as a block method, exported as round to
/// nearest on the learned grids.
struct LWCMethod: BlockQuantizer {
    let options: LWCOptions
    var calibration: CalibrationOptions { options.calibration }
    var computeDType: ComputeDType { options.computeDType }
    var optionsJSON: [String: Any] { options.json }

    func quantize(layer: Int, model: LlamaConfig, block: BlockWeights, inputs: ActivationCache, targets: ActivationCache,
                  spec: QuantSpec, progress: QuantProgressHandler?) throws -> (linears: [QuantizedLinear], report: [String: Any]) {
        try LWCBlock(config: model, calibration: calibration, settings: options.settings, layer: layer, compute: options.computeDType,
                     tokenCap: options.massiveTokenCap)
            .run(fp: block, spec: spec, xq: inputs, yfp: targets, rounds: 1, progress: progress)
    }
}

/// Learnable weight clipping of one block's seven linears against the full-precision target.
struct LWCBlock {
    let config: LlamaConfig
    let calibration: CalibrationOptions
    let settings: LWCSettings
    let layer: Int
    let compute: ComputeDType
    /// `massive_token_cap` (BlockTrainer).
    let tokenCap: Double

    /// Trains the clip factors of the linears of `fp` on inputs `xq` towards targets `yfp`, and
    /// returns the learned grids (RTN codes on them). Progress reports the stage as round 1 of `rounds`.
    func run(fp: BlockWeights, spec: QuantSpec, xq: ActivationCache, yfp: ActivationCache, rounds: Int,
             progress: QuantProgressHandler?) throws -> (linears: [QuantizedLinear], report: [String: Any]) {
        let lwc = try LinearKind.allCases.map { kind in
            let (o, i) = kind.shape(config)
            return try LWCLinear(weight: fp[kind], out: o, inFeatures: i, spec: spec)
        }
        let trainer = try BlockTrainer(config: config, calibration: calibration, layer: layer, block: fp, linears: lwc,
                                       compute: compute, tokenCap: tokenCap)
        // A stream of its own: TesseraQ's rounds draw theirs with parts (layer, round index >= 0).
        var rng = SeededGenerator.derived(calibration.seed, layer, -1)
        try trainer.run(steps: settings.steps, rng: &rng, xq: xq, yfp: yfp, round: 1, rounds: rounds, progress: progress) { step in
            for l in lwc { l.step(step, lr: Float(settings.lr)) }
        }
        let ranges = lwc.map(\.clipRange)
        var report: [String: Any] = ["lwc_clip_min": Double(ranges.map(\.0).min()!), "lwc_clip_max": Double(ranges.map(\.1).max()!)]
        // Absent when no step ran: the report is JSON, which has no NaN.
        if !trainer.lastLoss.isNaN { report["lwc_last_step_loss"] = trainer.lastLoss }
        return (lwc.map { $0.grid() }, report)
    }
}
