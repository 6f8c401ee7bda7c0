import Foundation

/// A block-by-block calibrated quantization (ALGORITHM.md section 3): two trajectories of
/// calibration activations, X_fp through the float blocks and X_q through the blocks already
/// quantized; only the current block's weights are held in float32. Finished blocks are
/// persisted, so the same run resumes after a kill with bit-identical results.
struct CalibratedRun {
    let model: LlamaModel
    let config: QuantizeConfig
    let method: BlockQuantizer
    let quantization: GPTQConfig
    let staging: String

    var calibration: CalibrationOptions { method.calibration }

    var memory: MemoryEstimate {
        var m = MemoryEstimate(config: model.config, method: method, spec: config.spec)
        m.residentBytes = model.heldEmbeddingBytes
        return m
    }

    /// The packed linears of every block (read back from the resume state when the checkpoint is
    /// written, so they are never all in memory), the per-block reports, and the float tensors
    /// (norms, biases) as the method left them, by tensor name. The tokens are released once the
    /// windows are cut: a calibration text can be megabytes, the windows are n_samples x seq_len.
    func quantize(tokens: consuming [UInt32], progress: QuantProgressHandler?) throws
        -> (CheckpointWriter.PackedBlocks, [[String: Any]], [String: [Float]]) {
        let c = model.config
        try memory.check()
        if let bad = tokens.first(where: { Int($0) >= c.vocab }) {
            throw TQError.invalid("calibration token \(bad) is outside the vocabulary (\(c.vocab))")
        }
        let n = calibration.nSamples, L = calibration.seqLen
        guard L <= c.maxPositions else {
            throw TQError.invalid("config key seq_len: \(L) exceeds the model's context (max_position_embeddings \(c.maxPositions))")
        }
        let windows = try calibrationWindows(tokens, samples: n, length: L, seed: calibration.seed, order: calibration.windows)
        let resume = try ResumeState(staging: staging, fingerprint: fingerprint(tokens), quantization: quantization)
        _ = consume tokens
        let scratch = try scratchDirectory()
        let xfp = try ActivationCache(samples: n, rowsPerSample: L, width: c.hidden, dtype: calibration.cacheDType, directory: scratch)
        let xq = try ActivationCache(samples: n, rowsPerSample: L, width: c.hidden, dtype: calibration.cacheDType, directory: scratch)
        try windows.withUnsafeBufferPointer { w in
            for i in 0..<n {
                let x = try model.embed(UnsafeBufferPointer(rebasing: w[(i * L)..<((i + 1) * L)]))
                xfp.write(i, from: x.p)
                xq.write(i, from: x.p)
            }
        }
        model.releaseEmbeddingPages()   // not read again in this run
        // The full-precision trajectory runs with float activations, the quantized one (and the
        // method) with the activation quantization asked for.
        var cq = c.floatActivations
        cq.activationQuant = config.activations
        let runner = try BlockRunner(config: c.floatActivations, length: L, chunk: calibration.batch, compute: method.passDType)
        let qRunner = try BlockRunner(config: cq, length: L, chunk: calibration.batch, compute: method.passDType)
        var reports: [[String: Any]] = []
        var floats: [String: [Float]] = [:]
        for layer in 0..<c.layers {
            let t0 = Date(), allocations = Runtime.allocationFailures
            let fp = try model.loadBlock(layer)
            try runner.run(fp, inputs: xfp, targets: nil, advance: true)   // X_fp now holds Y_fp
            let packed: [PackedLinear]
            if let done = try resume.load(layer, floats: fp.floatTensors(layer: layer).map(\.name)) {
                packed = done.linears
                try done.floats.apply(to: fp, layer: layer)
                reports.append(done.report)
                try qRunner.run(quantizedBlock(fp, packed), inputs: xq, targets: nil, advance: true)
                try checkQuantProgress(progress, QuantProgress(block: layer, blocks: c.layers))
            } else {
                let rtn = try roundToNearest(block: fp, layer: layer, config: c, spec: config.spec)
                let rtnLoss = try qRunner.run(dequantizedBlock(fp, rtn), inputs: xq, targets: xfp, advance: false,
                                              lossSamples: calibration.reportSamples)
                let (q, stats) = try method.quantize(layer: layer, model: cq, block: fp, inputs: xq, targets: xfp,
                                                     spec: config.spec, progress: progress)
                packed = zip(LinearKind.allCases, q).map { PackedLinear(name: $0.prefix(layer: layer), $1, groupSize: config.spec.groupSize) }
                let finalLoss = try qRunner.run(quantizedBlock(fp, packed), inputs: xq, targets: xfp, advance: true,
                                                lossSamples: calibration.reportSamples)
                guard finalLoss.isFinite else { throw TQError(.numeric, "block \(layer): final loss is \(finalLoss)") }
                var report = stats
                report["block"] = layer
                report["rtn_loss"] = rtnLoss
                report["final_loss"] = finalLoss
                report["seconds"] = Date().timeIntervalSince(t0)
                // A block computed with a failed allocation is never persisted.
                try Runtime.checkAllocations(since: allocations, "block \(layer)")
                try resume.save(layer, linears: packed, floats: BlockFloats(fp, layer: layer), report: report)
                reports.append(report)
                try checkQuantProgress(progress, QuantProgress(block: layer, blocks: c.layers))
            }
            floats.merge(BlockFloats(fp, layer: layer).stored(normWeightOffset: c.normWeightOffset)) { $1 }
        }
        return (CheckpointWriter.PackedBlocks(count: c.layers, load: resume.linears), reports, floats)
    }

    /// Where the activation caches' scratch files go (created), or nil to keep them in memory.
    func scratchDirectory() throws -> String? {
        guard calibration.cachesOutOfCore(bytes: memory.cacheBytesInMemory) else { return nil }
        let dir = calibration.scratchDir ?? staging
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
            throw TQError.io("\(dir): cannot create the scratch directory (config key scratch_dir)")
        }
        return dir
    }

    /// The float block with its linears replaced by the exported (packed) ones.
    func quantizedBlock(_ fp: BlockWeights, _ packed: [PackedLinear]) throws -> BlockWeights {
        fp.replacingLinears(try packed.map { try $0.dequantized() })
    }

    func dequantizedBlock(_ fp: BlockWeights, _ q: [QuantizedLinear]) throws -> BlockWeights {
        fp.replacingLinears(try q.map { try $0.dequantized() })
    }

    /// What must match for a persisted block to be reused.
    func fingerprint(_ tokens: [UInt32]) -> [String: String] {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for t in tokens { h = (h ^ UInt64(t)) &* 0x100_0000_01b3 }
        let json = { (o: [String: Any]) in
            (try? JSONSerialization.data(withJSONObject: o, options: [.sortedKeys])).map { String(decoding: $0, as: UTF8.self) } ?? ""
        }
        let opts = json(method.optionsJSON)
        return ["model": model.directory, "method": config.method, "bits": "\(config.spec.bits)",
                "group_size": "\(config.spec.groupSize)", "sym": "\(config.spec.sym)", "options": opts,
                "calibration": "\(tokens.count):\(String(h, radix: 16))", "threads": "\(Runtime.threads)",
                "activations": json(config.activationJSON)]
    }
}

/// A block's float tensors outside the linears (`BlockWeights.floatTensors`) by tensor name:
/// what a transforming method (AWQ: norms, and v_proj's bias when it folds v into o) changes
/// besides the quantized linears.
struct BlockFloats {
    let tensors: [String: [Float]]

    init(tensors: [String: [Float]]) { self.tensors = tensors }

    init(_ block: BlockWeights, layer: Int) {
        tensors = Dictionary(uniqueKeysWithValues: block.floatTensors(layer: layer).map { ($0.name, $0.buffer.array) })
    }

    /// The values as the checkpoint stores them: norm weights held as multipliers 1 + w (Gemma:
    /// what the kernels use and AWQ divides) go back to offsets w, so a re-load adds 1 again.
    func stored(normWeightOffset offset: Float) -> [String: [Float]] {
        guard offset != 0 else { return tensors }
        return Dictionary(uniqueKeysWithValues: tensors.map { name, v in
            (name, BlockWeights.isNormWeight(name) ? v.map { $0 - offset } : v)
        })
    }

    /// Overwrites the block's tensors with these values; every one of them must be present.
    func apply(to block: BlockWeights, layer: Int) throws {
        for (name, target) in block.floatTensors(layer: layer) {
            guard let values = tensors[name], values.count == target.count else {
                throw TQError.format("resume state of block \(layer) lacks \(name) or has the wrong size")
            }
            values.withUnsafeBufferPointer { target.p.update(from: $0.baseAddress!, count: values.count) }
        }
    }
}
