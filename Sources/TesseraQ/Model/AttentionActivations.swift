import TQKernels

/// The attention half of a block before o_proj, over `sequences` independent sequences of
/// `length` tokens (rows sequence after sequence):
///
///   attn = attention(rope(qnorm(n1 Wq^T + bq)), rope(knorm(n1 Wk^T + bk)), n1 Wv^T + bv)
///
/// causal, within the block's sliding window if it has one, scores scaled by `attentionScale` and
/// soft-capped where the model caps them (Gemma 2); the biases are Qwen2's and the per-head norms
/// Qwen3's and Gemma 3's (an RMSNorm over each head's head_dim values, so the norm kernel runs on rows
/// of head_dim). Gemma 3's sliding layers rotate with their own RoPE tables. Keeps what the backward
/// pass needs.
final class AttentionActivations: @unchecked Sendable {
    let config: LlamaConfig
    let sequences: Int
    let length: Int
    /// q and k after RoPE, v, and the attention output.
    let q, k, v, attn: FloatBuffer
    /// q and k before the per-head norms (models with q/k norms only): the norms' backward reads them.
    let qPre, kPre: FloatBuffer?

    init(config c: LlamaConfig, sequences: Int, length: Int) throws {
        config = c
        self.sequences = sequences
        self.length = length
        let T = sequences * length
        q = try FloatBuffer(count: T * c.qDim); attn = try FloatBuffer(count: T * c.qDim)
        k = try FloatBuffer(count: T * c.kvDim); v = try FloatBuffer(count: T * c.kvDim)
        qPre = c.qkNorm ? try FloatBuffer(count: T * c.qDim) : nil
        kPre = c.qkNorm ? try FloatBuffer(count: T * c.kvDim) : nil
    }

    var rows: Int { sequences * length }

    /// attn from n1 [rows x hidden], with the projection weights given (float, or quantized
    /// stand-ins) and the block's biases and q/k norms; the projections' GEMMs and attention's
    /// products at `dtype`.
    func forward(_ n1: UnsafePointer<Float>, q wq: UnsafePointer<Float>, k wk: UnsafePointer<Float>,
                 v wv: UnsafePointer<Float>, block w: BlockWeights, rope: RopeTables, dtype: ComputeDType = .f32) {
        let c = config, d = c.hidden
        Self.projectQKV(rows: rows, config: c, block: w, q: q.p, k: k.p, v: v.p, qPre: qPre?.p, kPre: kPre?.p) { outs in
            linearForward(n1, rows: rows, weight: wq, out: c.qDim, in: d, into: outs[0], dtype: dtype)
            linearForward(n1, rows: rows, weight: wk, out: c.kvDim, in: d, into: outs[1], dtype: dtype)
            linearForward(n1, rows: rows, weight: wv, out: c.kvDim, in: d, into: outs[2], dtype: dtype)
        }
        let rope = rope.forBlock(w)
        for s in 0..<sequences {
            let qs = q.p + s * length * c.qDim, ks = k.p + s * length * c.kvDim, vs = v.p + s * length * c.kvDim
            tqk_rope(qs, Int64(length), Int64(c.heads), Int64(c.headDim), rope.cos.p, rope.sin.p)
            tqk_rope(ks, Int64(length), Int64(c.kvHeads), Int64(c.headDim), rope.cos.p, rope.sin.p)
            c.activationQuant.quantizeCache(ks, rows: length, heads: c.kvHeads, headDim: c.headDim)
            c.activationQuant.quantizeCache(vs, rows: length, heads: c.kvHeads, headDim: c.headDim)
            dtype.attention(qs, ks, vs, attn.p + s * length * c.qDim, Int64(length), Int64(c.heads), Int64(c.kvHeads),
                            Int64(c.headDim), c.attentionScale, Int64(w.attentionWindow ?? 0), c.attentionSoftcap ?? 0)
        }
    }

    /// q and k before RoPE, and v, for `rows` rows: `project` writes the three projections into the
    /// outputs it is given (q and k land in qPre and kPre when the model has q/k norms), then the
    /// biases are added and the per-head norms applied (into q and k).
    static func projectQKV(rows T: Int, config c: LlamaConfig, block w: BlockWeights, q: UnsafeMutablePointer<Float>,
                           k: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>, qPre: UnsafeMutablePointer<Float>?,
                           kPre: UnsafeMutablePointer<Float>?, project: ([UnsafeMutablePointer<Float>]) -> Void) {
        let rowsI = Int64(T), qOut = qPre ?? q, kOut = kPre ?? k
        project([qOut, kOut, v])
        if let b = w.biases {
            tqk_add_bias(qOut, b[0].p, rowsI, Int64(c.qDim))
            tqk_add_bias(kOut, b[1].p, rowsI, Int64(c.kvDim))
            tqk_add_bias(v, b[2].p, rowsI, Int64(c.kvDim))
        }
        if let n = w.qkNorms, let qPre, let kPre {
            tqk_rmsnorm(qPre, n[0].p, q, rowsI * Int64(c.heads), Int64(c.headDim), c.rmsEps)
            tqk_rmsnorm(kPre, n[1].p, k, rowsI * Int64(c.kvHeads), Int64(c.headDim), c.rmsEps)
        }
    }

    /// From dL/d attn: dq, dk, dv with respect to the projections' outputs (before the biases,
    /// which do not change them), written into the given buffers. The attention's inputs are those
    /// of the last `forward`; attention's products at `dtype`.
    func backward(_ dAttn: UnsafePointer<Float>, block w: BlockWeights, rope: RopeTables, dq: FloatBuffer, dk: FloatBuffer,
                  dv: FloatBuffer, dtype: ComputeDType = .f32) {
        let c = config, qd = c.qDim, kd = c.kvDim, L = Int64(length), rope = rope.forBlock(w)
        for s in 0..<sequences {
            let oq = s * length * qd, ok = s * length * kd
            dtype.attentionBackward(q.p + oq, k.p + ok, v.p + ok, dAttn + oq, dq.p + oq, dk.p + ok, dv.p + ok, L,
                                    Int64(c.heads), Int64(c.kvHeads), Int64(c.headDim), c.attentionScale,
                                    Int64(w.attentionWindow ?? 0), c.attentionSoftcap ?? 0)
            tqk_rope_backward(dq.p + oq, L, Int64(c.heads), Int64(c.headDim), rope.cos.p, rope.sin.p)
            tqk_rope_backward(dk.p + ok, L, Int64(c.kvHeads), Int64(c.headDim), rope.cos.p, rope.sin.p)
        }
        if let n = w.qkNorms, let qPre, let kPre {
            // In place: the kernel reads a row's dy entirely before writing its dx.
            let T = Int64(rows)
            tqk_rmsnorm_backward(qPre.p, n[0].p, dq.p, dq.p, T * Int64(c.heads), Int64(c.headDim), c.rmsEps)
            tqk_rmsnorm_backward(kPre.p, n[1].p, dk.p, dk.p, T * Int64(c.kvHeads), Int64(c.headDim), c.rmsEps)
        }
    }
}
