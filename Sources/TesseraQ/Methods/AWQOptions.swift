import Foundation

/// The settings of AWQ's two searches (ALGORITHM.md section 4), shared by method "awq" and by
/// TesseraQ's `"init": "awq"` (which reads the same keys with the prefix `awq_`).
public struct AWQSettings: Sendable, Equatable {
    /// Scale ratios k / n_grid, k = 0 ..< n_grid; also the step 1 / n_grid of the clip factors.
    public var nGrid: Int = 20
    /// Tokens per calibration sequence of the clip search's subsample: every
    /// `max(1, floor(seq_len / clip_samples))`-th token of each sequence, as llmc's per-sample subsample.
    public var clipSamples: Int = 512
    /// Whole calibration sequences on which the scale search evaluates the attention group (causal
    /// context needs whole sequences): every `max(1, floor(n / scale_samples))`-th one (0: all).
    public var scaleSamples: Int = 8
    /// Tokens on which the scale search evaluates the per-token groups (v_o, gate_up, up_down):
    /// every `max(1, floor(tokens / scale_tokens))`-th token of the calibration set (0: all).
    public var scaleTokens: Int = 4096
    /// The largest shrink tried: clip factors 1, 1 - 1/n_grid, ..., down to 1 - max_shrink.
    public var maxShrink: Double = 0.45
    /// How the scale search walks the ratios: all of them (`grid`, llm-awq's), or coarse to fine (`refine`).
    public var search: AWQSearch = .grid
    /// Search and fold the scales.
    public var scale: Bool = true
    /// Search the clipping.
    public var clip: Bool = true
    /// Use only the first `samples` calibration sequences (0: all). Not a key of method "awq"
    /// (its n_samples is the knob); TesseraQ's `awq_samples` sets it for `"init": "awq"`.
    public var samples: Int = 0

    public init() {}

    /// The defaults but for the calibration sequences, the search walk and, if given, the scale
    /// search's evaluation set (TesseraQ's presets).
    init(samples: Int, search: AWQSearch = .grid, evaluation: (sequences: Int, tokens: Int)? = nil) {
        self.samples = samples; self.search = search
        if let evaluation { scaleSamples = evaluation.sequences; scaleTokens = evaluation.tokens }
    }

    public static let keys = ["n_grid", "clip_samples", "scale_samples", "scale_tokens", "max_shrink", "search", "scale", "clip"]

    /// Reads the keys over `defaults`, range-checked.
    init(_ r: KeyReader, defaults d: AWQSettings) throws {
        self = d  // keeps what is not a key (samples)
        nGrid = try r.int("n_grid", default: d.nGrid)
        clipSamples = try r.int("clip_samples", default: d.clipSamples)
        scaleSamples = try r.int("scale_samples", default: d.scaleSamples)
        scaleTokens = try r.int("scale_tokens", default: d.scaleTokens)
        maxShrink = try r.double("max_shrink", default: d.maxShrink)
        let searchName = try r.string("search", default: d.search.rawValue)
        guard let sr = AWQSearch(rawValue: searchName) else {
            throw TQError.invalid("config key \(r.name("search")): must be \"grid\" or \"refine\" (got \"\(searchName)\")")
        }
        search = sr
        scale = try r.bool("scale", default: d.scale)
        clip = try r.bool("clip", default: d.clip)
        guard nGrid >= 1, nGrid <= 1000 else { throw TQError.invalid("config key \(r.name("n_grid")): must be between 1 and 1000 (got \(nGrid))") }
        guard clipSamples >= 1 else { throw TQError.invalid("config key \(r.name("clip_samples")): must be at least 1 (got \(clipSamples))") }
        guard scaleSamples >= 0 else { throw TQError.invalid("config key \(r.name("scale_samples")): must be >= 0 (0: all; got \(scaleSamples))") }
        guard scaleTokens >= 0 else { throw TQError.invalid("config key \(r.name("scale_tokens")): must be >= 0 (0: all; got \(scaleTokens))") }
        guard maxShrink >= 0, maxShrink < 1 else { throw TQError.invalid("config key \(r.name("max_shrink")): must be in [0, 1) (got \(maxShrink))") }
    }

    /// The scale search's ratios: 0, 1/n_grid, ..., (n_grid - 1)/n_grid.
    public var ratios: [Float] { (0..<nGrid).map { Float($0) / Float(nGrid) } }

    /// The clip factors: 1 - k/n_grid for k = 0 ... floor(max_shrink * n_grid) (1.0 ... 0.55 by default).
    public var shrinks: [Float] {
        let n = Int((maxShrink * Double(nGrid) + 1e-9).rounded(.down))
        return (0...n).map { 1 - Float($0) / Float(nGrid) }
    }

    public var json: [String: Any] {
        ["n_grid": nGrid, "clip_samples": clipSamples, "scale_samples": scaleSamples, "scale_tokens": scaleTokens,
         "max_shrink": maxShrink, "search": search.rawValue, "scale": scale, "clip": clip]
    }
}

/// The scale search's walk over the ratios k / n_grid.
public enum AWQSearch: String, Sendable {
    /// Every ratio, as llm-awq.
    case grid
    /// Coarse to fine: every `step`-th ratio (the largest power of two leaving at least five), then
    /// the neighbours at half the distance around the best so far, down to distance 1: 9 of 20
    /// candidates by default, and the grid's choice whenever the loss is unimodal in the ratio.
    case refine

    /// The index and value of the least finite loss (the lowest index on ties) among those this walk
    /// evaluates over `count` ratios; nil when none is finite. `loss` is called once per index visited.
    func best(count n: Int, loss: (Int) throws -> Double) rethrows -> (index: Int, loss: Double)? {
        var seen = [Double?](repeating: nil, count: n), b: Int? = nil
        func visit(_ k: Int) throws {
            guard k >= 0, k < n, seen[k] == nil else { return }
            let l = try loss(k)
            seen[k] = l
            guard l.isFinite else { return }
            if let c = b, let lc = seen[c], !(l < lc || (l == lc && k < c)) { return }
            b = k
        }
        var step = 1
        if self == .refine { while step * 10 <= n { step *= 2 } }
        for k in stride(from: 0, to: n, by: step) { try visit(k) }
        while step > 1, let c = b {
            step /= 2
            try visit(c - step)
            try visit(c + step)
        }
        return b.map { ($0, seen[$0]!) }
    }
}

/// Method "awq": calibration keys, a preset, and the search settings.
public struct AWQOptions: Sendable, Equatable {
    public var calibration: CalibrationOptions
    public var settings: AWQSettings
    /// The scale search's precision (key compute_dtype, as TesseraQ's).
    public var computeDType: ComputeDType = .f32
    /// `massive_token_cap` of the scale search's loss (BlockTrainer.capTokenWeights); 0, llm-awq's plain MSE, by default.
    public var massiveTokenCap: Double = 0

    /// llm-awq's calibration: 128 windows of 512 tokens.
    public static let paper = AWQOptions(
        calibration: CalibrationOptions(nSamples: 128, seqLen: 512, batch: 4, seed: 42, cacheDType: .bf16), settings: AWQSettings())
    /// The calibration windows of TesseraQ's "fast" preset (same samples, length and seed).
    public static let fast = AWQOptions(
        calibration: CalibrationOptions(nSamples: 128, seqLen: 256, batch: 4, seed: 42, cacheDType: .bf16, reportSamples: CalibrationOptions.fastReportSamples), settings: AWQSettings())
    /// For tests on tiny models: the calibration of TesseraQ's "ci" preset.
    public static let ci = AWQOptions(
        calibration: CalibrationOptions(nSamples: 32, seqLen: 128, batch: 4, seed: 42, cacheDType: .f32), settings: AWQSettings())

    public static let presets = ["paper": paper, "fast": fast, "ci": ci]

    public static let keys = CalibrationOptions.keys + ["preset", "compute_dtype", "massive_token_cap"] + AWQSettings.keys

    init(calibration: CalibrationOptions, settings: AWQSettings) {
        self.calibration = calibration
        self.settings = settings
    }

    /// Reads the keys over the preset (default "paper"); every value is range-checked.
    public init(options o: [String: JSONValue]) throws {
        let r = KeyReader(o)
        let presetName = try r.string("preset", default: "paper")
        guard let preset = Self.presets[presetName] else {
            throw TQError.invalid("config key preset: must be one of paper, fast, ci (got \"\(presetName)\")")
        }
        calibration = try CalibrationOptions(r, defaults: preset.calibration)
        settings = try AWQSettings(r, defaults: preset.settings)
        computeDType = try ComputeDType(r, default: computeDType)
        massiveTokenCap = try BlockTrainer.readTokenCap(r, default: massiveTokenCap)
    }

    public var json: [String: Any] {
        calibration.json.merging(settings.json) { $1 }
            .merging(["compute_dtype": computeDType.rawValue, "massive_token_cap": massiveTokenCap]) { $1 }
    }
}
