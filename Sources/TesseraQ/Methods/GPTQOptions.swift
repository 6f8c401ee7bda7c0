import Foundation

/// GPTQ's configuration keys (Frantar et al., 2022), with presets.
public struct GPTQOptions: Sendable, Equatable {
    public var calibration: CalibrationOptions
    /// Dampening: this share of the mean of diag(H) is added to H's diagonal ("percdamp").
    public var damp: Double
    /// Columns per lazy batch of the column loop.
    public var blockSize: Int
    /// Quantize columns in descending order of diag(H) and export the matching g_idx (desc_act).
    public var actOrder: Bool

    /// How much damp grows each time the Hessian is still not positive definite (GPTQModel's
    /// damp_auto_increment); the run fails once damp would reach 1.
    public static let dampIncrement = 0.0025

    /// The reference's calibration: 128 windows of 2048 tokens (chunks of 4 sequences per forward).
    public static let paper = GPTQOptions(
        calibration: CalibrationOptions(nSamples: 128, seqLen: 2048, batch: 4, seed: 42, cacheDType: .bf16),
        damp: 0.01, blockSize: 128, actOrder: false)
    /// A smaller budget for CPUs: 128 x 512 tokens.
    public static let fast = GPTQOptions(
        calibration: CalibrationOptions(nSamples: 128, seqLen: 512, batch: 4, seed: 42, cacheDType: .bf16, reportSamples: CalibrationOptions.fastReportSamples),
        damp: 0.01, blockSize: 128, actOrder: false)
    /// For tests on tiny models: 32 x 128 tokens.
    public static let ci = GPTQOptions(
        calibration: CalibrationOptions(nSamples: 32, seqLen: 128, batch: 8, seed: 42, cacheDType: .f32),
        damp: 0.01, blockSize: 128, actOrder: false)

    public static let presets = ["paper": paper, "fast": fast, "ci": ci]

    public static let keys = CalibrationOptions.keys + ["preset", "damp", "block_size", "act_order"]

    /// Reads the keys over the preset (default "paper"); every value is range-checked.
    public init(options o: [String: JSONValue]) throws {
        let r = KeyReader(o)
        let presetName = try r.string("preset", default: "paper")
        guard let preset = Self.presets[presetName] else {
            throw TQError.invalid("config key preset: must be one of paper, fast, ci (got \"\(presetName)\")")
        }
        self = preset
        calibration = try CalibrationOptions(r, defaults: preset.calibration)
        damp = try r.double("damp", default: damp)
        blockSize = try r.int("block_size", default: blockSize)
        actOrder = try r.bool("act_order", default: actOrder)
        guard damp >= 0, damp < 1 else { throw TQError.invalid("config key damp: must be in [0, 1) (got \(damp))") }
        guard blockSize >= 1 else { throw TQError.invalid("config key block_size: must be at least 1 (got \(blockSize))") }
    }

    init(calibration: CalibrationOptions, damp: Double, blockSize: Int, actOrder: Bool) {
        self.calibration = calibration; self.damp = damp; self.blockSize = blockSize; self.actOrder = actOrder
    }

    public var json: [String: Any] {
        calibration.json.merging(["damp": damp, "block_size": blockSize, "act_order": actOrder]) { $1 }
    }
}

extension QuantizeConfig {
    /// Whether the checkpoint's columns are grouped through g_idx (quantization_config.desc_act).
    var descAct: Bool { method == "gptq" && options["act_order"]?.bool == true }
}
