/// The float32 weights of one decoder block, loaded when the block runs.
public final class BlockWeights: @unchecked Sendable {
    public let attnNorm: FloatBuffer
    public let mlpNorm: FloatBuffer
    /// Indexed by `LinearKind.rawValue`; each `out x in`.
    public var linears: [FloatBuffer]
    /// q, k, v biases when the model has them (Qwen2), else nil.
    public let biases: [FloatBuffer]?
    /// q and k per-head RMSNorm weights [head_dim] when the model has them (Qwen3), else nil:
    /// applied to each head after the projection, before RoPE.
    public let qkNorms: [FloatBuffer]?
    /// The sliding window of this block's attention (Mistral, windowed Qwen layers): each query
    /// sees the last `attentionWindow` positions, itself included; nil for full causal attention.
    public let attentionWindow: Int?

    public init(attnNorm: FloatBuffer, mlpNorm: FloatBuffer, linears: [FloatBuffer], biases: [FloatBuffer]?,
                qkNorms: [FloatBuffer]? = nil, attentionWindow: Int? = nil) {
        self.attnNorm = attnNorm
        self.mlpNorm = mlpNorm
        self.linears = linears
        self.biases = biases
        self.qkNorms = qkNorms
        self.attentionWindow = attentionWindow
    }

    /// The same block with other linears (quantized, fake-quantized): every other tensor is shared.
    public func replacingLinears(_ linears: [FloatBuffer]) -> BlockWeights {
        BlockWeights(attnNorm: attnNorm, mlpNorm: mlpNorm, linears: linears, biases: biases, qkNorms: qkNorms,
                     attentionWindow: attentionWindow)
    }

    /// The block's float tensors outside the seven linears, by checkpoint name: the norms, the
    /// q/k/v biases and q/k norms. A transforming method (AWQ) may change any of them, so all of
    /// them are what a checkpoint and a resumed run must carry over.
    public func floatTensors(layer: Int) -> [(name: String, buffer: FloatBuffer)] {
        let p = "model.layers.\(layer)."
        var t = [(p + "input_layernorm.weight", attnNorm), (p + "post_attention_layernorm.weight", mlpNorm)]
        if let biases {
            for (kind, b) in zip([LinearKind.q, .k, .v], biases) { t.append((kind.prefix(layer: layer) + ".bias", b)) }
        }
        if let qkNorms {
            for (name, n) in zip(Self.qkNormNames, qkNorms) { t.append((p + name, n)) }
        }
        return t
    }

    /// Tensor names of the q/k norms inside `model.layers.N.`.
    static let qkNormNames = ["self_attn.q_norm.weight", "self_attn.k_norm.weight"]

    public subscript(kind: LinearKind) -> FloatBuffer {
        get { linears[kind.rawValue] }
        set { linears[kind.rawValue] = newValue }
    }
}
