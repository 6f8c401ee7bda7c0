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

/// One decoder block's forward pass over a sequence of T tokens, in place on x [T x hidden]:
///   h = x + o(attn(rope(q(n1)), rope(k(n1)), v(n1))),  x = h + down(silu(gate(n2)) * up(n2)).
public func blockForward(_ x: UnsafeMutablePointer<Float>, tokens T: Int, weights w: BlockWeights,
                         config c: LlamaConfig, rope: RopeTables) {
    let d = c.hidden, qd = c.qDim, kd = c.kvDim, f = c.intermediate
    let n = FloatBuffer(count: T * d)
    let q = FloatBuffer(count: T * qd), k = FloatBuffer(count: T * kd), v = FloatBuffer(count: T * kd)
    let a = FloatBuffer(count: T * qd), tmp = FloatBuffer(count: T * d)
    let rows = Int64(T)

    tqk_rmsnorm(x, w.attnNorm.p, n.p, rows, Int64(d), c.rmsEps)
    linearForward(n.p, rows: T, weight: w[.q].p, out: qd, in: d, into: q.p)
    linearForward(n.p, rows: T, weight: w[.k].p, out: kd, in: d, into: k.p)
    linearForward(n.p, rows: T, weight: w[.v].p, out: kd, in: d, into: v.p)
    if let b = w.biases {
        tqk_add_bias(q.p, b[0].p, rows, Int64(qd))
        tqk_add_bias(k.p, b[1].p, rows, Int64(kd))
        tqk_add_bias(v.p, b[2].p, rows, Int64(kd))
    }
    tqk_rope(q.p, rows, Int64(c.heads), Int64(c.headDim), rope.cos.p, rope.sin.p)
    tqk_rope(k.p, rows, Int64(c.kvHeads), Int64(c.headDim), rope.cos.p, rope.sin.p)
    tqk_attention(q.p, k.p, v.p, a.p, rows, Int64(c.heads), Int64(c.kvHeads), Int64(c.headDim),
                  1 / Float(c.headDim).squareRoot())
    linearForward(a.p, rows: T, weight: w[.o].p, out: d, in: qd, into: tmp.p)
    tqk_add(x, tmp.p, rows * Int64(d))

    tqk_rmsnorm(x, w.mlpNorm.p, n.p, rows, Int64(d), c.rmsEps)
    let g = FloatBuffer(count: T * f), u = FloatBuffer(count: T * f)
    linearForward(n.p, rows: T, weight: w[.gate].p, out: f, in: d, into: g.p)
    linearForward(n.p, rows: T, weight: w[.up].p, out: f, in: d, into: u.p)
    tqk_swiglu(g.p, u.p, g.p, rows * Int64(f))
    linearForward(g.p, rows: T, weight: w[.down].p, out: d, in: f, into: tmp.p)
    tqk_add(x, tmp.p, rows * Int64(d))
}
