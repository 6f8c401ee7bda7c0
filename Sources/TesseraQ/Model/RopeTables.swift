import TQKernels

/// Cos/sin tables for positions 0 ..< n.
public final class RopeTables: @unchecked Sendable {
    public let cos: FloatBuffer
    public let sin: FloatBuffer
    public let positions: Int
    /// The tables of the sliding-window layers when they have their own RoPE (Gemma 3), else nil.
    public let sliding: RopeTables?

    public convenience init(config: LlamaConfig, positions: Int) throws {
        try self.init(inverseFrequencies: config.inverseFrequencies, positions: positions,
                  sliding: config.slidingRope.map { try RopeTables(inverseFrequencies: config.inverseFrequencies($0), positions: positions) })
    }

    init(inverseFrequencies inv: [Float], positions: Int, sliding: RopeTables? = nil) throws {
        let half = inv.count
        self.positions = positions
        self.sliding = sliding
        cos = try FloatBuffer(count: positions * half)
        sin = try FloatBuffer(count: positions * half)
        inv.withUnsafeBufferPointer { tqk_rope_tables($0.baseAddress, Int64(half), Int64(positions), cos.p, sin.p) }
    }

    /// The tables a block uses: the sliding layers' own when the block has a window and they exist.
    func forBlock(_ w: BlockWeights) -> RopeTables {
        w.attentionWindow != nil ? sliding ?? self : self
    }
}
