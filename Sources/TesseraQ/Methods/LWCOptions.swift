import Foundation

/// The training budget of learnable weight clipping, shared by method "lwc" and by TesseraQ's
/// `"init": "lwc"`: its keys are `lwc_steps` and `lwc_lr` in both.
public struct LWCSettings: Sendable, Equatable {
    /// Adam steps per block (one batch each).
    public var steps: Int
    /// Learning rate of the clip factors gamma, beta (OmniQuant: 1e-2 over thousands of steps;
    /// short schedules need more).
    public var lr: Double

    public init(steps: Int, lr: Double) {
        self.steps = steps
        self.lr = lr
    }

    public static let keys = ["lwc_steps", "lwc_lr"]

    /// Reads the keys over `defaults`, range-checked.
    init(_ r: KeyReader, defaults d: LWCSettings) throws {
        steps = try r.int("lwc_steps", default: d.steps)
        lr = try r.double("lwc_lr", default: d.lr)
        guard steps >= 0, steps <= 1_000_000 else { throw TQError.invalid("config key lwc_steps: must be between 0 and 1000000 (got \(steps))") }
        guard lr >= 0, lr <= 10 else { throw TQError.invalid("config key lwc_lr: must be between 0 and 10 (got \(lr))") }
    }

    public var json: [String: Any] { ["lwc_steps": steps, "lwc_lr": lr] }
}

/// Method "lwc": OmniQuant's learnable weight clipping alone (weight-only), exported as round to
/// nearest on the learned grid. Calibration keys, a preset, and the training budget.
public struct LWCOptions: Sendable, Equatable {
    public var calibration: CalibrationOptions
    public var settings: LWCSettings
    /// The block GEMMs' precision in training (`compute_dtype`, as TesseraQ's).
    public var computeDType: ComputeDType = .f32
    /// `massive_token_cap`, as TesseraQ's (the `paper` preset 0, the others 8).
    public var massiveTokenCap: Double = 0

    /// OmniQuant's weight-only recipe: 128 windows of 2048 tokens, batch 1, 20 epochs (2560 steps), lr 1e-2.
    public static let paper = LWCOptions(
        calibration: CalibrationOptions(nSamples: 128, seqLen: 2048, batch: 1, seed: 42, cacheDType: .bf16),
        settings: LWCSettings(steps: 2560, lr: 1e-2))
    /// The calibration of TesseraQ's "fast" preset and a short schedule with a larger learning rate.
    public static let fast = LWCOptions(
        calibration: CalibrationOptions(nSamples: 64, seqLen: 256, batch: 2, seed: 42, cacheDType: .bf16, reportSamples: CalibrationOptions.fastReportSamples),
        settings: LWCSettings(steps: 100, lr: 0.1), massiveTokenCap: 8)
    /// For tests on tiny models: the calibration of TesseraQ's "ci" preset.
    public static let ci = LWCOptions(
        calibration: CalibrationOptions(nSamples: 32, seqLen: 128, batch: 4, seed: 42, cacheDType: .f32),
        settings: LWCSettings(steps: 50, lr: 0.1), massiveTokenCap: 8)

    public static let presets = ["paper": paper, "fast": fast, "ci": ci]

    public static let keys = CalibrationOptions.keys + ["preset", "compute_dtype", "massive_token_cap"] + LWCSettings.keys

    init(calibration: CalibrationOptions, settings: LWCSettings, massiveTokenCap: Double = 0) {
        self.calibration = calibration
        self.settings = settings
        self.massiveTokenCap = massiveTokenCap
    }

    /// Reads the keys over the preset (default "fast"); every value is range-checked.
    public init(options o: [String: JSONValue]) throws {
        let r = KeyReader(o)
        let presetName = try r.string("preset", default: "fast")
        guard let preset = Self.presets[presetName] else {
            throw TQError.invalid("config key preset: must be one of paper, fast, ci (got \"\(presetName)\")")
        }
        calibration = try CalibrationOptions(r, defaults: preset.calibration)
        settings = try LWCSettings(r, defaults: preset.settings)
        computeDType = try ComputeDType(r, default: computeDType)
        massiveTokenCap = try BlockTrainer.readTokenCap(r, default: preset.massiveTokenCap)
    }

    public var json: [String: Any] {
        calibration.json.merging(settings.json) { $1 }.merging(["compute_dtype": computeDType.rawValue, "massive_token_cap": massiveTokenCap]) { $1 }
    }
}
