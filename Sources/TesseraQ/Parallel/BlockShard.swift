import TQKernels

/// One rank's part of a block under Megatron-style tensor parallelism: whole KV-head groups of the
/// attention (their q heads, their k and v rows, o's matching columns) and a range of the MLP's
/// intermediate channels (gate and up rows, down's matching columns). Row-split linears need no
/// communication; o and down produce partial sums, summed over the ranks after their GEMMs (twice per
/// forward), and the backward sums n2's gradient once. Quantization groups of o and down lie inside
/// one rank's columns; per-channel grids (one group per row) span the ranks instead, and their DST
/// gradients are summed so every rank keeps the same factors. In a world of one the shard is the
/// whole block and nothing is copied.
///
/// With more ranks than KV heads (LLaMA-2-70B's 8 on 16 ranks), each KV head is replicated on the
/// `kvShare` ranks that split its q heads, as Megatron does: every replica computes k and v, the
/// backward sums their gradients over the replicas (`kvSums`), so the replicas' rounding and scale
/// variables take the same steps, and the first replica alone counts in hardening and the export.
struct BlockShard {
    let world: any Collectives
    /// The whole block's configuration, and this rank's (its heads, KV heads and channels).
    let full: LlamaConfig
    let config: LlamaConfig
    let heads: Range<Int>
    let kvHeads: Range<Int>
    let ffn: Range<Int>
    let spec: QuantSpec
    /// Ranks holding each KV head (1: KV heads are split, not replicated).
    let kvShare: Int
    /// o's and down's groups span the ranks (per-channel grids).
    let sharedGroups: Bool
    var isWhole: Bool { world.size == 1 }

    init(config c: LlamaConfig, spec: QuantSpec, world: any Collectives) throws {
        self.world = world
        self.spec = spec
        full = c
        let P = world.size, r = world.rank
        guard P > 1 else {
            (config, heads, kvHeads, ffn, sharedGroups, kvShare) = (c, 0..<c.heads, 0..<c.kvHeads, 0..<c.intermediate, false, 1)
            return
        }
        let bounds = try Self.bounds(config: c, spec: spec, ranks: P)
        kvShare = bounds.kvShare
        kvHeads = kvShare == 1 ? bounds.kvHeads[r]..<bounds.kvHeads[r + 1] : (r / kvShare)..<(r / kvShare + 1)
        heads = bounds.heads[r]..<bounds.heads[r + 1]
        ffn = bounds.ffn[r]..<bounds.ffn[r + 1]
        sharedGroups = spec.groupSize <= 0
        var local = c
        local.kvHeads = kvHeads.count
        local.heads = heads.count
        local.intermediate = ffn.count
        config = local
    }

    /// Where `P` (> 1) ranks split the block: P + 1 bounds each of the q heads, the KV heads (when
    /// split, not replicated) and the intermediate channels, and the ranks holding each KV head.
    /// Throws, with the reason, for what the ranks cannot split.
    static func bounds(config c: LlamaConfig, spec: QuantSpec, ranks P: Int) throws
        -> (heads: [Int], kvHeads: [Int], ffn: [Int], kvShare: Int) {
        if c.activationQuant != nil || c.onlineHadamard {
            throw TQError.invalid("tensor parallelism (\(P) ranks) does not quantize activations or rotate online: their per-token statistics span the ranks; run without mpirun")
        }
        guard c.kvHeads >= P || (P % c.kvHeads == 0 && c.heads % P == 0) else {
            throw TQError.invalid("tensor parallelism splits attention by KV heads, or by q heads with each KV head on an equal number of ranks: \(P) ranks do not divide the model's \(c.heads) heads and \(c.kvHeads) KV heads that way")
        }
        let g = spec.groupSize
        let unit = g > 0 ? g : 1
        guard c.intermediate % unit == 0, c.intermediate / unit >= P else {
            throw TQError.invalid("tensor parallelism: intermediate_size \(c.intermediate) does not split into \(P) whole groups of \(g)")
        }
        let kvShare = max(1, P / c.kvHeads)
        let kvBounds = (0...P).map { $0 * c.kvHeads / P }
        let headBounds = kvShare == 1 ? kvBounds.map { $0 * (c.heads / c.kvHeads) } : (0...P).map { $0 * c.heads / P }
        if g > 0, let bad = headBounds.first(where: { ($0 * c.headDim) % g != 0 }) {
            throw TQError.invalid("tensor parallelism: o_proj's groups of \(g) would straddle ranks (a rank's attention starts at column \(bad * c.headDim)); choose a group size dividing a rank's \(c.headDim)-wide heads, or another rank count")
        }
        let units = c.intermediate / unit
        return (headBounds, kvBounds, (0...P).map { $0 * units / P * unit }, kvShare)
    }

    /// How this rank's block forms its sums over split dimensions. A world of one sums its block's
    /// halves as two ranks would split it (where two ranks can), so that `mpirun -np 2` reproduces
    /// the single process bit for bit: W2 training is chaotic enough that a last-bit difference in
    /// a partial sum flips hardening decisions and parts the runs as far as two seeds.
    var reduction: PartialReduction {
        let world = world
        guard isWhole else { return .ranks { world.allReduce($0, count: $1) } }
        return .twoRankHalves(config: full, spec: spec)
    }

    /// The rows (row-split linears) or columns (o, down) of `kind` this rank holds.
    func range(_ kind: LinearKind) -> Range<Int> {
        let d = full.headDim
        switch kind {
        case .q, .o: return (heads.lowerBound * d)..<(heads.upperBound * d)
        case .k, .v: return (kvHeads.lowerBound * d)..<(kvHeads.upperBound * d)
        case .gate, .up, .down: return ffn
        }
    }

    static func splitsColumns(_ kind: LinearKind) -> Bool { kind == .o || kind == .down }

    /// Whether this rank's copy of `kind` counts (in hardening's quantile and the export): a
    /// replicated KV head's first replica only.
    func counts(_ kind: LinearKind, onRank rank: Int? = nil) -> Bool {
        kvShare == 1 || (kind != .k && kind != .v) || (rank ?? world.rank) % kvShare == 0
    }

    /// Sums a replicated KV head's gradient (dk or dv, [rows x headDim]) over its replicas; nil when
    /// KV heads are not replicated. One all-reduce over every KV head's columns, each rank's in place.
    var kvSums: PartialSums? {
        guard kvShare > 1 else { return nil }
        let world = world, width = full.kvDim, local = config.kvDim, at = kvHeads.lowerBound * full.headDim
        return { g, count in
            let rows = count / local
            let all = UnsafeMutablePointer<Float>.allocate(capacity: rows * width)
            defer { all.deallocate() }
            all.initialize(repeating: 0, count: rows * width)
            for t in 0..<rows { (all + t * width + at).update(from: g + t * local, count: local) }
            world.allReduce(all, count: rows * width)
            for t in 0..<rows { (g + t * local).update(from: all + t * width + at, count: local) }
        }
    }

    /// This rank's part of the block's float tensors (norms shared).
    func block(_ fp: BlockWeights) throws -> BlockWeights {
        guard !isWhole else { return fp }
        let linears = try LinearKind.allCases.map { kind in
            let (o, i) = kind.shape(full)
            return Self.splitsColumns(kind) ? try columns(fp[kind], rows: o, cols: i, range(kind))
                                            : try rows(fp[kind], cols: i, range(kind))
        }
        let biases = try fp.biases.map { b in try zip([LinearKind.q, .k, .v], b).map { try rows($1, cols: 1, range($0)) } }
        return BlockWeights(attnNorm: fp.attnNorm, mlpNorm: fp.mlpNorm, linears: linears, biases: biases, qkNorms: fp.qkNorms,
                            attentionWindow: fp.attentionWindow, postNorms: fp.postNorms)
    }

    /// This rank's part of a whole linear's grid.
    func grid(_ q: QuantizedLinear, _ kind: LinearKind) -> QuantizedLinear {
        guard !isWhole else { return q }
        precondition(q.gIdx == nil, "tensor parallelism takes grids in natural group order")
        return Self.splitsColumns(kind) ? q.columns(range(kind), sharedGroups: sharedGroups) : q.rows(range(kind))
    }

    /// The whole linears from every rank's part (each rank gets them all).
    func gather(_ local: [QuantizedLinear]) -> [QuantizedLinear] {
        guard !isWhole else { return local }
        return zip(LinearKind.allCases, local).map { kind, q in
            let (out, inFeatures) = kind.shape(full)
            let owners = (0..<world.size).filter { counts(kind, onRank: $0) }
            func pick<T>(_ parts: [[T]]) -> [[T]] { owners.map { parts[$0] } }
            let codes = pick(world.allGather(q.codes)), scales = pick(world.allGather(q.scales)), zeros = pick(world.allGather(q.zeros))
            if !Self.splitsColumns(kind) {
                // [nGroups x out] per rank: each group's row is the ranks' rows in order.
                let outs = codes.map { $0.count / inFeatures }
                return QuantizedLinear(out: out, inFeatures: inFeatures, spec: q.spec, codes: codes.flatMap { $0 },
                                       scales: Self.interleave(scales, groups: q.nGroups, outs: outs),
                                       zeros: Self.interleave(zeros, groups: q.nGroups, outs: outs))
            }
            let widths = codes.map { $0.count / out }
            let rowsJoined = (0..<out).flatMap { o in codes.indices.flatMap { r in codes[r][(o * widths[r])..<((o + 1) * widths[r])] } }
            return QuantizedLinear(out: out, inFeatures: inFeatures, spec: q.spec, codes: rowsJoined,
                                   scales: sharedGroups ? scales[0] : scales.flatMap { $0 },
                                   zeros: sharedGroups ? zeros[0] : zeros.flatMap { $0 })
        }
    }

    /// Sums the DST gradients of groups that span the ranks (so their Adam steps agree everywhere).
    func reduceSharedGradients(_ layers: [FakeQuantLinear]) {
        guard !isWhole, sharedGroups else { return }
        for kind in [LinearKind.o, .down] { world.allReduce(layers[kind.rawValue].dv.p, count: layers[kind.rawValue].dv.count) }
    }

    /// PAR hardening at `quantile` of each whole linear. Split over ranks, the quantile's two
    /// neighbours are found exactly by bisecting on the scores' bit patterns (non-negative floats
    /// order as their bits do), a count summed over the ranks per probe: about 30 small all-reduces
    /// per round instead of gathering the block's scores.
    func harden(_ layers: [FakeQuantLinear], quantile q: Double) throws {
        guard !isWhole else {
            for l in layers { l.harden(quantile: q) }
            return
        }
        let scores = try layers.map { l in
            let s = try FloatBuffer(count: l.out * l.inFeatures)
            tqk_fq_scores(l.a.p, l.state, Int64(s.count), s.p)
            return s
        }
        // A replicated KV head's copies past the first count nothing (`counts`).
        let counted = layers.indices.map { counts(LinearKind(rawValue: $0)!) }
        let n = world.allReduce(zip(scores, counted).map { $1 ? Double($0.count) : 0 }).map { Int64($0) }
        // numpy.quantile 'linear', as tqk_fq_harden: ranks k and k + 1 (0-based) around q (n - 1).
        let pos = n.map { q * Double($0 - 1) }
        let k = zip(pos, n).map { min(max(Int64($0.rounded(.down)), 0), $1 - 1) }
        var lo = [UInt32](repeating: 0, count: 2 * layers.count)
        var hi = [UInt32](repeating: Float(0.5).bitPattern, count: 2 * layers.count)
        let want = k.flatMap { [$0 + 1, $0 + 2] }   // how many scores lie at or below each neighbour
        while zip(lo, hi).contains(where: { $0 < $1 }) {
            let mid = zip(lo, hi).map { $0 + ($1 - $0) / 2 }
            let local = mid.indices.map { j in   // settled searches need no count
                lo[j] < hi[j] && counted[j / 2]
                    ? Double(tqk_count_le(scores[j / 2].p, Int64(scores[j / 2].count), Float(bitPattern: mid[j]))) : 0
            }
            for (j, count) in world.allReduce(local).enumerated() where lo[j] < hi[j] {
                if Int64(count) >= want[j] { hi[j] = mid[j] } else { lo[j] = mid[j] + 1 }
            }
        }
        for (i, l) in layers.enumerated() {
            let below = Double(Float(bitPattern: lo[2 * i]))
            let above = k[i] + 1 > n[i] - 1 ? below : Double(Float(bitPattern: lo[2 * i + 1]))
            l.harden(between: below, above, gamma: pos[i] - Double(k[i]))
        }
    }

    /// The smallest and largest DST factor over every rank.
    func dstRange(_ layers: [FakeQuantLinear]) -> (Float, Float) {
        let mine = layers.map(\.dstRange)
        let all = world.allGather([mine.map(\.0).min()!, mine.map(\.1).max()!])
        return (all.map { $0[0] }.min()!, all.map { $0[1] }.max()!)
    }

    /// Per-rank [nGroups x outs[r]] arrays as one [nGroups x sum(outs)]: each group's row is the ranks' rows in order.
    private static func interleave<T>(_ parts: [[T]], groups: Int, outs: [Int]) -> [T] {
        (0..<groups).flatMap { g in parts.indices.flatMap { r in parts[r][(g * outs[r])..<((g + 1) * outs[r])] } }
    }

    private func rows(_ b: FloatBuffer, cols: Int, _ r: Range<Int>) throws -> FloatBuffer {
        let s = try FloatBuffer(count: r.count * cols)
        s.p.update(from: b.p + r.lowerBound * cols, count: s.count)
        return s
    }

    private func columns(_ b: FloatBuffer, rows: Int, cols: Int, _ r: Range<Int>) throws -> FloatBuffer {
        let s = try FloatBuffer(count: rows * r.count)
        for o in 0..<rows { (s.p + o * r.count).update(from: b.p + o * cols + r.lowerBound, count: r.count) }
        return s
    }
}

extension QuantizedLinear {
    /// The grid of output rows `r`.
    func rows(_ r: Range<Int>) -> QuantizedLinear {
        func pick<T>(_ a: [T]) -> [T] { (0..<nGroups).flatMap { g in a[(g * out + r.lowerBound)..<(g * out + r.upperBound)] } }
        return QuantizedLinear(out: r.count, inFeatures: inFeatures, spec: spec,
                               codes: Array(codes[(r.lowerBound * inFeatures)..<(r.upperBound * inFeatures)]),
                               scales: pick(scales), zeros: pick(zeros))
    }

    /// The grid of input columns `r`: their whole groups, or with `sharedGroups` (per-channel) the
    /// one group per row, whose scale and zero every part keeps.
    func columns(_ r: Range<Int>, sharedGroups: Bool) -> QuantizedLinear {
        let part = (0..<out).flatMap { o in codes[(o * inFeatures + r.lowerBound)..<(o * inFeatures + r.upperBound)] }
        let groups = sharedGroups ? 0..<1 : (r.lowerBound / group)..<(r.upperBound / group)
        let span = (groups.lowerBound * out)..<(groups.upperBound * out)
        return QuantizedLinear(out: out, inFeatures: r.count, spec: spec, codes: part, scales: Array(scales[span]),
                               zeros: Array(zeros[span]))
    }
}

extension PartialReduction {
    /// `halves` at the bounds two ranks split `c` at (`BlockShard.bounds`), or `whole` where two
    /// ranks cannot split it.
    public static func twoRankHalves(config c: LlamaConfig, spec: QuantSpec) -> PartialReduction {
        guard let two = try? BlockShard.bounds(config: c, spec: spec, ranks: 2) else { return .whole }
        return .halves(o: two.heads[1] * c.headDim, ffn: two.ffn[1])
    }
}
