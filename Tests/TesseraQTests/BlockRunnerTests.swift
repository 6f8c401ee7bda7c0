import Foundation
import Testing
@testable import TesseraQ

/// The calibrated run's passes (target, RTN diagnostic, advance) run at the method's compute_dtype:
/// bf16 products give outputs within bf16's rounding of float32's, and not the same bits.
@Test func blockRunnerRunsAtItsComputeDType() throws {
    let model = try LlamaModel(directory: Fixtures.model("stories260K"))
    let c = model.config, n = 4, L = 32
    let block = try model.loadBlock(0)
    func run(_ compute: ComputeDType) throws -> ([Float], Double) {
        // The block's input as target: the loss is the size of its update.
        let (cache, target) = try embeddingCaches(model, samples: n, length: L, targetShift: 0)
        let loss = try BlockRunner(config: c, length: L, chunk: 2, compute: compute).run(block, inputs: cache, targets: target,
                                                                                          advance: true)
        let out = try FloatBuffer(count: n * L * c.hidden)
        cache.gather(Array(0..<n), into: out.p)
        return (out.array, loss)
    }
    let (y32, l32) = try run(.f32), (y16, l16) = try run(.bf16)
    let scale = y32.map { abs(Double($0)) }.max()!
    let err = zip(y32, y16).map { abs(Double($0) - Double($1)) }.max()!
    #expect(y32 != y16, "bf16 products should not give float32's bits")
    #expect(err < 2e-2 * scale, "max error \(err) against max |y| \(scale)")
    #expect(l32 > 0 && abs(l16 / l32 - 1) < 0.02, "loss \(l16) vs \(l32)")
}

/// `report_samples`: the pass's loss is the mean over the first samples alone, the same value a
/// cache of only those samples gives; without `advance` only they run, with it every sample advances.
@Test func blockRunnerMeasuresTheFirstLossSamples() throws {
    let model = try LlamaModel(directory: Fixtures.model("stories260K"))
    let c = model.config, n = 5, L = 16
    let block = try model.loadBlock(0)
    let runner = try BlockRunner(config: c, length: L, chunk: 2)
    // Targets: the embeddings of the next window (any fixed tensor will do).
    func caches(_ count: Int) throws -> (ActivationCache, ActivationCache) {
        try embeddingCaches(model, samples: count, length: L, targetShift: 1)
    }
    func contents(_ cache: ActivationCache) throws -> [Float] {
        let out = try FloatBuffer(count: cache.samples * L * c.hidden)
        cache.gather(Array(0..<cache.samples), into: out.p)
        return out.array
    }
    let (x3, t3) = try caches(3)
    let reference = try runner.run(block, inputs: x3, targets: t3, advance: false)
    let (x, t) = try caches(n)
    let inputs = try contents(x)
    let all = try runner.run(block, inputs: x, targets: t, advance: false)
    let first3 = try runner.run(block, inputs: x, targets: t, advance: false, lossSamples: 3)
    #expect(first3 == reference)
    #expect(first3 != all)
    #expect(try contents(x) == inputs, "a pass without advance leaves the inputs")
    // Advancing: the loss still over the first three (sample 2 shares its chunk with sample 3), every output written.
    let (xa, ta) = try caches(n)
    let advanced = try runner.run(block, inputs: xa, targets: ta, advance: true, lossSamples: 3)
    #expect(abs(advanced / reference - 1) < 1e-12, "\(advanced) vs \(reference)")
    let (xb, tb) = try caches(n)
    #expect(try runner.run(block, inputs: xb, targets: tb, advance: true) == all)
    #expect(try contents(xa) == (try contents(xb)))
    #expect(try contents(xa) != inputs)
}

/// Key `report_samples`: parsed for every calibrated method, 16 in the fast presets, 0 (all) in the
/// others, negative values rejected, and part of the options a resume checks.
@Test func reportSamplesKey() throws {
    for method in ["tesseraq", "awq", "gptq", "lwc"] {
        let fast = try makeBlockQuantizer(QuantizeConfig.parse(#"{"method": "\#(method)", "preset": "fast"}"#))
        #expect(fast.calibration.reportSamples == 16)
        #expect(try makeBlockQuantizer(QuantizeConfig.parse(#"{"method": "\#(method)", "preset": "ci"}"#)).calibration.reportSamples == 0)
        let set = try makeBlockQuantizer(QuantizeConfig.parse(#"{"method": "\#(method)", "report_samples": 4}"#))
        #expect(set.calibration.reportSamples == 4)
        #expect(set.calibration.json["report_samples"] as? Int == 4)
        #expect { try QuantizeConfig.parse(#"{"method": "\#(method)", "report_samples": -1}"#) } throws: {
            ($0 as? TQError)?.message.contains("report_samples") == true
        }
    }
}

/// Key `pass_dtype`: parsed for every calibrated method, unset by default (the passes follow
/// `compute_dtype`, and the recorded options leave it out), bad values rejected.
@Test func passDTypeKey() throws {
    for method in ["tesseraq", "awq", "gptq", "lwc"] {
        let plain = try makeBlockQuantizer(QuantizeConfig.parse(#"{"method": "\#(method)"}"#))
        #expect(plain.calibration.passDType == nil && plain.passDType == plain.computeDType)
        #expect(plain.calibration.json["pass_dtype"] == nil)
        let set = try makeBlockQuantizer(QuantizeConfig.parse(#"{"method": "\#(method)", "pass_dtype": "bf16"}"#))
        #expect(set.passDType == .bf16 && set.calibration.json["pass_dtype"] as? String == "bf16")
        #expect { try QuantizeConfig.parse(#"{"method": "\#(method)", "pass_dtype": "f16"}"#) } throws: {
            ($0 as? TQError)?.message.contains("pass_dtype") == true
        }
    }
    let mixed = try makeBlockQuantizer(QuantizeConfig.parse(#"{"method": "tesseraq", "compute_dtype": "bf16", "pass_dtype": "f32"}"#))
    #expect(mixed.computeDType == .bf16 && mixed.passDType == .f32)
}

/// Training at bf16 with `pass_dtype` f32: the first block's RTN diagnostic (a pass on the
/// embeddings towards the first full-precision targets, before any training) is the float32 run's
/// to the bit, and not the bf16 passes' value.
@Test func passDTypeRunsThePassesAtItsPrecision() throws {
    let quick: [String: JSONValue] = ["iters": .int(2), "n_samples": .int(8), "preset": .string("ci")]
    func firstRTNLoss(_ extra: [String: JSONValue]) throws -> Double {
        let (_, report) = try runTesseraQ(bits: 2, group: 32, extra: quick.merging(extra) { $1 })
        return (report["blocks"] as! [[String: Any]])[0]["rtn_loss"] as! Double
    }
    let f32 = try firstRTNLoss([:])
    let bf16 = try firstRTNLoss(["compute_dtype": .string("bf16")])
    let mixed = try firstRTNLoss(["compute_dtype": .string("bf16"), "pass_dtype": .string("f32")])
    #expect(mixed == f32)
    #expect(bf16 != f32)
}

/// Float32 caches of stories260K's embeddings of consecutive validation windows: sample i's input is
/// window i, its target window i + `targetShift`.
private func embeddingCaches(_ model: LlamaModel, samples n: Int, length L: Int,
                             targetShift: Int) throws -> (inputs: ActivationCache, targets: ActivationCache) {
    let d = model.config.hidden, tokens = try Fixtures.storiesTokens("valid")
    let x = try ActivationCache(samples: n, rowsPerSample: L, width: d, dtype: .f32)
    let t = try ActivationCache(samples: n, rowsPerSample: L, width: d, dtype: .f32)
    try tokens.withUnsafeBufferPointer { w in
        for i in 0..<n {
            let e = try model.embed(UnsafeBufferPointer(rebasing: w[(i * L)..<((i + 1 + targetShift) * L)]))
            // Kept alive until written: a temporary's `.p` may outlive its buffer.
            withExtendedLifetime(e) {
                x.write(i, from: e.p)
                t.write(i, from: e.p + targetShift * L * d)
            }
        }
    }
    return (x, t)
}
