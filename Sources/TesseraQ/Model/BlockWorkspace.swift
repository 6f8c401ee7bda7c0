import TQKernels

/// One decoder block run over `sequences` independent sequences of `length` tokens each
/// (rows laid out sequence after sequence). Forward keeps the activations the backward pass
/// needs; backward turns dL/dY into dL/dW for the seven linears.
///
///   h = x + o(attn(rope(q(n1)), rope(k(n1)), v(n1))),  n1 = rmsnorm1(x)
///   y = h + down(silu(gate(n2)) * up(n2)),              n2 = rmsnorm2(h)
public final class BlockWorkspace: @unchecked Sendable {
    public let config: LlamaConfig
    public let sequences: Int
    public let length: Int
    public var rows: Int { sequences * length }
    let rope: RopeTables
    let n1, q, k, v, attn, h, n2, g, u, act: FloatBuffer

    public init(config c: LlamaConfig, sequences: Int, length: Int, rope: RopeTables? = nil) {
        config = c
        self.sequences = sequences
        self.length = length
        self.rope = rope ?? RopeTables(config: c, positions: length)
        let T = sequences * length
        n1 = FloatBuffer(count: T * c.hidden); h = FloatBuffer(count: T * c.hidden); n2 = FloatBuffer(count: T * c.hidden)
        q = FloatBuffer(count: T * c.qDim); attn = FloatBuffer(count: T * c.qDim)
        k = FloatBuffer(count: T * c.kvDim); v = FloatBuffer(count: T * c.kvDim)
        g = FloatBuffer(count: T * c.intermediate); u = FloatBuffer(count: T * c.intermediate)
        act = FloatBuffer(count: T * c.intermediate)
    }

    /// x [rows x hidden] -> y, written to `y` (which may be `x`).
    public func forward(_ x: UnsafePointer<Float>, weights w: BlockWeights, into y: UnsafeMutablePointer<Float>) {
        let c = config, d = c.hidden, T = rows, rowsI = Int64(T)
        tqk_rmsnorm(x, w.attnNorm.p, n1.p, rowsI, Int64(d), c.rmsEps)
        linearForward(n1.p, rows: T, weight: w[.q].p, out: c.qDim, in: d, into: q.p)
        linearForward(n1.p, rows: T, weight: w[.k].p, out: c.kvDim, in: d, into: k.p)
        linearForward(n1.p, rows: T, weight: w[.v].p, out: c.kvDim, in: d, into: v.p)
        if let b = w.biases {
            tqk_add_bias(q.p, b[0].p, rowsI, Int64(c.qDim))
            tqk_add_bias(k.p, b[1].p, rowsI, Int64(c.kvDim))
            tqk_add_bias(v.p, b[2].p, rowsI, Int64(c.kvDim))
        }
        for s in 0..<sequences {
            let qs = q.p + s * length * c.qDim, ks = k.p + s * length * c.kvDim, vs = v.p + s * length * c.kvDim
            tqk_rope(qs, Int64(length), Int64(c.heads), Int64(c.headDim), rope.cos.p, rope.sin.p)
            tqk_rope(ks, Int64(length), Int64(c.kvHeads), Int64(c.headDim), rope.cos.p, rope.sin.p)
            tqk_attention(qs, ks, vs, attn.p + s * length * c.qDim, Int64(length), Int64(c.heads), Int64(c.kvHeads),
                          Int64(c.headDim), attentionScale)
        }
        // h = x + o(attn); computed in h so that y may alias x.
        linearForward(attn.p, rows: T, weight: w[.o].p, out: d, in: c.qDim, into: h.p)
        tqk_add(h.p, x, rowsI * Int64(d))
        tqk_rmsnorm(h.p, w.mlpNorm.p, n2.p, rowsI, Int64(d), c.rmsEps)
        linearForward(n2.p, rows: T, weight: w[.gate].p, out: c.intermediate, in: d, into: g.p)
        linearForward(n2.p, rows: T, weight: w[.up].p, out: c.intermediate, in: d, into: u.p)
        tqk_swiglu(g.p, u.p, act.p, rowsI * Int64(c.intermediate))
        linearForward(act.p, rows: T, weight: w[.down].p, out: d, in: c.intermediate, into: y)
        tqk_add(y, h.p, rowsI * Int64(d))
    }

    var attentionScale: Float { 1 / Float(config.headDim).squareRoot() }
}

/// Gradients of a block's linears, and the scratch the backward pass needs.
public final class BlockGradients: @unchecked Sendable {
    /// dL/dW per linear (out x in), indexed by `LinearKind.rawValue`.
    public let dW: [FloatBuffer]
    let dact, dg, du, dn2, dh, dattn, dq, dk, dv: FloatBuffer

    public init(config c: LlamaConfig, rows T: Int) {
        dW = LinearKind.allCases.map { let (o, i) = $0.shape(c); return FloatBuffer(count: o * i) }
        dact = FloatBuffer(count: T * c.intermediate); dg = FloatBuffer(count: T * c.intermediate)
        du = FloatBuffer(count: T * c.intermediate)
        dn2 = FloatBuffer(count: T * c.hidden); dh = FloatBuffer(count: T * c.hidden)
        dattn = FloatBuffer(count: T * c.qDim); dq = FloatBuffer(count: T * c.qDim)
        dk = FloatBuffer(count: T * c.kvDim); dv = FloatBuffer(count: T * c.kvDim)
    }

    public subscript(kind: LinearKind) -> FloatBuffer { dW[kind.rawValue] }
}

extension BlockWorkspace {
    /// dL/dW of every linear from dL/dY, using the activations of the last `forward`.
    /// (The block input's gradient is not needed: inputs are data, not parameters.)
    public func backward(_ dY: UnsafePointer<Float>, weights w: BlockWeights, into grads: BlockGradients) {
        let c = config, d = c.hidden, f = c.intermediate, qd = c.qDim, kd = c.kvDim
        let T = Int64(rows), D = Int64(d), F = Int64(f), QD = Int64(qd), KD = Int64(kd)
        // y = h + act Wd^T
        tqk_sgemm(1, 0, D, F, T, 1, dY, D, act.p, F, 0, grads[.down].p, F)
        tqk_sgemm(0, 0, T, F, D, 1, dY, D, w[.down].p, F, 0, grads.dact.p, F)
        tqk_swiglu_backward(g.p, u.p, grads.dact.p, grads.dg.p, grads.du.p, T * F)
        // g = n2 Wg^T, u = n2 Wu^T
        tqk_sgemm(1, 0, F, D, T, 1, grads.dg.p, F, n2.p, D, 0, grads[.gate].p, D)
        tqk_sgemm(1, 0, F, D, T, 1, grads.du.p, F, n2.p, D, 0, grads[.up].p, D)
        tqk_sgemm(0, 0, T, D, F, 1, grads.dg.p, F, w[.gate].p, D, 0, grads.dn2.p, D)
        tqk_sgemm(0, 0, T, D, F, 1, grads.du.p, F, w[.up].p, D, 1, grads.dn2.p, D)
        // n2 = rmsnorm(h); dh = dY + d(rmsnorm)
        tqk_rmsnorm_backward(h.p, w.mlpNorm.p, grads.dn2.p, grads.dh.p, T, D, c.rmsEps)
        tqk_add(grads.dh.p, dY, T * D)
        // h = x + attn Wo^T
        tqk_sgemm(1, 0, D, QD, T, 1, grads.dh.p, D, attn.p, QD, 0, grads[.o].p, QD)
        tqk_sgemm(0, 0, T, QD, D, 1, grads.dh.p, D, w[.o].p, QD, 0, grads.dattn.p, QD)
        for s in 0..<sequences {
            let oq = s * length * qd, ok = s * length * kd, L = Int64(length)
            tqk_attention_backward(q.p + oq, k.p + ok, v.p + ok, grads.dattn.p + oq, grads.dq.p + oq, grads.dk.p + ok,
                                   grads.dv.p + ok, L, Int64(c.heads), Int64(c.kvHeads), Int64(c.headDim), attentionScale)
            tqk_rope_backward(grads.dq.p + oq, L, Int64(c.heads), Int64(c.headDim), rope.cos.p, rope.sin.p)
            tqk_rope_backward(grads.dk.p + ok, L, Int64(c.kvHeads), Int64(c.headDim), rope.cos.p, rope.sin.p)
        }
        // q, k, v = n1 W^T
        tqk_sgemm(1, 0, QD, D, T, 1, grads.dq.p, QD, n1.p, D, 0, grads[.q].p, D)
        tqk_sgemm(1, 0, KD, D, T, 1, grads.dk.p, KD, n1.p, D, 0, grads[.k].p, D)
        tqk_sgemm(1, 0, KD, D, T, 1, grads.dv.p, KD, n1.p, D, 0, grads[.v].p, D)
    }
}
