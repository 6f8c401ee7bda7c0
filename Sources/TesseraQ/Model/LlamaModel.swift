import Foundation
import TQKernels

/// A LLaMA-family checkpoint opened for inference: float (F32/F16/BF16) or GPTQ packed.
/// The safetensors files stay memory-mapped; a block's weights are converted (or dequantised)
/// to float32 only while that block runs.
public final class LlamaModel: @unchecked Sendable {
    public let directory: String
    public let config: LlamaConfig
    public let store: TensorStore
    /// The packed linears when the directory is a GPTQ checkpoint.
    public let packed: PackedCheckpoint?
    /// Applied to each block's weights after loading (simulated quantization in tests, AWQ folding).
    public var blockTransform: ((Int, BlockWeights) throws -> Void)?
    let embed: TokenMatrix
    let finalNorm: FloatBuffer
    let lmHead: TokenMatrix
    /// Gemma's embedding multiplier sqrt(hidden), rounded to the embedding's dtype as transformers
    /// rounds it (its `normalizer`); nil for models that do not scale embeddings.
    let embedScale: Float?

    public init(directory: String, options: ModelOptions = ModelOptions()) throws {
        try Runtime.requireSupportedCPU()
        self.directory = directory
        let configPath = directory + "/config.json"
        let json = try JSONValue.parseFile(configPath)
        config = try LlamaConfig(json: json, path: configPath)
        let store = try TensorStore(directory: directory)
        self.store = store
        packed = try GPTQConfig(configJSON: json, path: configPath).map { try PackedCheckpoint(store: store, quantization: $0) }
        let c = config
        try store.requireFloat("model.embed_tokens.weight", shape: [c.vocab, c.hidden])
        try store.requireFloat("model.norm.weight", shape: [c.hidden])
        for l in 0..<c.layers {
            for name in BlockWeights.normNames(sandwich: c.sandwichNorms) {
                try store.requireFloat("model.layers.\(l)." + name, shape: [c.hidden])
            }
            for kind in LinearKind.allCases {
                let i = kind.shape(c).in, (prefix, _, o) = kind.storage(layer: l, config: c)
                if let p = packed?.linear(named: prefix) {
                    guard p.out == o, p.inFeatures == i else {
                        throw TQError.format("\(directory): \(prefix) is packed as \(p.out) x \(p.inFeatures) but config.json implies \(o) x \(i)")
                    }
                } else {
                    try store.requireFloat(prefix + ".weight", shape: [o, i])
                }
            }
            if c.qkvBias {
                for kind in [LinearKind.q, .k, .v] {
                    try store.requireFloat(kind.prefix(layer: l) + ".bias", shape: [kind.shape(c).out])
                }
            }
            if c.qkNorm {
                for name in BlockWeights.qkNormNames { try store.requireFloat("model.layers.\(l)." + name, shape: [c.headDim]) }
            }
        }
        embed = try TokenMatrix(store, "model.embed_tokens.weight", rows: c.vocab, dim: c.hidden)
        finalNorm = try FloatBuffer(try Self.norm(store, "model.norm.weight", config: c))
        embedScale = c.scalesEmbeddings
            ? Self.rounded(Float(Double(c.hidden).squareRoot()), to: store.info("model.embed_tokens.weight")!.dtype) : nil
        let head: TokenMatrix
        if store.info("lm_head.weight") != nil {
            try store.requireFloat("lm_head.weight", shape: [c.vocab, c.hidden])
            head = try TokenMatrix(store, "lm_head.weight", rows: c.vocab, dim: c.hidden)
        } else if c.tiedEmbeddings {
            head = embed
        } else {
            throw TQError.format("\(directory): missing tensor lm_head.weight (tie_word_embeddings is false)")
        }
        switch options.lmHead {
        case .checkpoint: lmHead = head
        case .w8: lmHead = try TokenMatrix(packing: head, spec: ModelOptions.headSpec, name: "lm_head")
        }
    }

    /// A norm weight as the kernels use it: the multiplier, i.e. 1 + w where the checkpoint stores
    /// offsets from 1 (Gemma; in float32, as transformers adds them).
    static func norm(_ store: TensorStore, _ name: String, config: LlamaConfig) throws -> [Float] {
        let w = try store.floats(name)
        return config.normWeightOffset == 0 ? w : w.map { $0 + config.normWeightOffset }
    }

    /// x rounded to a float dtype (bf16, f16) and back; f32 and others unchanged.
    static func rounded(_ x: Float, to dtype: DType) -> Float {
        var v = x, h: UInt16 = 0
        switch dtype {
        case .bf16: tqk_f32_to_bf16(&v, &h, 1); tqk_bf16_to_f32(&h, &v, 1)
        case .f16: tqk_f32_to_f16(&v, &h, 1); tqk_f16_to_f32(&h, &v, 1)
        default: break
        }
        return v
    }

    /// Block `layer`'s weights in float32 (packed linears dequantised), after `blockTransform`.
    public func loadBlock(_ layer: Int) throws -> BlockWeights {
        var fused: [String: [Float]] = [:]   // a fused tensor is read once for all its parts
        let linears = try LinearKind.allCases.map { try floatLinear($0, layer: layer, fused: &fused) }
        let block = try blockTensors(layer, linears: linears)
        try blockTransform?(layer, block)
        return block
    }

    /// One linear of block `layer` in float32: dequantised when packed, cut from its fused tensor
    /// (read once into `fused`) when the model fuses it.
    func floatLinear(_ kind: LinearKind, layer: Int, fused: inout [String: [Float]]) throws -> FloatBuffer {
        let (o, i) = kind.shape(config), (prefix, offset, rows) = kind.storage(layer: layer, config: config)
        if let q = packed?.linear(named: prefix) {
            let w = try FloatBuffer(count: o * i)
            q.dequantize(rows: offset..<(offset + o), into: w.p)
            return w
        } else if rows == o {
            return try store.floatBuffer(prefix + ".weight")
        }
        if fused[prefix] == nil { fused[prefix] = try store.floats(prefix + ".weight") }
        return try FloatBuffer(Array(fused[prefix]![(offset * i)..<((offset + o) * i)]))
    }

    /// Block `layer` with the given linears and its own norms, biases, q/k norms and window.
    func blockTensors(_ layer: Int, linears: [FloatBuffer]) throws -> BlockWeights {
        let p = "model.layers.\(layer)."
        let biases = config.qkvBias
            ? try [LinearKind.q, .k, .v].map { try FloatBuffer(try store.floats($0.prefix(layer: layer) + ".bias")) }
            : nil
        let norm = { (name: String) in try FloatBuffer(try Self.norm(self.store, p + name, config: self.config)) }
        let qkNorms = config.qkNorm ? try BlockWeights.qkNormNames.map(norm) : nil
        let norms = try BlockWeights.normNames(sandwich: config.sandwichNorms).map(norm)
        return BlockWeights(attnNorm: norms[0], mlpNorm: norms[1], linears: linears, biases: biases, qkNorms: qkNorms,
                            attentionWindow: config.window(layer: layer), postNorms: norms.count > 2 ? Array(norms[2...]) : nil)
    }

    func validate(tokens: UnsafeBufferPointer<UInt32>) throws {
        guard !tokens.isEmpty else { throw TQError.invalid("no tokens") }
        if let bad = tokens.firstIndex(where: { Int($0) >= config.vocab }) {
            throw TQError.invalid("token \(tokens[bad]) at position \(bad) is outside the vocabulary (\(config.vocab))")
        }
    }

    /// Token embeddings [T x hidden] of one sequence (times `embedScale` where the model scales them).
    public func embed(_ tokens: UnsafeBufferPointer<UInt32>) throws -> FloatBuffer {
        let x = try FloatBuffer(count: tokens.count * config.hidden)
        embed.gather(tokens, into: x.p)
        if let embedScale { for i in 0..<x.count { x.p[i] *= embedScale } }
        return x
    }

    /// Lets the embeddings' pages (and the head's) leave the resident set, when they are read in
    /// place from the checkpoint's map: a calibrated run embeds its windows once and is done with them.
    func releaseEmbeddingPages() {
        embed.releasePages()
        lmHead.releasePages()
    }

    /// The embeddings' and head's bytes held in memory for the model's lifetime (not those read in
    /// place from the map).
    var heldEmbeddingBytes: Int {
        (embed.isMapped ? 0 : embed.bytes) + (lmHead === embed || lmHead.isMapped ? 0 : lmHead.bytes)
    }

    /// Final hidden states (after the last norm) of one sequence, [T x hidden].
    public func finalHidden(_ tokens: UnsafeBufferPointer<UInt32>) throws -> FloatBuffer {
        try validate(tokens: tokens)
        let T = tokens.count
        let x = try embed(tokens)
        let work = try BlockWorkspace(config: config, sequences: 1, length: T)
        for l in 0..<config.layers {
            work.forward(x.p, weights: try loadBlock(l), into: x.p)
        }
        applyFinalNorm(x.p, rows: T)
        return x
    }

    /// The last RMSNorm, in place on `rows` hidden states.
    func applyFinalNorm(_ x: UnsafeMutablePointer<Float>, rows: Int) {
        tqk_rmsnorm(x, finalNorm.p, x, Int64(rows), Int64(config.hidden), config.rmsEps)
    }

    /// Logits of rows [row, row + n) of `hidden` into out [n x vocab], soft-capped where the model caps them.
    func head(_ hidden: FloatBuffer, row: Int, count n: Int, into out: UnsafeMutablePointer<Float>) throws {
        try head(hidden.p + row * config.hidden, count: n, into: out)
    }

    /// Logits of n hidden rows into out [n x vocab].
    func head(_ hidden: UnsafePointer<Float>, count n: Int, into out: UnsafeMutablePointer<Float>) throws {
        try lmHead.apply(hidden, rows: n, into: out)
        if let cap = config.finalSoftcap { tqk_softcap(out, Int64(n * config.vocab), cap) }
    }

    /// Logits [T x vocab] of one sequence.
    public func logits(_ tokens: UnsafeBufferPointer<UInt32>, into out: UnsafeMutablePointer<Float>) throws {
        let h = try finalHidden(tokens)
        try head(h, row: 0, count: tokens.count, into: out)
    }

    /// Sum of next-token negative log-likelihoods over positions 0 ..< T-1 of one sequence.
    public func nextTokenNLL(_ tokens: UnsafeBufferPointer<UInt32>) throws -> Double {
        let h = try finalHidden(tokens)
        let chunk = 256
        let buf = try FloatBuffer(count: chunk * config.vocab)
        var total = 0.0
        var r = 0
        while r < tokens.count - 1 {
            let n = min(chunk, tokens.count - 1 - r)
            try head(h, row: r, count: n, into: buf.p)
            total += tqk_nll_sum(buf.p, tokens.baseAddress! + r + 1, Int64(n), Int64(config.vocab))
            r += n
        }
        return total
    }
}
