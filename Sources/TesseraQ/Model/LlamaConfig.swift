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
    /// Per-head RMSNorm on q and k after the projection, before RoPE (Qwen3, Gemma 3).
    public var qkNorm: Bool
    /// q, k, v stored as one qkv_proj and gate, up as one gate_up_proj (Phi-3).
    public var fusedLinears: Bool
    public var torchDtype: String
    /// The attention window of the layers that use sliding-window attention (nil: none does).
    public var slidingWindow: Int?
    /// Per layer: true when that layer's attention is limited to `slidingWindow` keys.
    public var slidingLayers: [Bool]
    /// Gemma 3: the RoPE of the sliding-window layers (its own base, `rope_local_base_freq`); nil when
    /// every layer uses `ropeTheta` and `ropeScaling`.
    public var slidingRope: Rope?
    /// What the checkpoint's norm weights are offsets from: Gemma's RMSNorm multiplies by 1 + w, so 1;
    /// 0 elsewhere. Added when a block is loaded (the kernels and AWQ's folding see the multiplier),
    /// taken off again on export.
    public var normWeightOffset: Float
    /// Gemma: token embeddings are multiplied by sqrt(hidden_size).
    public var scalesEmbeddings: Bool
    public var activation: MLPActivation
    /// Gemma 2/3: RMSNorms on the attention and MLP outputs before the residual adds
    /// (post_attention_layernorm, post_feedforward_layernorm); the MLP's input norm is then
    /// pre_feedforward_layernorm.
    public var sandwichNorms: Bool
    /// Attention scores are q.k times this: head_dim^-0.5, or query_pre_attn_scalar^-0.5 (Gemma).
    public var attentionScale: Float
    /// Gemma 2: attention scores become cap tanh(s / cap) before the mask (nil: not capped).
    public var attentionSoftcap: Float?
    /// Gemma 2: output logits become cap tanh(l / cap) (nil: not capped).
    public var finalSoftcap: Float?
    /// QuaRot (config.json's `tesseraq.rotation`): down_proj's input passes through an orthonormal
    /// Hadamard transform at run time (R4); the other rotations are folded into the weights.
    public var onlineHadamard: Bool
    /// Fake quantization of activations at run time (config.json's `tesseraq.activations`); nil: float.
    public var activationQuant: ActivationQuantSpec?

    public struct Rope: Sendable, Equatable {
        public var theta: Double
        public var scaling: RopeScaling
    }

    /// The gate activation of the MLP: SwiGLU (LLaMA) or GeGLU with the tanh GELU (Gemma).
    public enum MLPActivation: Sendable, Equatable {
        case silu, geluTanh
    }

    public enum RopeScaling: Sendable, Equatable {
        case none
        case linear(factor: Double)
        case llama3(factor: Double, lowFreqFactor: Double, highFreqFactor: Double, originalMaxPositions: Int)
    }

    static let supportedArchitectures = ["LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "MistralForCausalLM",
                                         "Phi3ForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM"]
    static let supportedModelTypes = ["llama", "qwen2", "qwen3", "mistral", "phi3", "gemma2", "gemma3_text"]
    /// transformers' max_position_embeddings for a config that omits it (it only bounds seq_len here).
    static let defaultMaxPositions = ["llama": 2048, "qwen2": 32768, "qwen3": 32768, "mistral": 131072, "phi3": 4096,
                                      "gemma2": 8192, "gemma3_text": 131072]

    /// Reads and validates `dir/config.json`.
    public init(directory: String) throws {
        let path = directory + "/config.json"
        try self.init(json: try JSONValue.parseFile(path), path: path)
    }

    /// Every field that changes the computation is read here; a value we do not implement is an
    /// error naming the field, never a silent default (README, "Config fields and defaults").
    public init(json: JSONValue, path: String) throws {
        guard json.object != nil else { throw TQError.format("\(path): not a JSON object") }
        let f = ConfigFields(json: json, path: path)
        // Checked before the architectures so that the message says what to do instead.
        if json["model_type"]?.string == "gemma3" {
            throw TQError.unsupported("\(path): model_type gemma3 is the multimodal Gemma 3 (vision tower and text_config); only its text model (model_type gemma3_text, Gemma3ForCausalLM) is supported")
        }
        if let archs = json["architectures"]?.array {
            let names = archs.compactMap(\.string)
            guard names.contains(where: Self.supportedArchitectures.contains) else {
                throw TQError.unsupported("\(path): unsupported architecture \(names.joined(separator: ", ")); supported: \(Self.supportedArchitectures.joined(separator: ", "))")
            }
        }
        modelType = try f.string("model_type", default: "llama")
        guard Self.supportedModelTypes.contains(modelType) else {
            throw TQError.unsupported("\(path): unsupported model_type \(modelType)")
        }
        let gemma = modelType.hasPrefix("gemma")
        activation = try Self.activation(f, gemma: gemma)
        hidden = try f.positiveInt("hidden_size")
        intermediate = try f.positiveInt("intermediate_size")
        layers = try f.positiveInt("num_hidden_layers")
        heads = try f.positiveInt("num_attention_heads")
        kvHeads = try f.positiveInt("num_key_value_heads", default: heads)
        headDim = try f.positiveInt("head_dim", default: hidden / heads)
        vocab = try f.positiveInt("vocab_size")
        maxPositions = try f.positiveInt("max_position_embeddings", default: Self.defaultMaxPositions[modelType]!)
        guard heads % kvHeads == 0 else { throw TQError.format("\(path): num_attention_heads \(heads) is not a multiple of num_key_value_heads \(kvHeads)") }
        guard headDim > 0, headDim % 2 == 0 else { throw TQError.format("\(path): head_dim \(headDim) must be positive and even for RoPE") }
        let eps = try f.number("rms_norm_eps", default: modelType == "phi3" ? 1e-5 : 1e-6)
        guard eps >= 0 else { throw TQError.format("\(path): rms_norm_eps must not be negative") }
        rmsEps = Float(eps)
        let rope = try RopeParameters(f, perLayerType: modelType == "gemma3_text")
        ropeTheta = rope.theta
        ropeScaling = rope.scaling
        slidingRope = rope.sliding
        tiedEmbeddings = try f.flag("tie_word_embeddings", default: gemma)
        qkvBias = try Self.attentionBias(f, modelType: modelType)
        qkNorm = modelType == "qwen3" || modelType == "gemma3_text"
        fusedLinears = modelType == "phi3"
        if try f.flag("mlp_bias", default: false) {
            throw TQError.unsupported("\(path): mlp_bias is not supported")
        }
        normWeightOffset = gemma ? 1 : 0
        scalesEmbeddings = gemma
        sandwichNorms = gemma
        attentionScale = gemma ? Float(1 / (try f.positiveNumber("query_pre_attn_scalar", default: 256)).squareRoot())
                               : 1 / Float(headDim).squareRoot()
        // Gemma 2 caps both unless the field is null; elsewhere a cap is opt-in (Gemma 3) or unknown.
        let caps = modelType == "gemma2" ? (attention: 50.0, final: 30.0) : nil
        if gemma {
            attentionSoftcap = try f.optionalPositiveNumber("attn_logit_softcapping", default: caps?.attention).map(Float.init)
            finalSoftcap = try f.optionalPositiveNumber("final_logit_softcapping", default: caps?.final).map(Float.init)
            try f.refuse("use_bidirectional_attention", unless: .bool(false), because: "attention is causal")
        } else {
            try f.refuse("attn_logit_softcapping", because: "attention logits are not soft-capped")
            try f.refuse("final_logit_softcapping", because: "output logits are not soft-capped")
            attentionSoftcap = nil
            finalSoftcap = nil
        }
        torchDtype = try f.string("torch_dtype", default: try f.string("dtype", default: "float32"))
        (slidingWindow, slidingLayers) = try Self.slidingWindows(f, modelType: modelType, layers: layers)
        (onlineHadamard, activationQuant) = try Self.runTimeTransforms(f)
    }

    /// The same model with float activations (QuaRot's rotations kept): the full-precision
    /// trajectory of a calibrated run.
    public var floatActivations: LlamaConfig {
        var c = self
        c.activationQuant = nil
        return c
    }

    /// What a rotated or activation-quantized checkpoint (ours) asks of every forward pass:
    /// `tesseraq.rotation.online_hadamard` and `tesseraq.activations`.
    private static func runTimeTransforms(_ f: ConfigFields) throws -> (Bool, ActivationQuantSpec?) {
        guard let t = try f.object("tesseraq") else { return (false, nil) }
        var online = false
        if let r = try t.object("rotation") {
            let type = try r.string("type", default: "")
            guard type == "hadamard" else {
                throw TQError.unsupported("\(f.path): tesseraq.rotation.type \"\(type)\" is not supported (hadamard)")
            }
            let where_ = try r.string("online_hadamard", default: "none")
            guard where_ == "down_proj" || where_ == "none" else {
                throw TQError.unsupported("\(f.path): tesseraq.rotation.online_hadamard \"\(where_)\" is not supported (down_proj, none)")
            }
            online = where_ == "down_proj"
        }
        let spec = try t.object("activations").map { try ActivationQuantSpec(checkpoint: $0) }
        return (online, spec?.isActive == true ? spec : nil)
    }

    /// The MLP's gate activation: `hidden_act` (silu; transformers maps "swish" to the same module),
    /// or Gemma's `hidden_activation` (only gelu_pytorch_tanh; transformers ignores hidden_act there).
    private static func activation(_ f: ConfigFields, gemma: Bool) throws -> MLPActivation {
        if gemma {
            let act = try f.string("hidden_activation", default: "gelu_pytorch_tanh")
            guard act == "gelu_pytorch_tanh" else {
                throw TQError.unsupported("\(f.path): unsupported hidden_activation \(act) (only gelu_pytorch_tanh)")
            }
            return .geluTanh
        }
        let act = try f.string("hidden_act", default: "silu")
        guard act == "silu" || act == "swish" else {
            throw TQError.unsupported("\(f.path): unsupported hidden_act \(act) (only silu)")
        }
        return .silu
    }

    /// Bias on q, k, v: Qwen2 always has it (transformers hard-codes it, whatever `attention_bias`
    /// says). Elsewhere `attention_bias` puts a bias on o_proj too, which the block does not have.
    private static func attentionBias(_ f: ConfigFields, modelType: String) throws -> Bool {
        if modelType == "qwen2" { return true }
        try f.refuse("attention_bias", unless: .bool(false), because: "biases on q, k, v and o projections")
        return false
    }

    /// Which layers use sliding-window attention, as transformers decides: Mistral on every layer
    /// (`sliding_window`, 4096 when absent, null for none); Phi-3 on every layer when `sliding_window`
    /// is set; Qwen2 and Qwen3 only with `use_sliding_window`, on layers from `max_window_layers` on;
    /// Gemma 2 on every other layer from layer 0, Gemma 3 on all but every `sliding_window_pattern`-th
    /// (6); an explicit `layer_types` list overrides these. LLaMA has none.
    private static func slidingWindows(_ f: ConfigFields, modelType: String, layers: Int) throws -> (Int?, [Bool]) {
        var sliding = [Bool](repeating: false, count: layers)
        var window: Int?
        switch modelType {
        case "mistral":
            if f.json["sliding_window"]?.isNull == true { break }
            window = try f.positiveInt("sliding_window", default: 4096)
            sliding = [Bool](repeating: true, count: layers)
        case "phi3":
            guard f.has("sliding_window") else { break }
            window = try f.positiveInt("sliding_window")
            sliding = [Bool](repeating: true, count: layers)
        case "qwen2", "qwen3":
            guard try f.flag("use_sliding_window", default: false) else { break }
            window = try f.positiveInt("sliding_window", default: 4096)
            let from = try f.positiveInt("max_window_layers", default: 28)
            sliding = (0..<layers).map { $0 >= from }
        case "gemma2", "gemma3_text":
            window = try f.positiveInt("sliding_window", default: 4096)
            let pattern = modelType == "gemma2" ? 2 : try f.positiveInt("sliding_window_pattern", default: 6)
            sliding = (0..<layers).map { ($0 + 1) % pattern != 0 }
        default:
            return (nil, sliding)
        }
        if let types = f.value("layer_types") {
            guard let list = types.array, list.count == layers else {
                throw TQError.format("\(f.path): layer_types must be a list of \(layers) layer types")
            }
            sliding = try list.map { t in
                switch t.string {
                case "full_attention": return false
                case "sliding_attention": return true
                default: throw TQError.unsupported("\(f.path): layer_types entry \(t.description) is not supported (full_attention, sliding_attention)")
                }
            }
            if sliding.contains(true), window == nil { window = try f.positiveInt("sliding_window") }
        }
        return sliding.contains(true) ? (window, sliding) : (nil, sliding)
    }

    /// The sliding window of layer `layer`'s attention, nil for full causal attention.
    public func window(layer: Int) -> Int? {
        slidingLayers[layer] ? slidingWindow : nil
    }

    /// RoPE inverse frequencies as Hugging Face computes them (in float32), of the full-attention layers.
    public var inverseFrequencies: [Float] { inverseFrequencies(Rope(theta: ropeTheta, scaling: ropeScaling)) }

    /// The inverse frequencies of a RoPE with this head_dim.
    func inverseFrequencies(_ rope: Rope) -> [Float] {
        let half = headDim / 2
        var inv = (0..<half).map { i in Double(1 / powf(Float(rope.theta), Float(2 * i) / Float(headDim))) }
        switch rope.scaling {
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
