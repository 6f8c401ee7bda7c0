/// The float32 weights of one decoder block, loaded when the block runs.
public final class BlockWeights: @unchecked Sendable {
    public let attnNorm: FloatBuffer
    public let mlpNorm: FloatBuffer
    /// Indexed by `LinearKind.rawValue`; each `out x in`.
    public var linears: [FloatBuffer]
    /// q, k, v biases when the model has them (Qwen2), else nil.
    public let biases: [FloatBuffer]?
    /// q and k per-head RMSNorm weights [head_dim] when the model has them (Qwen3, Gemma 3), else nil:
    /// applied to each head after the projection, before RoPE.
    public let qkNorms: [FloatBuffer]?
    /// The sliding window of this block's attention (Mistral, windowed Qwen layers): each query
    /// sees the last `attentionWindow` positions, itself included; nil for full causal attention.
    public let attentionWindow: Int?
    /// The RMSNorm weights of the attention and MLP outputs (Gemma's post_attention_layernorm and
    /// post_feedforward_layernorm), applied before the residual adds; nil for pre-norm-only blocks.
    public let postNorms: [FloatBuffer]?

    public init(attnNorm: FloatBuffer, mlpNorm: FloatBuffer, linears: [FloatBuffer], biases: [FloatBuffer]?,
                qkNorms: [FloatBuffer]? = nil, attentionWindow: Int? = nil, postNorms: [FloatBuffer]? = nil) {
        self.attnNorm = attnNorm
        self.mlpNorm = mlpNorm
        self.linears = linears
        self.biases = biases
        self.qkNorms = qkNorms
        self.attentionWindow = attentionWindow
        self.postNorms = postNorms
    }

    /// The same block with other linears (quantized, fake-quantized): every other tensor is shared.
    public func replacingLinears(_ linears: [FloatBuffer]) -> BlockWeights {
        BlockWeights(attnNorm: attnNorm, mlpNorm: mlpNorm, linears: linears, biases: biases, qkNorms: qkNorms,
                     attentionWindow: attentionWindow, postNorms: postNorms)
    }

    /// The block's float tensors outside the seven linears, by checkpoint name: the norms, the
    /// q/k/v biases and q/k norms. A transforming method (AWQ) may change any of them, so all of
    /// them are what a checkpoint and a resumed run must carry over.
    public func floatTensors(layer: Int) -> [(name: String, buffer: FloatBuffer)] {
        let p = "model.layers.\(layer)."
        let names = Self.normNames(sandwich: postNorms != nil)
        var t = zip(names, [attnNorm, mlpNorm] + (postNorms ?? [])).map { (p + $0, $1) }
        if let biases {
            for (kind, b) in zip([LinearKind.q, .k, .v], biases) { t.append((kind.prefix(layer: layer) + ".bias", b)) }
        }
        if let qkNorms {
            for (name, n) in zip(Self.qkNormNames, qkNorms) { t.append((p + name, n)) }
        }
        return t
    }

    /// Tensor names inside `model.layers.N.` of the norms: attnNorm, mlpNorm, then the post-norms
    /// (Gemma's sandwich norms; there post_attention_layernorm is the attention output's norm and the
    /// MLP's input norm is pre_feedforward_layernorm).
    static func normNames(sandwich: Bool) -> [String] {
        sandwich ? ["input_layernorm.weight", "pre_feedforward_layernorm.weight", "post_attention_layernorm.weight",
                    "post_feedforward_layernorm.weight"]
                 : ["input_layernorm.weight", "post_attention_layernorm.weight"]
    }

    /// Whether a checkpoint tensor name is a norm weight (stored as an offset from 1 in Gemma).
    static func isNormWeight(_ name: String) -> Bool { name.hasSuffix("norm.weight") }

    /// Tensor names of the q/k norms inside `model.layers.N.`.
    static let qkNormNames = ["self_attn.q_norm.weight", "self_attn.k_norm.weight"]

    public subscript(kind: LinearKind) -> FloatBuffer {
        get { linears[kind.rawValue] }
        set { linears[kind.rawValue] = newValue }
    }
}
