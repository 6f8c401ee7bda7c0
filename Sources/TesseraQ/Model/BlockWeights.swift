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

    public subscript(kind: LinearKind) -> FloatBuffer {
        get { linears[kind.rawValue] }
        set { linears[kind.rawValue] = newValue }
    }
}
