import Foundation

/// QuaRot's rotations (Ashkboos et al. 2024) of a float model, which leave the function unchanged:
/// every RMSNorm's weight is folded into the linears that read it (the norms become weightless),
/// the residual stream is rotated by a randomised Hadamard matrix Q1 (embeddings, the linears that
/// read or write the stream, the LM head), each head's values by Q2 (v_proj's rows, o_proj's
/// columns), and down_proj's input by a plain Hadamard H4 that the forward pass applies at run
/// time (`LlamaConfig.onlineHadamard`). Orthogonal Q keep RMSNorm exact: rms(x Q) = rms(x).
/// Without a Hadamard matrix of intermediate_size here (stories260K's 172, LLaMA-2's 11008 = 172 x 64:
/// order 172 is not a Paley order), down_proj's input stays unrotated, and `json` says so.
public struct ModelRotation {
    public let model: LlamaModel
    public let seed: UInt64
    let q1, q2: HadamardTransform
    let h4: HadamardTransform?

    /// Refuses what the rotation cannot fold (names the reason) and sizes without a Hadamard matrix.
    public init(model: LlamaModel, seed: UInt64) throws {
        let c = model.config
        guard model.packed == nil else { throw TQError.invalid("rotate: \(model.directory) is already quantized") }
        guard !c.onlineHadamard else { throw TQError.invalid("rotate: \(model.directory) is already rotated") }
        guard !c.sandwichNorms else {
            throw TQError.unsupported("rotate: \(c.modelType) norms the sub-layer outputs on the residual stream (post-norms), which a rotation cannot fold")
        }
        guard !c.fusedLinears else { throw TQError.unsupported("rotate: fused q/k/v and gate/up linears (\(c.modelType)) are not supported") }
        self.model = model
        self.seed = seed
        h4 = try? HadamardTransform(size: c.intermediate)
        do {
            q1 = try HadamardTransform(size: c.hidden, seed: seed)
            q2 = try HadamardTransform(size: c.headDim, seed: seed &+ 1)
        } catch let e as TQError {
            throw TQError(e.kind, "rotate: \(e.message)")
        }
    }

    /// What config.json records (`tesseraq.rotation`).
    public var json: [String: Any] { ["type": "hadamard", "seed": Int(seed), "online_hadamard": h4 == nil ? "none" : "down_proj"] }

    /// The rotated model as a float32 checkpoint in `outDir` (staged, renamed into place): untied
    /// embeddings and LM head, unit norms, the rotated linears, config.json with `tesseraq.rotation`.
    public func write(to outDir: String) throws {
        let c = model.config, store = model.store
        var tensors: [String: (shape: [Int], values: [Float])] = [:]
        let embed = try store.floats("model.embed_tokens.weight")
        tensors["model.embed_tokens.weight"] = ([c.vocab, c.hidden], rotatedRows(embed, rows: c.vocab, by: q1))
        var head = store.info("lm_head.weight") != nil ? try store.floats("lm_head.weight") : embed
        let finalNorm = try LlamaModel.norm(store, "model.norm.weight", config: c)
        scaleColumns(&head, rows: c.vocab, by: finalNorm)
        tensors["lm_head.weight"] = ([c.vocab, c.hidden], rotatedRows(head, rows: c.vocab, by: q1))
        let unit = [Float](repeating: 1 - c.normWeightOffset, count: c.hidden)
        tensors["model.norm.weight"] = ([c.hidden], unit)
        for layer in 0..<c.layers {
            let block = try model.loadBlock(layer)
            for (kind, w) in try rotate(block) {
                let (o, i) = kind.shape(c)
                tensors[kind.prefix(layer: layer) + ".weight"] = ([o, i], w)
            }
            for (name, t) in block.floatTensors(layer: layer) {
                var v = t.array
                if BlockWeights.isNormWeight(name) && !BlockWeights.qkNormNames.contains(where: name.hasSuffix) {
                    v = [Float](repeating: 1 - c.normWeightOffset, count: v.count)
                } else if name == LinearKind.v.prefix(layer: layer) + ".bias" {
                    v = rotatedRows(v, rows: c.kvHeads, by: q2)   // b_v' = b_v blockdiag(Q2)
                } else if BlockWeights.isNormWeight(name) {
                    v = v.map { $0 - c.normWeightOffset }
                }
                tensors[name] = ([v.count], v)
            }
        }
        var writer = SafeTensorsWriter()
        for name in tensors.keys.sorted() { writer.add(name, .f32, tensors[name]!.shape, tensors[name]!.values) }
        // Anything else the checkpoint holds (none in the supported models) is kept as it is.
        for name in store.names where tensors[name] == nil {
            let (file, info) = try store.require(name)
            writer.add(name, info.dtype, info.shape, Data(bytes: file.bytes(info), count: info.end - info.begin))
        }
        let staging = outDir + ".partial"
        let fm = FileManager.default
        try? fm.removeItem(atPath: staging)
        try fm.createDirectory(atPath: staging, withIntermediateDirectories: true)
        try writer.write(to: staging + "/model.safetensors")
        try writeConfig(to: staging + "/config.json")
        for f in CheckpointWriter.copiedFiles where fm.fileExists(atPath: model.directory + "/" + f) {
            try fm.copyItem(atPath: model.directory + "/" + f, toPath: staging + "/" + f)
        }
        try CheckpointWriter.moveIntoPlace(staging, outDir)
    }

    private func writeConfig(to path: String) throws {
        let source = model.directory + "/config.json"
        guard let data = FileManager.default.contents(atPath: source),
              var config = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw TQError.io("\(source): cannot read")
        }
        config["tie_word_embeddings"] = false
        config["torch_dtype"] = "float32"
        config["dtype"] = nil
        var ours = config["tesseraq"] as? [String: Any] ?? [:]
        ours["rotation"] = json
        config["tesseraq"] = ours
        let out = try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys])
        guard FileManager.default.createFile(atPath: path, contents: out) else { throw TQError.io("\(path): cannot write") }
    }

    /// The block's seven linears rotated (norm weights folded into their readers), float32 [out x in].
    func rotate(_ b: BlockWeights) throws -> [(LinearKind, [Float])] {
        let c = model.config
        return try LinearKind.allCases.map { kind -> (LinearKind, [Float]) in
            let (o, i) = kind.shape(c)
            var w = b[kind].array
            switch kind {
            case .q, .k, .v, .gate, .up:
                // W' = W diag(g) Q1: the norm's weight and the stream's rotation on the input side.
                scaleColumns(&w, rows: o, by: (kind == .gate || kind == .up ? b.mlpNorm : b.attnNorm).array)
                w = rotatedRows(w, rows: o, by: q1)
                if kind == .v {   // each head's output: W' = blockdiag(Q2)^T W
                    w = transposed(rotatedRows(transposed(w, rows: o, cols: i), rows: i * c.kvHeads, by: q2), rows: i, cols: o)
                }
            case .o, .down:
                // Input side first (o: each head's Q2; down: the online H4), then W' = Q1^T W.
                if kind == .o { w = rotatedRows(w, rows: o * c.heads, by: q2) }
                if kind == .down, let h4 { w = rotatedRows(w, rows: o, by: h4) }
                w = transposed(rotatedRows(transposed(w, rows: o, cols: i), rows: i, by: q1), rows: i, cols: o)
            }
            guard w.allSatisfy(\.isFinite) else { throw TQError(.numeric, "rotate: \(kind.module) holds a NaN or infinite value") }
            return (kind, w)
        }
    }
}

/// x [rows x n] times Q (every row).
private func rotatedRows(_ x: [Float], rows: Int, by q: HadamardTransform) -> [Float] {
    var y = x
    y.withUnsafeMutableBufferPointer { q.apply($0.baseAddress!, rows: rows) }
    return y
}

private func scaleColumns(_ w: inout [Float], rows: Int, by g: [Float]) {
    w.withUnsafeMutableBufferPointer { scaleColumns($0.baseAddress!, rows: rows, by: g) }
}

private func transposed(_ w: [Float], rows: Int, cols: Int) -> [Float] {
    var t = [Float](repeating: 0, count: w.count)
    for r in 0..<rows { for j in 0..<cols { t[j * rows + r] = w[r * cols + j] } }
    return t
}
