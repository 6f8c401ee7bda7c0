/// RoPE settings from config.json, in either of the two forms checkpoints carry them:
/// transformers 4.x writes top-level `rope_theta` and `rope_scaling`; transformers 5.x writes one
/// `rope_parameters` object (`rope_theta`, `rope_type` and the scaling fields). When both forms are
/// present they must agree: silently preferring one would evaluate a different model.
struct RopeParameters: Equatable {
    /// transformers' default when a config names no theta at all.
    static let defaultTheta = 10000.0

    var theta: Double
    var scaling: LlamaConfig.RopeScaling

    init(_ f: ConfigFields) throws {
        let legacyTheta = f.has("rope_theta") ? try f.number("rope_theta") : nil
        let legacyScaling = try f.object("rope_scaling").map(Self.scaling)
        try Self.refusePartialRotary(f)
        guard let p = try f.object("rope_parameters") else {
            theta = legacyTheta ?? Self.defaultTheta
            scaling = legacyScaling ?? .none
            return
        }
        // Gemma 3 style: one parameter set per attention layer type.
        if let nested = ["full_attention", "sliding_attention"].first(where: p.has) {
            throw TQError.unsupported("\(f.path): \(p.name(nested)): RoPE parameters per layer type are not supported")
        }
        try Self.refusePartialRotary(p)
        theta = try p.number("rope_theta", default: legacyTheta ?? Self.defaultTheta)
        scaling = try Self.scaling(p)
        if let legacyTheta, legacyTheta != theta {
            throw TQError.format("\(f.path): rope_theta \(legacyTheta) disagrees with rope_parameters.rope_theta \(theta)")
        }
        if let legacyScaling, legacyScaling != scaling {
            throw TQError.format("\(f.path): rope_scaling disagrees with rope_parameters")
        }
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
