import Foundation

/// The architecture hyper-parameters of a LLaMA-family model, from config.json.
public struct LlamaConfig: Sendable, Equatable {
    public var modelType: String
    public var hidden: Int
    public var intermediate: Int
    public var layers: Int
    public var heads: Int
    public var kvHeads: Int
    public var headDim: Int
    public var vocab: Int
    public var maxPositions: Int
    public var rmsEps: Float
    public var ropeTheta: Double
    public var ropeScaling: RopeScaling
    public var tiedEmbeddings: Bool
    public var qkvBias: Bool
    public var torchDtype: String

    public enum RopeScaling: Sendable, Equatable {
        case none
        case linear(factor: Double)
        case llama3(factor: Double, lowFreqFactor: Double, highFreqFactor: Double, originalMaxPositions: Int)
    }

    static let supportedArchitectures = ["LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM"]

    /// Reads and validates `dir/config.json`.
    public init(directory: String) throws {
        let path = directory + "/config.json"
        try self.init(json: try JSONValue.parseFile(path), path: path)
    }

    public init(json: JSONValue, path: String) throws {
        guard json.object != nil else { throw TQError.format("\(path): not a JSON object") }
        func int(_ key: String, default def: Int? = nil) throws -> Int {
            guard let v = json[key], !v.isNull else {
                if let def { return def }
                throw TQError.format("\(path): missing \(key)")
            }
            guard let i = v.int, i > 0 else { throw TQError.format("\(path): \(key) must be a positive integer") }
            // Bounded so products of dimensions (heads * head_dim, ...) cannot overflow Int.
            guard i <= Int(Int32.max) else { throw TQError.format("\(path): \(key) \(i) is too large") }
            return i
        }
        if let archs = json["architectures"]?.array {
            let names = archs.compactMap(\.string)
            guard names.contains(where: Self.supportedArchitectures.contains) else {
                throw TQError.unsupported("\(path): unsupported architecture \(names.joined(separator: ", ")); supported: \(Self.supportedArchitectures.joined(separator: ", "))")
            }
        }
        modelType = json["model_type"]?.string ?? "llama"
        guard ["llama", "qwen2", "mistral"].contains(modelType) else {
            throw TQError.unsupported("\(path): unsupported model_type \(modelType)")
        }
        if let act = json["hidden_act"]?.string, act != "silu" {
            throw TQError.unsupported("\(path): unsupported hidden_act \(act) (only silu)")
        }
        hidden = try int("hidden_size")
        intermediate = try int("intermediate_size")
        layers = try int("num_hidden_layers")
        heads = try int("num_attention_heads")
        kvHeads = try int("num_key_value_heads", default: heads)
        headDim = try int("head_dim", default: hidden / heads)
        vocab = try int("vocab_size")
        maxPositions = try int("max_position_embeddings", default: 2048)
        guard heads % kvHeads == 0 else { throw TQError.format("\(path): num_attention_heads \(heads) is not a multiple of num_key_value_heads \(kvHeads)") }
        guard headDim > 0, headDim % 2 == 0 else { throw TQError.format("\(path): head_dim \(headDim) must be positive and even for RoPE") }
        rmsEps = Float(json["rms_norm_eps"]?.double ?? 1e-6)
        ropeTheta = json["rope_theta"]?.double ?? 10000
        tiedEmbeddings = json["tie_word_embeddings"]?.bool ?? false
        qkvBias = json["attention_bias"]?.bool ?? (modelType == "qwen2")
        if let mlpBias = json["mlp_bias"]?.bool, mlpBias {
            throw TQError.unsupported("\(path): mlp_bias is not supported")
        }
        torchDtype = json["torch_dtype"]?.string ?? json["dtype"]?.string ?? "float32"
        ropeScaling = try Self.parseRopeScaling(json["rope_scaling"], path: path)
    }

    private static func parseRopeScaling(_ v: JSONValue?, path: String) throws -> RopeScaling {
        guard let v, !v.isNull else { return .none }
        guard v.object != nil else { throw TQError.format("\(path): rope_scaling is not an object") }
        let type = v["rope_type"]?.string ?? v["type"]?.string ?? "default"
        let factor = v["factor"]?.double ?? 1
        switch type {
        case "default": return .none
        case "linear": return .linear(factor: factor)
        case "llama3":
            guard let orig = v["original_max_position_embeddings"]?.int else {
                throw TQError.format("\(path): llama3 rope_scaling needs original_max_position_embeddings")
            }
            return .llama3(factor: factor, lowFreqFactor: v["low_freq_factor"]?.double ?? 1,
                           highFreqFactor: v["high_freq_factor"]?.double ?? 4, originalMaxPositions: orig)
        default:
            throw TQError.unsupported("\(path): unsupported rope_scaling type \(type)")
        }
    }

    /// RoPE inverse frequencies as Hugging Face computes them (in float32).
    public var inverseFrequencies: [Float] {
        let half = headDim / 2
        var inv = (0..<half).map { i in Double(1 / powf(Float(ropeTheta), Float(2 * i) / Float(headDim))) }
        switch ropeScaling {
        case .none: break
        case .linear(let factor): inv = inv.map { $0 / factor }
        case .llama3(let factor, let low, let high, let orig):
            let lowWavelen = Double(orig) / low
            let highWavelen = Double(orig) / high
            inv = inv.map { f in
                let wavelen = 2 * Double.pi / f
                if wavelen < highWavelen { return f }
                if wavelen > lowWavelen { return f / factor }
                let smooth = (Double(orig) / wavelen - low) / (high - low)
                return (1 - smooth) * f / factor + smooth * f
            }
        }
        return inv.map { Float($0) }
    }

    public var qDim: Int { heads * headDim }
    public var kvDim: Int { kvHeads * headDim }
}
