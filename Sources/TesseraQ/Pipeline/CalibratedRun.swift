import Foundation

/// A block-by-block calibrated quantization (ALGORITHM.md section 3): two trajectories of
/// calibration activations, X_fp through the float blocks and X_q through the blocks already
/// quantized; only the current block's weights are held in float32. Finished blocks are
/// persisted, so the same run resumes after a kill with bit-identical results.
struct CalibratedRun {
    let model: LlamaModel
    let config: QuantizeConfig
    let options: TesseraQOptions
    let quantization: GPTQConfig
    let staging: String

    var memory: MemoryEstimate {
        MemoryEstimate(config: model.config, samples: options.nSamples, seqLen: options.seqLen, batch: options.batch,
                       cache: options.cacheDType, bits: config.spec.bits)
    }

    func quantize(tokens: [UInt32], progress: QuantProgressHandler?) throws -> ([PackedLinear], [[String: Any]]) {
        let c = model.config
        try memory.check()
        if let bad = tokens.first(where: { Int($0) >= c.vocab }) {
            throw TQError.invalid("calibration token \(bad) is outside the vocabulary (\(c.vocab))")
        }
        let windows = try calibrationWindows(tokens, samples: options.nSamples, length: options.seqLen, seed: options.seed)
        let resume = try ResumeState(staging: staging, fingerprint: fingerprint(tokens), quantization: quantization)
        let n = options.nSamples, L = options.seqLen
        let xfp = ActivationCache(samples: n, rowsPerSample: L, width: c.hidden, dtype: options.cacheDType)
        let xq = ActivationCache(samples: n, rowsPerSample: L, width: c.hidden, dtype: options.cacheDType)
        windows.withUnsafeBufferPointer { w in
            for i in 0..<n {
                let x = model.embed(UnsafeBufferPointer(rebasing: w[(i * L)..<((i + 1) * L)]))
                xfp.write(i, from: x.p)
                xq.write(i, from: x.p)
            }
        }
        let runner = BlockRunner(config: c, length: L, chunk: options.batch)
        var linears: [PackedLinear] = []
        var reports: [[String: Any]] = []
        for layer in 0..<c.layers {
            let t0 = Date()
            let fp = try model.loadBlock(layer)
            runner.run(fp, inputs: xfp, targets: nil, advance: true)   // X_fp now holds Y_fp
            if let done = try resume.load(layer) {
                runner.run(quantizedBlock(fp, done.linears), inputs: xq, targets: nil, advance: true)
                linears += done.linears
                reports.append(done.report)
                try checkQuantProgress(progress, QuantProgress(block: layer, blocks: c.layers, round: options.thresholds.count,
                                                               rounds: options.thresholds.count, step: options.iters, steps: options.iters))
                continue
            }
            let grids = try LinearKind.allCases.map { kind in
                let (o, i) = kind.shape(c)
                return try roundToNearest(fp[kind], out: o, inFeatures: i, spec: config.spec, name: kind.prefix(layer: layer))
            }
            let rtnLoss = runner.run(dequantizedBlock(fp, grids), inputs: xq, targets: xfp, advance: false)
            let method = TesseraQBlock(config: c, options: options, layer: layer, blocks: c.layers)
            let (trained, stats) = try method.run(fp: fp, grids: grids, xq: xq, yfp: xfp, progress: progress)
            let packed = LinearKind.allCases.map { PackedLinear(name: $0.prefix(layer: layer), trained[$0.rawValue], groupSize: config.spec.groupSize) }
            let finalLoss = runner.run(quantizedBlock(fp, packed), inputs: xq, targets: xfp, advance: true)
            guard finalLoss.isFinite else { throw TQError(.numeric, "block \(layer): final loss is \(finalLoss)") }
            var report = stats
            report["block"] = layer
            report["rtn_loss"] = rtnLoss
            report["final_loss"] = finalLoss
            report["seconds"] = Date().timeIntervalSince(t0)
            try resume.save(layer, linears: packed, report: report)
            linears += packed
            reports.append(report)
        }
        return (linears, reports)
    }

    /// The float block with its linears replaced by the exported (packed) ones.
    func quantizedBlock(_ fp: BlockWeights, _ packed: [PackedLinear]) -> BlockWeights {
        BlockWeights(attnNorm: fp.attnNorm, mlpNorm: fp.mlpNorm, linears: packed.map { $0.dequantized() }, biases: fp.biases)
    }

    func dequantizedBlock(_ fp: BlockWeights, _ q: [QuantizedLinear]) -> BlockWeights {
        BlockWeights(attnNorm: fp.attnNorm, mlpNorm: fp.mlpNorm, linears: q.map { $0.dequantized() }, biases: fp.biases)
    }

    /// What must match for a persisted block to be reused.
    func fingerprint(_ tokens: [UInt32]) -> [String: String] {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for t in tokens { h = (h ^ UInt64(t)) &* 0x100_0000_01b3 }
        let opts = (try? JSONSerialization.data(withJSONObject: options.json, options: [.sortedKeys])).map { String(decoding: $0, as: UTF8.self) } ?? ""
        return ["model": model.directory, "method": config.method, "bits": "\(config.spec.bits)",
                "group_size": "\(config.spec.groupSize)", "sym": "\(config.spec.sym)", "options": opts,
                "calibration": "\(tokens.count):\(String(h, radix: 16))", "threads": "\(Runtime.threads)"]
    }
}
