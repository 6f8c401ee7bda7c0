import Foundation
import TQKernels

/// Which calibration rows AWQ's searches read (ALGORITHM.md section 4), from `samples`
/// sequences of `length` tokens.
struct AWQSubsample: Equatable {
    let samples: Int
    let length: Int
    /// Clip search: every `clipStep`-th token of each sequence from its first, as llmc's
    /// per-sample `x[0::L // n_sample_token]`.
    let clipStep: Int
    /// Scale search of the attention group: every `sequenceStep`-th whole sequence (causal context).
    let sequenceStep: Int
    /// Scale search of the per-token groups: every `tokenStep`-th token of the flattened set.
    let tokenStep: Int

    init(samples n: Int, length L: Int, settings: AWQSettings) {
        samples = n
        length = L
        clipStep = max(1, L / settings.clipSamples)
        sequenceStep = settings.scaleSamples > 0 ? max(1, n / settings.scaleSamples) : 1
        tokenStep = settings.scaleTokens > 0 ? max(1, n * L / settings.scaleTokens) : 1
    }

    /// Tokens of the clip search (the same count from every sequence).
    var clipTokens: Int { samples * ((length + clipStep - 1) / clipStep) }
    /// Sequences of the attention group's evaluation set.
    var sequences: Int { (samples + sequenceStep - 1) / sequenceStep }
    /// Rows of the per-token groups' evaluation set.
    var tokens: Int { (samples * length + tokenStep - 1) / tokenStep }
}

/// Everything AWQ's searches read, gathered in one full-precision forward pass over the calibration
/// chunks, so that no candidate re-runs the block: mean |x| per channel of each group's input, the
/// clip search's Gram blocks, and the scale search's evaluation set with its full-precision outputs.
final class AWQStatistics {
    let config: LlamaConfig
    let plan: AWQSubsample
    /// Sum of |x| per input channel, per scaled group.
    var absSum: [AWQGroup: [Double]] = [:]
    /// Gram blocks (tqk_awq_gram_accumulate) of the clip subsample of each group's input.
    var clipGram: [AWQGroup: FloatBuffer] = [:]
    /// The scale search's evaluation set (nil without the scale search).
    var scaleSet: AWQScaleSet?

    init(_ t: AWQTransform, block: BlockWeights, inputs: ActivationCache) throws {
        let c = t.config, L = inputs.rowsPerSample, n = t.sampleCount(inputs)
        config = c
        plan = AWQSubsample(samples: n, length: L, settings: t.settings)
        let rope = try RopeTables(config: c, positions: L)
        if t.settings.scale {
            absSum = Dictionary(uniqueKeysWithValues: t.groups.map { ($0, [Double](repeating: 0, count: $0.width(c))) })
            scaleSet = try AWQScaleSet(config: c, plan: plan, chunk: min(t.batch, n), vo: t.groups.contains(.vo), rope: rope,
                                       dtype: t.dtype, tokenCap: t.tokenCap)
        }
        if t.settings.clip {
            clipGram = Dictionary(uniqueKeysWithValues: try AWQGroup.allCases.map { gr in
                let w = gr.width(c), group = t.spec.group(forInput: w)
                return (gr, try FloatBuffer(count: (w + group - 1) / group * group * group))
            })
        }
        let x = try FloatBuffer(count: min(t.batch, n) * L * c.hidden), y = try FloatBuffer(count: x.count)
        var works: [Int: BlockWorkspace] = [:]
        var start = 0
        while start < n {
            let m = min(t.batch, n - start)
            let work = try works[m] ?? BlockWorkspace(config: c, sequences: m, length: L, rope: rope)
            works[m] = work
            inputs.gather(Array(start..<(start + m)), into: x.p)
            work.forward(x.p, weights: block, into: y.p)
            func input(_ gr: AWQGroup) -> UnsafeMutablePointer<Float> {
                switch gr {
                case .qkv: work.n1.p
                case .vo: work.attn.p
                case .gateUp: work.n2.p
                case .upDown: work.act.p
                }
            }
            for gr in absSum.keys { tqk_awq_abs_sum(input(gr), Int64(work.rows), Int64(gr.width(c)), &absSum[gr]!) }
            for (gr, gram) in clipGram {
                let w = gr.width(c)
                for s in 0..<m {
                    tqk_awq_gram_accumulate(input(gr) + s * L * w, Int64(L), Int64(w), Int64(plan.clipStep),
                                            Int64(t.spec.group(forInput: w)), gram.p)
                }
            }
            scaleSet?.collect(first: start, n1: work.n1.p, n2: work.n2.p, attn: work.attn.p, act: work.act.p, count: m)
            start += m
        }
        try scaleSet?.computeTargets(block)
    }

    /// The clip Gram blocks of `gr` as the transformed block sees its input: x / s, so G_ab / (s_a s_b).
    func rescaleClipGram(_ gr: AWQGroup, by s: [Float], group: Int) {
        guard let gram = clipGram[gr] else { return }
        let w = gr.width(config)
        for i0 in stride(from: 0, to: w, by: group) {
            let n = min(group, w - i0), g = gram.p + i0 * group
            for a in 0..<n { for b in 0..<n { g[a * group + b] /= s[i0 + a] * s[i0 + b] } }
        }
    }
}

/// The scale search's evaluation set: the inspected modules' full-precision inputs on a subsample
/// of the calibration set (whole sequences for the attention group, single tokens for the others)
/// and their full-precision outputs. Candidates are evaluated `chunk` sequences' rows at a time,
/// so the scratch stays the size of one calibration batch.
final class AWQScaleSet {
    let config: LlamaConfig
    let plan: AWQSubsample
    let chunk: Int
    let rope: RopeTables
    /// The GEMMs' and attention's precision in the candidates' forwards and the targets'.
    let dtype: ComputeDType
    /// Group inputs: n1 of the chosen sequences; n2, attention output (v_o only) and MLP activation of the chosen tokens.
    let n1, n2, act: FloatBuffer
    let attn: FloatBuffer?
    /// Full-precision outputs: o_proj on the sequences (qkv) and on the tokens (v_o), down_proj on the tokens.
    let attnSeqFP, mlpFP: FloatBuffer
    let attnTokFP: FloatBuffer?
    /// `massive_token_cap` (0: the plain MSE) and the loss weights it gives each target's rows.
    let tokenCap: Double
    private var rowWeights: [AWQGroup: FloatBuffer] = [:]
    /// Scratch for one chunk of rows (and for a last, shorter chunk of sequences).
    let attention: AttentionActivations
    let lastAttention: AttentionActivations?
    let g, u, a, out: FloatBuffer

    init(config c: LlamaConfig, plan: AWQSubsample, chunk: Int, vo: Bool, rope: RopeTables, dtype: ComputeDType,
         tokenCap: Double = 0) throws {
        config = c
        self.tokenCap = tokenCap
        self.plan = plan
        self.chunk = chunk
        self.rope = rope
        self.dtype = dtype
        let S = plan.sequences * plan.length, N = plan.tokens, R = chunk * plan.length
        n1 = try FloatBuffer(count: S * c.hidden); attnSeqFP = try FloatBuffer(count: S * c.hidden)
        n2 = try FloatBuffer(count: N * c.hidden); mlpFP = try FloatBuffer(count: N * c.hidden)
        act = try FloatBuffer(count: N * c.intermediate)
        attn = vo ? try FloatBuffer(count: N * c.qDim) : nil
        attnTokFP = vo ? try FloatBuffer(count: N * c.hidden) : nil
        attention = try AttentionActivations(config: c, sequences: chunk, length: plan.length)
        let rest = plan.sequences % chunk
        lastAttention = rest > 0 ? try AttentionActivations(config: c, sequences: rest, length: plan.length) : nil
        g = try FloatBuffer(count: R * c.intermediate); u = try FloatBuffer(count: R * c.intermediate)
        a = try FloatBuffer(count: R * c.intermediate); out = try FloatBuffer(count: R * c.hidden)
    }

    /// Copies the chosen rows of one forward chunk (`count` sequences from sequence `first`).
    func collect(first: Int, n1 x1: UnsafePointer<Float>, n2 x2: UnsafePointer<Float>, attn xa: UnsafePointer<Float>,
                 act xm: UnsafePointer<Float>, count: Int) {
        let c = config, L = plan.length, d = c.hidden
        for s in first..<(first + count) where s % plan.sequenceStep == 0 {
            (n1.p + (s / plan.sequenceStep) * L * d).update(from: x1 + (s - first) * L * d, count: L * d)
        }
        for t in stride(from: (first * L + plan.tokenStep - 1) / plan.tokenStep * plan.tokenStep, to: (first + count) * L,
                        by: plan.tokenStep) {
            let r = t - first * L, j = t / plan.tokenStep
            (n2.p + j * d).update(from: x2 + r * d, count: d)
            (act.p + j * c.intermediate).update(from: xm + r * c.intermediate, count: c.intermediate)
            attn.map { ($0.p + j * c.qDim).update(from: xa + r * c.qDim, count: c.qDim) }
        }
    }

    /// The full-precision outputs (the MLP's from the collected activation: down_proj alone).
    func computeTargets(_ block: BlockWeights) throws {
        let w = { (k: LinearKind) in UnsafePointer(block[k].p) }
        forEachChunk(.qkv) { r in run(.qkv, w, block, rows: r); copy(out, to: attnSeqFP, rows: r, width: config.hidden) }
        if let attnTokFP {
            forEachChunk(.vo) { r in run(.vo, w, block, rows: r); copy(out, to: attnTokFP, rows: r, width: config.hidden) }
        }
        forEachChunk(.upDown) { r in run(.upDown, w, block, rows: r); copy(out, to: mlpFP, rows: r, width: config.hidden) }
        guard tokenCap > 0 else { return }
        // One weight per target row, the median over the whole set (gate_up and up_down share mlpFP's).
        for gr in [AWQGroup.qkv, .vo, .upDown] where gr != .vo || attnTokFP != nil {
            let rows = gr == .qkv ? plan.sequences * plan.length : plan.tokens, wts = try FloatBuffer(count: rows)
            tqk_row_sumsq(target(gr).p, Int64(rows), Int64(config.hidden), wts.p)
            BlockTrainer.capTokenWeights(wts.p, rows: rows, cap: tokenCap)
            rowWeights[gr] = wts
        }
        rowWeights[.gateUp] = rowWeights[.upDown]
    }

    /// The full-precision output `gr`'s candidates are compared with.
    private func target(_ gr: AWQGroup) -> FloatBuffer {
        switch gr {
        case .qkv: attnSeqFP
        case .vo: attnTokFP!
        case .gateUp, .upDown: mlpFP
        }
    }

    /// Sum over the set of the squared difference between the inspected module's output with the
    /// weights `w` and its full-precision output (each row weighted as `massive_token_cap` sets).
    func squaredError(_ gr: AWQGroup, _ w: (LinearKind) -> UnsafePointer<Float>, block: BlockWeights) -> Double {
        let y = target(gr), weights = rowWeights[gr]
        var sum = 0.0
        forEachChunk(gr) { r in
            run(gr, w, block, rows: r)
            sum += tqk_l2_loss(out.p, y.p + r.lowerBound * config.hidden, Int64(r.count), Int64(config.hidden),
                               weights.map { UnsafePointer($0.p + r.lowerBound) }, nil) * Double(r.count)
        }
        return sum
    }

    /// Output elements of `gr`'s evaluation set (the loss's mean is over them).
    func elements(_ gr: AWQGroup) -> Int {
        (gr == .qkv ? plan.sequences * plan.length : plan.tokens) * config.hidden
    }

    /// Runs `body` on the row ranges of `gr`'s set, a chunk at a time (whole sequences for qkv).
    private func forEachChunk(_ gr: AWQGroup, _ body: (Range<Int>) -> Void) {
        let rows = gr == .qkv ? plan.sequences * plan.length : plan.tokens, R = chunk * plan.length
        for r0 in stride(from: 0, to: rows, by: R) { body(r0..<min(r0 + R, rows)) }
    }

    private func copy(_ src: FloatBuffer, to dst: FloatBuffer, rows r: Range<Int>, width: Int) {
        (dst.p + r.lowerBound * width).update(from: src.p, count: r.count * width)
    }

    /// out = the inspected module of `gr` on `rows` of its input, with weights `w`.
    private func run(_ gr: AWQGroup, _ w: (LinearKind) -> UnsafePointer<Float>, _ block: BlockWeights, rows r: Range<Int>) {
        let c = config, T = r.count
        switch gr {
        case .qkv:
            let att = T == attention.rows ? attention : lastAttention!
            att.forward(n1.p + r.lowerBound * c.hidden, q: w(.q), k: w(.k), v: w(.v), block: block, rope: rope, dtype: dtype)
            linearForward(att.attn.p, rows: T, weight: w(.o), out: c.hidden, in: c.qDim, into: out.p, dtype: dtype)
        case .vo:
            linearForward(attn!.p + r.lowerBound * c.qDim, rows: T, weight: w(.o), out: c.hidden, in: c.qDim, into: out.p,
                          dtype: dtype)
        case .gateUp:
            let x = n2.p + r.lowerBound * c.hidden
            linearForward(x, rows: T, weight: w(.gate), out: c.intermediate, in: c.hidden, into: g.p, dtype: dtype)
            linearForward(x, rows: T, weight: w(.up), out: c.intermediate, in: c.hidden, into: u.p, dtype: dtype)
            c.activation.forward(g.p, u.p, into: a.p, count: T * c.intermediate)
            linearForward(a.p, rows: T, weight: w(.down), out: c.hidden, in: c.intermediate, into: out.p, dtype: dtype)
        case .upDown:
            linearForward(act.p + r.lowerBound * c.intermediate, rows: T, weight: w(.down), out: c.hidden, in: c.intermediate,
                          into: out.p, dtype: dtype)
        }
    }
}
