import Foundation

/// TesseraQ's configuration keys (ALGORITHM.md section 3), with presets.
public struct TesseraQOptions: Sendable, Equatable {
    public var calibration: CalibrationOptions
    /// Optimisation steps per round.
    public var iters: Int
    public var thresholds: [Double]
    public var lr: Double
    public var scaleLR: Double
    public var scaleWD: Double
    /// Where the grids come from (the presets': AWQ).
    public var initMethod: InitMethod
    /// AWQ's searches under `"init": "awq"`: method awq's keys prefixed `awq_` (`awq_scale_tokens`, ...),
    /// and `awq_samples`, the calibration sequences they use (0: all n_samples; the presets cap it).
    public var awq: AWQSettings
    /// The block GEMMs' precision in training (`compute_dtype`): the rounding and DST variables,
    /// the loss and Adam stay float32 either way.
    public var computeDType: ComputeDType = .f32
    /// The LWC training budget under `"init": "lwc"` (keys lwc_steps, lwc_lr).
    public var lwc: LWCSettings
    /// Memory-lean training state (`state_dtype` bf16): Adam moments of the rounding and DST
    /// variables in bfloat16, and the block's float32 weights dropped once training holds them.
    public var stateDType: StateDType = .f32
    /// `massive_token_cap`: a token whose full-precision output norm exceeds this multiple of the
    /// batch's median token norm counts in the loss as a token of that norm (BlockTrainer); 0: the
    /// paper's plain MSE (the `paper` preset's; the CPU presets cap at 8).
    public var massiveTokenCap: Double = 0

    public static let defaultThresholds = [0.8, 0.65, 0.5, 0.43, 0.38, 0.34, 0.3, 0.27, 0.24, 0.21, 0.18, 0.15, 0.12, 0.10,
                                           0.08, 0.06, 0.04, 0.02, 0.01, 0.005]
    public static let shortThresholds = [0.75, 0.5, 0.375, 0.25, 0.125, 0.09, 0.06, 0.04, 0.02, 0.005]

    /// The paper's configuration: 512 x 2048 samples, batch 4, 20 rounds x 250 steps, lr 1e-3;
    /// AWQ initialisation on 32 x 2048 tokens (llm-awq's own budget: 128 x 512); LWC 250 steps at lr 1e-2.
    public static let paper = TesseraQOptions(
        calibration: CalibrationOptions(nSamples: 512, seqLen: 2048, batch: 4, seed: 42, cacheDType: .bf16),
        iters: 250, thresholds: defaultThresholds, lr: 1e-3, scaleLR: 1e-3, scaleWD: 1e-4, initMethod: .awq,
        awq: AWQSettings(samples: 32), lwc: LWCSettings(steps: 250, lr: 1e-2))
    /// A small budget for CPUs: 64 x 256 samples, batch 2, 10 rounds x 9 steps, learning rates
    /// scaled up as ALGORITHM.md advises for short schedules (lr 2e-2 and scale_lr 1e-2: Adam moves
    /// a variable about lr per step, and at 1e-2 / 5e-3 nine steps per round stopped short, 8.5
    /// perplexity points worse on SmolLM2 W2 over three seeds); AWQ initialisation on 32 x 256 tokens
    /// with the coarse-to-fine scale search (9 of 20 ratios) evaluated on 4 sequences and 2048 tokens
    /// (the training after it adapts rounding and scales anyway: the halved search's time buys the
    /// ninth step per round); under `"init": "lwc"` 20 LWC steps at lr 0.1 (OmniQuant's 1e-2 barely
    /// moves the clip in 20 steps).
    public static let fast = TesseraQOptions(
        calibration: CalibrationOptions(nSamples: 64, seqLen: 256, batch: 2, seed: 42, cacheDType: .bf16, reportSamples: CalibrationOptions.fastReportSamples),
        iters: 9, thresholds: shortThresholds, lr: 2e-2, scaleLR: 1e-2, scaleWD: 1e-4, initMethod: .awq,
        awq: AWQSettings(samples: 32, search: .refine, evaluation: (sequences: 4, tokens: 2048)), lwc: LWCSettings(steps: 20, lr: 0.1),
        massiveTokenCap: 8)
    /// For tests on tiny models: 32 x 128 samples, batch 4, 10 rounds x 20 steps; the coarse-to-fine AWQ search.
    public static let ci = TesseraQOptions(
        calibration: CalibrationOptions(nSamples: 32, seqLen: 128, batch: 4, seed: 42, cacheDType: .f32),
        iters: 20, thresholds: shortThresholds, lr: 1e-2, scaleLR: 5e-3, scaleWD: 1e-4, initMethod: .awq,
        awq: AWQSettings(samples: 0, search: .refine), lwc: LWCSettings(steps: 20, lr: 0.1), massiveTokenCap: 8)

    public static let presets = ["paper": paper, "fast": fast, "ci": ci]

    public static let keys = CalibrationOptions.keys + ["preset", "iters", "thresholds", "lr", "scale_lr", "scale_wd", "init", "awq_samples",
                                                       "compute_dtype", "state_dtype", "massive_token_cap"] + LWCSettings.keys + AWQSettings.keys.map { "awq_" + $0 }

    /// Reads the keys over the preset (default "fast"); every value is range-checked.
    public init(options o: [String: JSONValue]) throws {
        let r = KeyReader(o)
        let presetName = try r.string("preset", default: "fast")
        guard let preset = Self.presets[presetName] else {
            throw TQError.invalid("config key preset: must be one of paper, fast, ci (got \"\(presetName)\")")
        }
        self = preset
        calibration = try CalibrationOptions(r, defaults: preset.calibration)
        iters = try r.int("iters", default: iters)
        lr = try r.double("lr", default: lr)
        scaleLR = try r.double("scale_lr", default: scaleLR)
        scaleWD = try r.double("scale_wd", default: scaleWD)
        let initName = try r.string("init", default: initMethod.rawValue)
        awq = try AWQSettings(KeyReader(o, prefix: "awq_"), defaults: awq)
        awq.samples = try r.int("awq_samples", default: awq.samples)
        computeDType = try ComputeDType(r, default: computeDType)
        lwc = try LWCSettings(r, defaults: lwc)
        let state = try r.string("state_dtype", default: stateDType.rawValue)
        guard let sd = StateDType(rawValue: state) else {
            throw TQError.invalid("config key state_dtype: must be \"f32\" or \"bf16\" (got \"\(state)\")")
        }
        stateDType = sd
        massiveTokenCap = try BlockTrainer.readTokenCap(r, default: massiveTokenCap)
        guard iters >= 0 else { throw TQError.invalid("config key iters: must be >= 0") }
        guard lr >= 0, scaleLR >= 0, scaleWD >= 0 else { throw TQError.invalid("config keys lr, scale_lr, scale_wd: must be >= 0") }
        guard awq.samples >= 0 else { throw TQError.invalid("config key awq_samples: must be >= 0 (0: all n_samples)") }
        guard let i = InitMethod(rawValue: initName) else {
            throw TQError.invalid("config key init: must be \"rtn\", \"awq\" or \"lwc\" (got \"\(initName)\")")
        }
        initMethod = i
        if let t = o["thresholds"] {
            switch t {
            case .string("default"): thresholds = Self.defaultThresholds
            case .string("short"): thresholds = Self.shortThresholds
            case .array(let a):
                let values = a.compactMap(\.double)
                guard values.count == a.count, !values.isEmpty, values.allSatisfy({ $0 >= 0 && $0 <= 1 }) else {
                    throw TQError.invalid("config key thresholds: must be \"default\", \"short\" or a non-empty list of numbers in [0, 1]")
                }
                thresholds = values
            default:
                throw TQError.invalid("config key thresholds: must be \"default\", \"short\" or a list of numbers")
            }
        }
    }

    init(calibration: CalibrationOptions, iters: Int, thresholds: [Double], lr: Double, scaleLR: Double, scaleWD: Double,
         initMethod: InitMethod, awq: AWQSettings = AWQSettings(), lwc: LWCSettings, massiveTokenCap: Double = 0) {
        self.calibration = calibration; self.iters = iters; self.thresholds = thresholds
        self.lr = lr; self.scaleLR = scaleLR; self.scaleWD = scaleWD; self.initMethod = initMethod
        self.awq = awq; self.lwc = lwc
        self.massiveTokenCap = massiveTokenCap
    }

    public var json: [String: Any] {
        calibration.json.merging(["iters": iters, "thresholds": thresholds, "lr": lr, "scale_lr": scaleLR,
                                  "scale_wd": scaleWD, "init": initMethod.rawValue, "awq_samples": awq.samples,
                                  "compute_dtype": computeDType.rawValue, "state_dtype": stateDType.rawValue,
                                  "massive_token_cap": massiveTokenCap])
        { $1 }.merging(lwc.json) { $1 }.merging(awq.json.map { ("awq_" + $0.key, $0.value) }) { $1 }
    }
}

/// Where TesseraQ's grids come from (config key `init`).
public enum InitMethod: String, Sendable {
    /// Round to nearest on the min/max grid.
    case rtn
    /// AWQ's scales (folded into the block) and clipping, then RTN on the result.
    case awq
    /// OmniQuant's learnable weight clipping trained on the block (lwc_steps, lwc_lr), then RTN on its grid.
    case lwc
}

/// How calibration activations are kept between blocks.
public enum CacheDType: String, Sendable {
    case f32, bf16, f16
    var bytes: Int { self == .f32 ? 4 : 2 }
}
