import TQKernels

/// Cos/sin tables for positions 0 ..< n.
public final class RopeTables: @unchecked Sendable {
    public let cos: FloatBuffer
    public let sin: FloatBuffer
    public let positions: Int

    public init(config: LlamaConfig, positions: Int) {
        let half = config.headDim / 2
        self.positions = positions
        cos = FloatBuffer(count: positions * half)
        sin = FloatBuffer(count: positions * half)
        let inv = config.inverseFrequencies
        inv.withUnsafeBufferPointer { tqk_rope_tables($0.baseAddress, Int64(half), Int64(positions), cos.p, sin.p) }
    }
}
