/// The float32 weights of one decoder block, loaded when the block runs.
public final class BlockWeights: @unchecked Sendable {
    public let attnNorm: FloatBuffer
    public let mlpNorm: FloatBuffer
    /// Indexed by `LinearKind.rawValue`; each `out x in`.
    public var linears: [FloatBuffer]
    /// q, k, v biases when the model has them (Qwen2), else nil.
    public let biases: [FloatBuffer]?

    public init(attnNorm: FloatBuffer, mlpNorm: FloatBuffer, linears: [FloatBuffer], biases: [FloatBuffer]?) {
        self.attnNorm = attnNorm
        self.mlpNorm = mlpNorm
        self.linears = linears
        self.biases = biases
    }

    /// The block's float tensors outside the seven linears, by checkpoint name: the norms and the
    /// q/k/v biases. A transforming method (AWQ) may change any of them, so all of them are what
    /// a checkpoint and a resumed run must carry over.
    public func floatTensors(layer: Int) -> [(name: String, buffer: FloatBuffer)] {
        let p = "model.layers.\(layer)."
        var t = [(p + "input_layernorm.weight", attnNorm), (p + "post_attention_layernorm.weight", mlpNorm)]
        if let biases {
            for (kind, b) in zip([LinearKind.q, .k, .v], biases) { t.append((kind.prefix(layer: layer) + ".bias", b)) }
        }
        return t
    }

    public subscript(kind: LinearKind) -> FloatBuffer {
        get { linears[kind.rawValue] }
        set { linears[kind.rawValue] = newValue }
    }
}
