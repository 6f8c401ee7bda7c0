import TQKernels

/// One decoder block run over `sequences` independent sequences of `length` tokens each
/// (rows laid out sequence after sequence). Forward keeps the activations the backward pass
/// needs; backward turns dL/dY into dL/dW for the seven linears.
///
///   h = x + o(attn(rope(q(n1)), rope(k(n1)), v(n1))),  n1 = rmsnorm1(x)
///   y = h + down(act(gate(n2)) * up(n2)),               n2 = rmsnorm2(h)
/// act silu or Gemma's tanh GELU; q/k/v biases and per-head q/k norms where the model has them
/// (`AttentionActivations`). With Gemma's sandwich norms the two sub-layer outputs are normed before
/// the adds: h = x + rmsnorm(o(...)), y = h + rmsnorm(down(...)).
public final class BlockWorkspace: @unchecked Sendable {
    public let config: LlamaConfig
    public let sequences: Int
    public let length: Int
    /// The GEMMs' precision, attention's included (forward and backward).
    public let compute: ComputeDType
    public var rows: Int { sequences * length }
    let rope: RopeTables
    let attention: AttentionActivations
    let activations: BlockActivations
    var n1: FloatBuffer { activations.n1 }
    var h: FloatBuffer { activations.h }
    var n2: FloatBuffer { activations.n2 }
    var g: FloatBuffer { activations.g }
    var u: FloatBuffer { activations.u }
    var act: FloatBuffer { activations.act }
    var attnOut: FloatBuffer? { activations.attnOut }
    var mlpOut: FloatBuffer? { activations.mlpOut }
    /// The attention output before o_proj (o_proj's input).
    var attn: FloatBuffer { attention.attn }
    /// How o's and down's outputs (forward) and n2's gradient (backward) are summed over their
    /// split dimensions (`PartialReduction`).
    let partial: PartialProducts
    /// Tensor parallelism with KV heads replicated over ranks: sums dk and dv over the replicas.
    public var kvSums: PartialSums?

    public init(config c: LlamaConfig, sequences: Int, length: Int, rope: RopeTables? = nil,
                compute: ComputeDType = .f32, reduction: PartialReduction = .whole) throws {
        config = c
        self.sequences = sequences
        self.length = length
        self.compute = compute
        partial = try PartialProducts(reduction, rows: sequences * length, width: c.hidden)
        self.rope = try rope ?? RopeTables(config: c, positions: length)
        attention = try AttentionActivations(config: c, sequences: sequences, length: length)
        activations = try BlockActivations(config: c, rows: sequences * length)
    }

    /// x [rows x hidden] -> y, written to `y` (which may be `x`).
    public func forward(_ x: UnsafePointer<Float>, weights w: BlockWeights, into y: UnsafeMutablePointer<Float>) {
        activations.forward(x, rows: rows, block: w, linears: FloatLinears(weights: w, dtype: compute, partial: partial),
                            into: y) { n1 in
            attention.forward(n1, q: w[.q].p, k: w[.k].p, v: w[.v].p, block: w, rope: rope, dtype: compute)
            return attention.attn.p
        }
    }
}

/// How a block's linears run: float weights through the GEMM (`FloatLinears`), or packed ones
/// (`DecodingSession`).
protocol BlockLinears {
    /// ys[k] [rows x out_k] = x [rows x in] W_k^T for `kinds`, which share their input x.
    func project(_ kinds: [LinearKind], _ x: UnsafePointer<Float>, rows: Int, config: LlamaConfig,
                 into ys: [UnsafeMutablePointer<Float>])
}

/// Sums `count` floats in place over the ranks of a tensor-parallel block.
public typealias PartialSums = (UnsafeMutablePointer<Float>, Int) -> Void

/// How a block forms its sums over the dimensions tensor parallelism splits: o's and down's outputs
/// (over their input columns) and n2's gradient (over the intermediate channels).
public enum PartialReduction {
    /// The whole block, one GEMM each.
    case whole
    /// A tensor-parallel rank (`BlockShard`): its own part's products, summed over the ranks.
    case ranks(PartialSums)
    /// The whole block summed as two ranks sum it: o's columns parted at `o`, the channels at `ffn`,
    /// each part's GEMMs run alone and the two results added. Two addends sum alike in either order,
    /// so a two-rank run's all-reduce gives exactly these bits.
    case halves(o: Int, ffn: Int)
}

/// A `PartialReduction` with the scratch its halves need (rows x width).
struct PartialProducts {
    enum Dimension { case attention, channels }
    let reduction: PartialReduction
    private let scratch: FloatBuffer?

    init(_ reduction: PartialReduction, rows: Int, width: Int) throws {
        self.reduction = reduction
        if case .halves = reduction { scratch = try FloatBuffer(count: rows * width) } else { scratch = nil }
    }

    /// y [count floats] = the sum over `dimension`'s `extent` of `product(range, into)`, which writes
    /// the products over `range` alone.
    func sum(over dimension: Dimension, extent: Int, into y: UnsafeMutablePointer<Float>, count: Int,
             _ product: (Range<Int>, UnsafeMutablePointer<Float>) -> Void) {
        switch reduction {
        case .whole:
            product(0..<extent, y)
        case .ranks(let sums):
            product(0..<extent, y)
            sums(y, count)
        case .halves(let o, let ffn):
            let split = dimension == .attention ? o : ffn, other = scratch!.p
            product(0..<split, y)
            product(split..<extent, other)
            tqk_add(y, other, Int64(count))
        }
    }
}

/// A block's float weights through the GEMM of `dtype`; o's and down's outputs summed over their
/// input columns as `partial` sums them.
struct FloatLinears: BlockLinears {
    let weights: BlockWeights
    let dtype: ComputeDType
    let partial: PartialProducts

    func project(_ kinds: [LinearKind], _ x: UnsafePointer<Float>, rows: Int, config: LlamaConfig,
                 into ys: [UnsafeMutablePointer<Float>]) {
        for (kind, y) in zip(kinds, ys) {
            let (o, i) = kind.shape(config)
            guard kind == .o || kind == .down else {
                linearForward(x, rows: rows, weight: weights[kind].p, out: o, in: i, into: y, dtype: dtype)
                continue
            }
            let w = weights[kind].p, gemm = dtype.gemm
            partial.sum(over: kind == .o ? .attention : .channels, extent: i, into: y, count: rows * o) { r, out in
                gemm(0, 1, Int64(rows), Int64(o), Int64(r.count), 1, x + r.lowerBound, Int64(i), w + r.lowerBound, Int64(i), 0, out, Int64(o))
            }
        }
    }
}

/// The activations of a block outside attention, for up to `capacity` rows, and the block's
/// residual structure around the attention (shared by training, evaluation and decoding).
final class BlockActivations: @unchecked Sendable {
    let config: LlamaConfig
    let capacity: Int
    let n1, h, n2, g, u, act: FloatBuffer
    /// o_proj's and down_proj's outputs before their post-norms (sandwich-norm blocks only).
    let attnOut, mlpOut: FloatBuffer?
    /// QuaRot's online Hadamard on down_proj's input (`LlamaConfig.onlineHadamard`).
    let online: HadamardTransform?

    init(config c: LlamaConfig, rows T: Int) throws {
        config = c
        capacity = T
        n1 = try FloatBuffer(count: T * c.hidden); h = try FloatBuffer(count: T * c.hidden); n2 = try FloatBuffer(count: T * c.hidden)
        g = try FloatBuffer(count: T * c.intermediate); u = try FloatBuffer(count: T * c.intermediate)
        act = try FloatBuffer(count: T * c.intermediate)
        attnOut = c.sandwichNorms ? try FloatBuffer(count: T * c.hidden) : nil
        mlpOut = c.sandwichNorms ? try FloatBuffer(count: T * c.hidden) : nil
        online = c.onlineHadamard ? try HadamardTransform(size: c.intermediate) : nil
    }

    /// y = block(x) for `rows` rows (y may be x): `attention` maps n1 to o_proj's input; `w` gives
    /// the norms, `linears` runs o, gate, up and down. Every linear's input is fake-quantized in place
    /// where the model quantizes activations (so the backward's dW sees what the forward used).
    func forward(_ x: UnsafePointer<Float>, rows T: Int, block w: BlockWeights, linears: some BlockLinears,
                 into y: UnsafeMutablePointer<Float>, attention: (UnsafePointer<Float>) -> UnsafeMutablePointer<Float>) {
        precondition(T <= capacity, "more rows than the activations hold")
        let c = config, d = c.hidden, rowsI = Int64(T), aq = c.activationQuant
        tqk_rmsnorm(x, w.attnNorm.p, n1.p, rowsI, Int64(d), c.rmsEps)
        aq.quantizeInput(n1.p, rows: T, cols: d)
        let attn = attention(n1.p)
        aq.quantizeInput(attn, rows: T, cols: c.qDim)
        // h = x + o(attn); computed in h so that y may alias x.
        linears.project([.o], attn, rows: T, config: c, into: [(attnOut ?? h).p])
        if let post = w.postNorms, let attnOut { tqk_rmsnorm(attnOut.p, post[0].p, h.p, rowsI, Int64(d), c.rmsEps) }
        tqk_add(h.p, x, rowsI * Int64(d))
        tqk_rmsnorm(h.p, w.mlpNorm.p, n2.p, rowsI, Int64(d), c.rmsEps)
        aq.quantizeInput(n2.p, rows: T, cols: d)
        linears.project([.gate, .up], n2.p, rows: T, config: c, into: [g.p, u.p])
        c.activation.forward(g.p, u.p, into: act.p, count: T * c.intermediate)
        online?.apply(act.p, rows: T)
        aq.quantizeInput(act.p, rows: T, cols: c.intermediate)
        linears.project([.down], act.p, rows: T, config: c, into: [mlpOut?.p ?? y])
        if let post = w.postNorms, let mlpOut { tqk_rmsnorm(mlpOut.p, post[1].p, y, rowsI, Int64(d), c.rmsEps) }
        tqk_add(y, h.p, rowsI * Int64(d))
    }
}

/// Gradients of a block's linears, and the scratch the backward pass needs.
public final class BlockGradients: @unchecked Sendable {
    /// dL/dW per linear (out x in), indexed by `LinearKind.rawValue`.
    public let dW: [FloatBuffer]
    let dact, dg, du, dn2, dh, dattn, dq, dk, dv: FloatBuffer
    /// dL/d of down_proj's and o_proj's outputs before their post-norms (sandwich-norm blocks only).
    let dMlpOut, dAttnOut: FloatBuffer?

    public init(config c: LlamaConfig, rows T: Int) throws {
        dW = try LinearKind.allCases.map { let (o, i) = $0.shape(c); return try FloatBuffer(count: o * i) }
        dact = try FloatBuffer(count: T * c.intermediate); dg = try FloatBuffer(count: T * c.intermediate)
        du = try FloatBuffer(count: T * c.intermediate)
        dn2 = try FloatBuffer(count: T * c.hidden); dh = try FloatBuffer(count: T * c.hidden)
        dattn = try FloatBuffer(count: T * c.qDim); dq = try FloatBuffer(count: T * c.qDim)
        dk = try FloatBuffer(count: T * c.kvDim); dv = try FloatBuffer(count: T * c.kvDim)
        dMlpOut = c.sandwichNorms ? try FloatBuffer(count: T * c.hidden) : nil
        dAttnOut = c.sandwichNorms ? try FloatBuffer(count: T * c.hidden) : nil
    }

    public subscript(kind: LinearKind) -> FloatBuffer { dW[kind.rawValue] }
}

extension BlockWorkspace {
    /// dL/dW of every linear from dL/dY, using the activations of the last `forward`.
    /// (The block input's gradient is not needed: inputs are data, not parameters.) Quantized
    /// activations pass their gradient straight through (STE), so they need no step here.
    public func backward(_ dY: UnsafePointer<Float>, weights w: BlockWeights, into grads: BlockGradients) {
        let c = config, d = c.hidden, f = c.intermediate, qd = c.qDim, kd = c.kvDim, gemm = compute.gemm
        let T = Int64(rows), D = Int64(d), F = Int64(f), QD = Int64(qd), KD = Int64(kd)
        // y = h + m (m = act Wd^T, or its post-norm)
        var dm = dY
        if let post = w.postNorms, let mlpOut, let dOut = grads.dMlpOut {
            tqk_rmsnorm_backward(mlpOut.p, post[1].p, dY, dOut.p, T, D, c.rmsEps)
            dm = UnsafePointer(dOut.p)
        }
        gemm(1, 0, D, F, T, 1, dm, D, act.p, F, 0, grads[.down].p, F)
        gemm(0, 0, T, F, D, 1, dm, D, w[.down].p, F, 0, grads.dact.p, F)
        activations.online?.applyTransposed(grads.dact.p, rows: rows)   // act' = act H: dact = dact' H^T
        c.activation.backward(g.p, u.p, dout: grads.dact.p, dg: grads.dg.p, du: grads.du.p, count: rows * f)
        // g = n2 Wg^T, u = n2 Wu^T
        gemm(1, 0, F, D, T, 1, grads.dg.p, F, n2.p, D, 0, grads[.gate].p, D)
        gemm(1, 0, F, D, T, 1, grads.du.p, F, n2.p, D, 0, grads[.up].p, D)
        partial.sum(over: .channels, extent: f, into: grads.dn2.p, count: rows * d) { r, out in
            let k = Int64(r.count), lo = r.lowerBound
            gemm(0, 0, T, D, k, 1, grads.dg.p + lo, F, w[.gate].p + lo * d, D, 0, out, D)
            gemm(0, 0, T, D, k, 1, grads.du.p + lo, F, w[.up].p + lo * d, D, 1, out, D)
        }
        // n2 = rmsnorm(h); dh = dY + d(rmsnorm)
        tqk_rmsnorm_backward(h.p, w.mlpNorm.p, grads.dn2.p, grads.dh.p, T, D, c.rmsEps)
        tqk_add(grads.dh.p, dY, T * D)
        // h = x + a (a = attn Wo^T, or its post-norm)
        var da = UnsafePointer(grads.dh.p)
        if let post = w.postNorms, let attnOut, let dOut = grads.dAttnOut {
            tqk_rmsnorm_backward(attnOut.p, post[0].p, grads.dh.p, dOut.p, T, D, c.rmsEps)
            da = UnsafePointer(dOut.p)
        }
        gemm(1, 0, D, QD, T, 1, da, D, attn.p, QD, 0, grads[.o].p, QD)
        gemm(0, 0, T, QD, D, 1, da, D, w[.o].p, QD, 0, grads.dattn.p, QD)
        attention.backward(grads.dattn.p, block: w, rope: rope, dq: grads.dq, dk: grads.dk, dv: grads.dv,
                           dtype: compute)
        kvSums?(grads.dk.p, rows * kd)
        kvSums?(grads.dv.p, rows * kd)
        // q, k, v = n1 W^T
        gemm(1, 0, QD, D, T, 1, grads.dq.p, QD, n1.p, D, 0, grads[.q].p, D)
        gemm(1, 0, KD, D, T, 1, grads.dk.p, KD, n1.p, D, 0, grads[.k].p, D)
        gemm(1, 0, KD, D, T, 1, grads.dv.p, KD, n1.p, D, 0, grads[.v].p, D)
    }
}
