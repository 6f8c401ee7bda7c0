import TQKernels

/// Token-by-token inference over a `LlamaModel` with a KV cache: `prefill` runs a prompt,
/// `decode` one token at a time, each returning logits, as `LlamaModel.logits` would for the
/// whole sequence so far.
///
/// Per layer the cache holds keys (after RoPE) and values in float32 for `capacity` positions,
/// allocated once at open: 2 x layers x capacity x kv_heads x head_dim x 4 bytes. Packed linears stay
/// packed (one token: the packed GEMV, q/k/v and gate/up each in one shared-input call; several:
/// the packed GEMM); float linears are converted to float32 once, here, and kept. The session holds
/// its model strongly, so the model's handle may be freed before the session. Not thread-safe: one
/// session per thread; sessions over one model may run concurrently (the model is read-only).
public final class DecodingSession: @unchecked Sendable {
    public let model: LlamaModel
    public let capacity: Int
    /// Positions filled so far (the next token's position).
    public private(set) var position = 0
    let blocks: [SessionBlock]
    let keys, values: [FloatBuffer]
    let rope: RopeTables
    /// Rows a forward pass runs at once: prompts are taken in chunks of this many tokens.
    let chunk: Int
    let activations: BlockActivations
    let q, attn: FloatBuffer
    /// q and k before the per-head norms (models with q/k norms only).
    let qPre, kPre: FloatBuffer?
    /// Where fused packed tensors (Phi-3's stacked q/k/v, gate/up) write all their parts before the split.
    let fusedScratch: FloatBuffer?

    /// Prompts run in chunks of at most this many tokens, which bounds the activations.
    static let maxChunk = 256

    public init(model: LlamaModel, capacity: Int) throws {
        let c = model.config
        guard capacity > 0, capacity <= c.maxPositions else {
            throw TQError.invalid("max_tokens must be in [1, \(c.maxPositions)] (max_position_embeddings; got \(capacity))")
        }
        self.model = model
        self.capacity = capacity
        let chunk = min(capacity, Self.maxChunk)
        self.chunk = chunk
        let stacked = c.fusedLinears ? model.packed?.linears.map(\.out).max() : nil
        let scratch = try stacked.map { try FloatBuffer(count: chunk * $0) }
        fusedScratch = scratch
        blocks = try (0..<c.layers).map { try SessionBlock(model: model, layer: $0, scratch: scratch) }
        keys = try (0..<c.layers).map { _ in try FloatBuffer(count: capacity * c.kvDim) }
        values = try (0..<c.layers).map { _ in try FloatBuffer(count: capacity * c.kvDim) }
        rope = try RopeTables(config: c, positions: capacity)
        activations = try BlockActivations(config: c, rows: chunk)
        q = try FloatBuffer(count: chunk * c.qDim); attn = try FloatBuffer(count: chunk * c.qDim)
        qPre = c.qkNorm ? try FloatBuffer(count: chunk * c.qDim) : nil
        kPre = c.qkNorm ? try FloatBuffer(count: chunk * c.kvDim) : nil
    }

    /// Bytes of the KV cache.
    public var kvCacheBytes: Int { 2 * keys.count * capacity * model.config.kvDim * MemoryLayout<Float>.size }

    /// Bytes of the weights the session runs on: the block linears (packed, or float32 copies), the
    /// blocks' norms and biases, the embeddings and the LM head (once when tied).
    public var weightBytes: Int {
        let f = MemoryLayout<Float>.size
        let head = model.lmHead === model.embed ? 0 : model.lmHead.bytes
        return blocks.reduce(0) { $0 + $1.bytes } + model.embed.bytes + model.finalNorm.count * f + head
    }

    /// Bytes of the per-chunk activations (one layer's working set) and the RoPE tables.
    public var activationBytes: Int {
        let a = activations, f = MemoryLayout<Float>.size
        let bufs = [a.n1, a.h, a.n2, a.g, a.u, a.act, q, attn] + [a.attnOut, a.mlpOut, qPre, kPre, fusedScratch].compactMap { $0 }
        let tables = [rope.cos, rope.sin] + [rope.sliding?.cos, rope.sliding?.sin].compactMap { $0 }
        return (bufs + tables).reduce(0) { $0 + $1.count * f }
    }

    /// Runs `tokens` at the next positions. `logits` receives the last position's logits (vocab
    /// floats), or every position's (n x vocab) when `allLogits`. Nothing is written and the position
    /// is unchanged when the call is refused.
    public func prefill(_ tokens: UnsafeBufferPointer<UInt32>, allLogits: Bool = false,
                        into logits: UnsafeMutablePointer<Float>) throws {
        // The capacity first: a count larger than the cache is refused before any token is read.
        guard tokens.count <= capacity - position else {
            throw TQError.invalid("\(tokens.count) tokens do not fit: the session holds \(position) of \(capacity) positions")
        }
        try model.validate(tokens: tokens)
        let start = position, vocab = model.config.vocab
        let mark = Runtime.allocationFailures
        var done = 0
        while done < tokens.count {
            let n = min(chunk, tokens.count - done)
            let x = try model.embed(UnsafeBufferPointer(rebasing: tokens[done..<(done + n)]))
            forward(x.p, rows: n, at: start + done)
            if allLogits {
                model.applyFinalNorm(x.p, rows: n)
                try model.head(x.p, count: n, into: logits + done * vocab)
            } else if done + n == tokens.count {
                model.applyFinalNorm(x.p + (n - 1) * model.config.hidden, rows: 1)
                try model.head(x.p + (n - 1) * model.config.hidden, count: 1, into: logits)
            }
            done += n
        }
        // A kernel that could not allocate left rows unwritten: the positions are not kept.
        try Runtime.checkAllocations(since: mark, "prefill")
        position = start + tokens.count
    }

    /// Runs one token at the next position; `logits` receives its vocab logits.
    public func decode(_ token: UInt32, into logits: UnsafeMutablePointer<Float>) throws {
        var t = token
        try withUnsafePointer(to: &t) { try prefill(UnsafeBufferPointer(start: $0, count: 1), into: logits) }
    }

    /// Keeps the first `keep` positions (what follows is overwritten by the next calls).
    public func rewind(to keep: Int) throws {
        guard keep >= 0, keep <= position else {
            throw TQError.invalid("n_keep must be in [0, \(position)] (the current position; got \(keep))")
        }
        position = keep
    }

    /// All blocks on x [rows x hidden] in place, the rows being positions pos ..< pos + rows.
    private func forward(_ x: UnsafeMutablePointer<Float>, rows n: Int, at pos: Int) {
        let c = model.config, half = c.headDim / 2
        for (l, b) in blocks.enumerated() {
            let k = keys[l].p + pos * c.kvDim, v = values[l].p + pos * c.kvDim
            activations.forward(x, rows: n, block: b.weights, linears: b, into: x) { n1 in
                AttentionActivations.projectQKV(rows: n, config: c, block: b.weights, q: q.p, k: k, v: v,
                                                qPre: qPre?.p, kPre: kPre?.p) { outs in
                    b.project([.q, .k, .v], n1, rows: n, config: c, into: outs)
                }
                let r = rope.forBlock(b.weights), cos = r.cos.p + pos * half, sin = r.sin.p + pos * half
                tqk_rope(q.p, Int64(n), Int64(c.heads), Int64(c.headDim), cos, sin)
                tqk_rope(k, Int64(n), Int64(c.kvHeads), Int64(c.headDim), cos, sin)
                c.activationQuant.quantizeCache(k, rows: n, heads: c.kvHeads, headDim: c.headDim)
                c.activationQuant.quantizeCache(v, rows: n, heads: c.kvHeads, headDim: c.headDim)
                tqk_attention_cached(q.p, keys[l].p, values[l].p, attn.p, Int64(n), Int64(pos), Int64(c.heads),
                                     Int64(c.kvHeads), Int64(c.headDim), c.attentionScale,
                                     Int64(b.weights.attentionWindow ?? 0), c.attentionSoftcap ?? 0)
                return attn.p
            }
        }
    }
}

/// One block as a session runs it: its norms and biases (`weights`), and each linear either
/// packed (the checkpoint's tensor, possibly a fused one stacking several linears) or float32.
final class SessionBlock: BlockLinears {
    let weights: BlockWeights
    /// Per linear kind: the packed tensor holding its rows, or nil when it is float.
    let packed: [PackedLinear?]
    /// Per linear kind: the float32 weight, or nil when it is packed.
    let float: [FloatBuffer?]
    /// Where a fused packed tensor writes all its parts before the split (the session's, shared).
    let fusedScratch: FloatBuffer?

    init(model: LlamaModel, layer: Int, scratch: FloatBuffer?) throws {
        let c = model.config
        var fused: [String: [Float]] = [:]
        let packed = LinearKind.allCases.map { model.packed?.linear(named: $0.storage(layer: layer, config: c).prefix) }
        self.packed = packed
        float = try LinearKind.allCases.map { kind in
            packed[kind.rawValue] != nil ? nil : try model.floatLinear(kind, layer: layer, fused: &fused)
        }
        fusedScratch = scratch
        // The linears are in `packed` and `float`; `weights` carries the rest of the block.
        weights = try model.blockTensors(layer, linears: [])
    }

    var bytes: Int {
        let f = MemoryLayout<Float>.size
        var seen = Set<String>()
        let packedBytes = packed.compactMap { $0 }.filter { seen.insert($0.name).inserted }.reduce(0) { $0 + $1.packedBytes }
        let tensors = weights.floatTensors(layer: 0).reduce(0) { $0 + $1.buffer.count * f }
        return packedBytes + float.compactMap { $0 }.reduce(0) { $0 + $1.count * f } + tensors
    }

    func project(_ kinds: [LinearKind], _ x: UnsafePointer<Float>, rows: Int, config c: LlamaConfig,
                 into ys: [UnsafeMutablePointer<Float>]) {
        let layers = kinds.map { packed[$0.rawValue] }
        if let first = layers[0], kinds.count > 1, first.out > kinds[0].shape(c).out, let scratch = fusedScratch {
            // One stacked tensor holds every part: run it once and split its columns.
            run(first, x, rows: rows, into: scratch.p)
            var col = 0
            for (kind, y) in zip(kinds, ys) {
                let o = kind.shape(c).out
                for r in 0..<rows { (y + r * o).update(from: scratch.p + r * first.out + col, count: o) }
                col += o
            }
            return
        }
        if rows == 1, kinds.count > 1, layers.allSatisfy({ $0 != nil }) {
            PackedLinear.gemvMany(layers.map { $0! }, x, ys)
            return
        }
        for (k, (kind, y)) in zip(kinds, ys).enumerated() {
            if let p = layers[k] {
                run(p, x, rows: rows, into: y)
            } else {
                let (o, i) = kind.shape(c)
                linearApply(x, rows: rows, weight: float[kind.rawValue]!.p, out: o, in: i, into: y)
            }
        }
    }

    private func run(_ p: PackedLinear, _ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>) {
        if rows == 1 { p.gemv(x, y) } else { p.gemm(x, batch: rows, y) }
    }
}
