import Foundation

/// How calibration data is drawn and kept: shared by every calibrated method.
public struct CalibrationOptions: Sendable, Equatable {
    public var nSamples: Int
    public var seqLen: Int
    public var batch: Int
    public var seed: UInt64
    public var cacheDType: CacheDType
    /// How the windows are taken from the calibration tokens (`calib_windows`).
    public var windows: CalibrationWindowOrder = .random
    /// When the two activation caches exceed this many MB, they live in scratch files instead of
    /// memory (`cache_budget_mb`; 0: always in memory). Results do not depend on it.
    public var cacheBudgetMB: Int = 0
    /// Where the scratch files go (`scratch_dir`); nil: the run's staging directory.
    public var scratchDir: String?
    /// The calibration sequences each block's `rtn_loss` and `final_loss` are measured on: the first
    /// `report_samples` (0: all). Reports only: the RTN baseline's forward exists for `rtn_loss`
    /// alone, so the fast presets measure both losses on 16 sequences rather than all.
    public var reportSamples: Int = 0
    /// `report_samples` of the methods' `fast` presets.
    static let fastReportSamples = 16
    /// The precision of the run's block passes (`pass_dtype`: the full-precision targets, the RTN
    /// diagnostic, the advance of both trajectories); nil: the method's `compute_dtype`. At bf16 the
    /// passes round float32 weights and activations to bfloat16, which on stories260K at W2 cost 4.5%
    /// of perplexity over five seeds (README); f32 keeps targets and inputs float32 for 0.7-0.9 s
    /// more per SmolLM2 block under `fast` (10-13% of the run; SmolLM2's weights are bf16 already).
    public var passDType: ComputeDType?

    public static let keys = ["n_samples", "seq_len", "batch", "seed", "cache_dtype", "calib_tokens", "calib_windows",
                              "cache_budget_mb", "scratch_dir", "report_samples", "pass_dtype"]

    public init(nSamples: Int, seqLen: Int, batch: Int, seed: UInt64, cacheDType: CacheDType, reportSamples: Int = 0) {
        self.nSamples = nSamples; self.seqLen = seqLen; self.batch = batch; self.seed = seed; self.cacheDType = cacheDType
        self.reportSamples = reportSamples
    }

    /// Reads the keys over `defaults`, range-checked.
    init(_ r: KeyReader, defaults d: CalibrationOptions) throws {
        nSamples = try r.int("n_samples", default: d.nSamples)
        seqLen = try r.int("seq_len", default: d.seqLen)
        batch = try r.int("batch", default: d.batch)
        let seedValue = try r.int("seed", default: Int(d.seed))
        let cache = try r.string("cache_dtype", default: d.cacheDType.rawValue)
        let order = try r.string("calib_windows", default: d.windows.rawValue)
        guard nSamples >= 1 else { throw TQError.invalid("config key n_samples: must be at least 1") }
        guard seqLen >= 2 else { throw TQError.invalid("config key seq_len: must be at least 2") }
        guard batch >= 1, batch <= nSamples else { throw TQError.invalid("config key batch: must be between 1 and n_samples (\(nSamples))") }
        guard seedValue >= 0 else { throw TQError.invalid("config key seed: must be >= 0") }
        guard let c = CacheDType(rawValue: cache) else { throw TQError.invalid("config key cache_dtype: must be f32, bf16 or f16 (got \"\(cache)\")") }
        guard let w = CalibrationWindowOrder(rawValue: order) else {
            throw TQError.invalid("config key calib_windows: must be \"random\" or \"sequential\" (got \"\(order)\")")
        }
        seed = UInt64(seedValue)
        cacheDType = c
        windows = w
        cacheBudgetMB = try r.int("cache_budget_mb", default: d.cacheBudgetMB)
        guard cacheBudgetMB >= 0 else { throw TQError.invalid("config key cache_budget_mb: must be >= 0 (0: no budget)") }
        reportSamples = try r.int("report_samples", default: d.reportSamples)
        guard reportSamples >= 0 else { throw TQError.invalid("config key report_samples: must be >= 0 (0: all; got \(reportSamples))") }
        passDType = d.passDType
        if r.obj[r.name("pass_dtype")] != nil { passDType = try ComputeDType(r, key: "pass_dtype", default: .f32) }
        if r.obj[r.name("scratch_dir")] != nil {
            let dir = try r.string("scratch_dir", default: "")
            guard !dir.isEmpty else { throw TQError.invalid("config key scratch_dir: must be a directory path") }
            scratchDir = dir
        }
    }

    /// Whether caches of `bytes` in all go to scratch files.
    func cachesOutOfCore(bytes: Int) -> Bool { cacheBudgetMB > 0 && bytes > cacheBudgetMB * 1_000_000 }

    /// The options as recorded; `pass_dtype` only when set, so that unset it leaves a resume's
    /// fingerprint as it was before the key existed.
    public var json: [String: Any] {
        var j: [String: Any] = ["n_samples": nSamples, "seq_len": seqLen, "batch": batch, "seed": Int(seed),
                                "cache_dtype": cacheDType.rawValue, "calib_windows": windows.rawValue, "report_samples": reportSamples]
        if let passDType { j["pass_dtype"] = passDType.rawValue }
        return j
    }
}

/// A calibrated method, applied block by block on the quantized trajectory.
protocol BlockQuantizer {
    var calibration: CalibrationOptions { get }
    /// The precision of the block's GEMMs and attention where it trains or searches (compute_dtype).
    var computeDType: ComputeDType { get }
    /// The resolved options, for the run report and the resume fingerprint.
    var optionsJSON: [String: Any] { get }
    /// Quantizes block `layer`, whose float weights are `block`, from its inputs on the quantized
    /// trajectory towards the full-precision outputs `targets`. A method that transforms the
    /// block exactly in full precision (AWQ's scales) updates `block` in place: its norms and
    /// biases (`BlockWeights.floatTensors`) are then what the checkpoint stores.
    func quantize(layer: Int, model: LlamaConfig, block: BlockWeights, inputs: ActivationCache, targets: ActivationCache,
                  spec: QuantSpec, progress: QuantProgressHandler?) throws -> (linears: [QuantizedLinear], report: [String: Any])
}

extension BlockQuantizer {
    /// The precision of the run's block passes: `pass_dtype`, else the method's `compute_dtype`.
    var passDType: ComputeDType { calibration.passDType ?? computeDType }
}

/// The calibrated method a configuration names.
func makeBlockQuantizer(_ config: QuantizeConfig) throws -> BlockQuantizer {
    switch config.method {
    case "tesseraq": return TesseraQMethod(options: try TesseraQOptions(options: config.options))
    case "awq": return AWQMethod(options: try AWQOptions(options: config.options))
    case "gptq": return GPTQMethod(options: try GPTQOptions(options: config.options))
    case "lwc": return LWCMethod(options: try LWCOptions(options: config.options))
    default: throw TQError.invalid("config key method: \(config.method) is not a calibrated method")
    }
}
