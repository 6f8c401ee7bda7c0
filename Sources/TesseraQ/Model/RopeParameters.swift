/// RoPE settings from config.json, in either of the two forms checkpoints carry them:
/// transformers 4.x writes top-level `rope_theta` and `rope_scaling`; transformers 5.x writes one
/// `rope_parameters` object (`rope_theta`, `rope_type` and the scaling fields). When both forms are
/// present they must agree: silently preferring one would evaluate a different model.
struct RopeParameters: Equatable {
    /// transformers' default when a config names no theta at all.
    static let defaultTheta = 10000.0

    var theta: Double
    var scaling: LlamaConfig.RopeScaling
    /// The sliding-window layers' own RoPE (Gemma 3), else nil.
    var sliding: LlamaConfig.Rope?

    /// `perLayerType` (Gemma 3): full-attention layers use `rope_theta` (default 1e6) and
    /// `rope_scaling`, sliding-window layers `rope_local_base_freq` (default 1e4) unscaled;
    /// transformers 5 writes them as `rope_parameters.full_attention` and `.sliding_attention`.
    init(_ f: ConfigFields, perLayerType: Bool = false) throws {
        try Self.refusePartialRotary(f)
        let p = try f.object("rope_parameters")
        let nested = ["full_attention", "sliding_attention"].first { p?.has($0) == true }
        if perLayerType {
            if p != nil, nested == nil {
                throw TQError.format("\(f.path): rope_parameters must hold full_attention and sliding_attention parameters")
            }
            let full = try Self.resolve(f, try p?.object("full_attention"), thetaKey: "rope_theta", defaultTheta: 1_000_000,
                                        scalingKey: "rope_scaling")
            sliding = try Self.resolve(f, try p?.object("sliding_attention"), thetaKey: "rope_local_base_freq",
                                       defaultTheta: Self.defaultTheta, scalingKey: nil)
            (theta, scaling) = (full.theta, full.scaling)
            return
        }
        if let p, let nested {
            throw TQError.unsupported("\(f.path): \(p.name(nested)): RoPE parameters per layer type are not supported")
        }
        let rope = try Self.resolve(f, p, thetaKey: "rope_theta", defaultTheta: Self.defaultTheta, scalingKey: "rope_scaling")
        (theta, scaling, sliding) = (rope.theta, rope.scaling, nil)
    }

    /// One RoPE from its top-level (4.x) fields and its `rope_parameters` object (5.x), which must agree.
    private static func resolve(_ f: ConfigFields, _ p: ConfigFields?, thetaKey thetaKey: String, defaultTheta: Double,
                                scalingKey: String?) throws -> LlamaConfig.Rope {
        let legacyTheta = f.has(thetaKey) ? try f.number(thetaKey) : nil
        let legacyScaling = try scalingKey.flatMap { try f.object($0) }.map(Self.scaling)
        guard let p else { return LlamaConfig.Rope(theta: legacyTheta ?? defaultTheta, scaling: legacyScaling ?? .none) }
        try Self.refusePartialRotary(p)
        let rope = LlamaConfig.Rope(theta: try p.number("rope_theta", default: legacyTheta ?? defaultTheta), scaling: try Self.scaling(p))
        if let legacyTheta, legacyTheta != rope.theta {
            throw TQError.format("\(f.path): \(thetaKey) \(legacyTheta) disagrees with \(p.name("rope_theta")) \(rope.theta)")
        }
        if let scalingKey, let legacyScaling, legacyScaling != rope.scaling {
            throw TQError.format("\(f.path): \(scalingKey) disagrees with \(p.scope.dropLast())")
        }
        return rope
    }

    /// Only part of each head rotated (Phi, StableLM): not implemented.
    private static func refusePartialRotary(_ f: ConfigFields) throws {
        try f.refuse("partial_rotary_factor", unless: .double(1), because: "RoPE on every dimension of the head only")
    }

    /// The scaling named by `rope_type` (or the older `type`). Every field a type needs is
    /// required, as in transformers (which fails on a missing one): no guessed defaults.
    private static func scaling(_ s: ConfigFields) throws -> LlamaConfig.RopeScaling {
        let typeKey = s.has("rope_type") ? "rope_type" : "type"
        let type = try s.string(typeKey, default: "default")
        switch type {
        case "default":
            return .none
        case "linear":
            return .linear(factor: try positive(s, "factor"))
        case "llama3":
            let low = try positive(s, "low_freq_factor"), high = try positive(s, "high_freq_factor")
            guard high > low else {
                throw TQError.format("\(s.path): \(s.name("high_freq_factor")) \(high) must exceed \(s.name("low_freq_factor")) \(low)")
            }
            return .llama3(factor: try positive(s, "factor"), lowFreqFactor: low, highFreqFactor: high,
                           originalMaxPositions: try s.positiveInt("original_max_position_embeddings"))
        default:
            throw TQError.unsupported("\(s.path): \(s.name(typeKey)) \"\(type)\" is not supported (default, linear, llama3)")
        }
    }

    private static func positive(_ s: ConfigFields, _ key: String) throws -> Double {
        let v = try s.number(key)
        guard v > 0 else { throw TQError.format("\(s.path): \(s.name(key)) must be positive") }
        return v
    }
}
