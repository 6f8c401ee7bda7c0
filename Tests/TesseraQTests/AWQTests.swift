import Foundation
import Testing
import TQKernels
@testable import TesseraQ

/// Uniform random floats in [-scale, scale].
private func randomFloats(_ n: Int, _ scale: Float, _ rng: inout SeededGenerator) -> [Float] {
    (0..<n).map { _ in Float.random(in: -scale...scale, using: &rng) }
}

/// Sum over tokens of the squared output error ||X (W_hat - W)^T||^2 / tokens.
private func outputError(_ x: [Float], tokens: Int, _ w: [Float], _ wHat: [Float], out: Int, in inF: Int) -> Double {
    var d = zip(wHat, w).map { $0 - $1 }
    var e = [Float](repeating: 0, count: tokens * out)
    tqk_sgemm(0, 1, Int64(tokens), Int64(out), Int64(inF), 1, x, Int64(inF), &d, Int64(inF), 0, &e, Int64(out))
    return e.reduce(0.0) { $0 + Double($1) * Double($1) } / Double(tokens)
}

private func rtnDequantized(_ w: [Float], out: Int, in inF: Int, spec: QuantSpec) throws -> [Float] {
    try w.withUnsafeBufferPointer { try QuantizedLinear.roundToNearest($0.baseAddress!, out: out, inFeatures: inF, spec: spec).dequantized().array }
}

@Suite struct AWQKernelTests {
    @Test(arguments: [QuantSpec(bits: 2, groupSize: 8), QuantSpec(bits: 3, groupSize: 12), QuantSpec(bits: 4, groupSize: 16, sym: true),
                      QuantSpec(bits: 3, groupSize: -1)])
    func fakeQuantIsRTNOfTheScaledWeight(spec: QuantSpec) throws {
        var rng = SeededGenerator(seed: 1)
        let out = 13, inF = 40, group = spec.group(forInput: inF)
        let w = randomFloats(out * inF, 0.7, &rng)
        let s = (0..<inF).map { _ in Float.random(in: 0.2...4, using: &rng) }
        var y = [Float](repeating: 0, count: out * inF)
        // Without scales: exactly RTN's dequantised weight.
        tqk_awq_fake_quant(w, nil, Int64(out), Int64(inF), Int64(group), Int32(spec.bits), spec.sym ? 1 : 0, &y)
        #expect(try y == rtnDequantized(w, out: out, in: inF, spec: spec))
        // With scales: RTN of W * s, divided by s.
        let ws = (0..<(out * inF)).map { w[$0] * s[$0 % inF] }
        let ref = try rtnDequantized(ws, out: out, in: inF, spec: spec).enumerated().map { $0.element / s[$0.offset % inF] }
        tqk_awq_fake_quant(w, s, Int64(out), Int64(inF), Int64(group), Int32(spec.bits), spec.sym ? 1 : 0, &y)
        #expect(y == ref)
    }

    @Test func weightMeanAndActivationMean() {
        var rng = SeededGenerator(seed: 2)
        let out = 7, inF = 20, group = 6
        let w = randomFloats(out * inF, 1, &rng)
        var m = [Float](repeating: 0, count: inF)
        tqk_awq_weight_mean(w, Int64(out), Int64(inF), Int64(group), &m)
        for i in 0..<inF {
            let g0 = i / group * group, g1 = min(g0 + group, inF)
            let ref = (0..<out).reduce(0.0) { acc, o in
                let mx = (g0..<g1).map { abs(w[o * inF + $0]) }.max()!
                return acc + Double(abs(w[o * inF + i]) / mx)
            } / Double(out)
            #expect(abs(Double(m[i]) - ref) < 1e-6)
        }
        var acc = [Double](repeating: 1, count: inF)
        tqk_awq_abs_sum(w, Int64(out), Int64(inF), &acc)
        for i in 0..<inF {
            #expect(abs(acc[i] - 1 - (0..<out).reduce(0.0) { $0 + Double(abs(w[$1 * inF + i])) }) < 1e-5)
        }
    }

    /// The Gram-block search and the per-candidate GEMM search pick the same clips, their errors
    /// are the true output errors, and the best is never worse than no clipping.
    @Test(arguments: [QuantSpec(bits: 2, groupSize: 16), QuantSpec(bits: 3, groupSize: 12), QuantSpec(bits: 3, groupSize: -1, sym: true)])
    func clipSearchGramEqualsDirect(spec: QuantSpec) throws {
        var rng = SeededGenerator(seed: 3)
        let out = 24, inF = 48, tokens = 64, group = spec.group(forInput: inF), nGroups = (inF + group - 1) / group
        let w = randomFloats(out * inF, 0.5, &rng)
        let x = (0..<(tokens * inF)).map { j in Float.random(in: -1...1, using: &rng) * (j % inF == 5 ? 8 : 1) }
        let shrinks = AWQSettings().shrinks
        #expect(shrinks.count == 10 && shrinks.first == 1 && abs(shrinks.last! - 0.55) < 1e-6)
        func run(_ mode: Int32) throws -> (w: [Float], c: [Float], first: [Float], best: [Float]) {
            var wc = w
            var c = [Float](repeating: 0, count: out * nGroups), f = c, b = c
            tqk_awq_clip_search(&wc, Int64(out), Int64(inF), Int64(group), Int32(spec.bits), spec.sym ? 1 : 0, x, Int64(tokens),
                                shrinks, Int64(shrinks.count), mode, &c, &f, &b)
            return (wc, c, f, b)
        }
        let gram = try run(1), direct = try run(2)
        #expect(gram.c == direct.c)
        #expect(gram.w == direct.w)
        for j in 0..<(out * nGroups) {
            #expect(abs(gram.best[j] - direct.best[j]) <= 1e-4 * max(1, direct.best[j]))
            #expect(gram.best[j] <= gram.first[j])
        }
        // Whole-layer errors: no clipping = RTN; the clipped layer quantized by RTN is no worse.
        let rtnErr = outputError(x, tokens: tokens, w, try rtnDequantized(w, out: out, in: inF, spec: spec), out: out, in: inF)
        let clipErr = outputError(x, tokens: tokens, w, try rtnDequantized(gram.w, out: out, in: inF, spec: spec), out: out, in: inF)
        let firstSum = gram.first.reduce(0.0) { $0 + Double($1) }, bestSum = gram.best.reduce(0.0) { $0 + Double($1) }
        if spec.groupSize == -1 {   // one group per row: the per-group errors add up to the layer's
            #expect(abs(firstSum / rtnErr - 1) < 1e-3)
            #expect(abs(bestSum / clipErr - 1) < 1e-3)
        }
        #expect(clipErr <= rtnErr)
        #expect(gram.c.contains { $0 < 1 }, "some group should prefer clipping")
        // A single candidate 1.0 leaves W unchanged.
        var same = w
        tqk_awq_clip_search(&same, Int64(out), Int64(inF), Int64(group), Int32(spec.bits), spec.sym ? 1 : 0, x, Int64(tokens),
                            [1], 1, 0, nil, nil, nil)
        #expect(same == w)
    }

    /// Gram blocks accumulated in parts over every step-th row equal a plain double sum over those
    /// rows, and the search from them equals the search on the gathered rows.
    @Test(arguments: [(1, 8), (3, 12), (2, -1)])
    func gramAccumulateAndSearchFromGram(step: Int, groupSize: Int) throws {
        var rng = SeededGenerator(seed: 6)
        let rows = 50, inF = 40, out = 9, spec = QuantSpec(bits: 2, groupSize: groupSize)
        let group = spec.group(forInput: inF), nGroups = (inF + group - 1) / group
        let x = randomFloats(rows * inF, 1, &rng), w = randomFloats(out * inF, 0.5, &rng)
        var gram = [Float](repeating: 0, count: nGroups * group * group)
        // Two parts (rows 0..<20 and 20..<50), each from its own first row, as per calibration sequence.
        tqk_awq_gram_accumulate(x, 20, Int64(inF), Int64(step), Int64(group), &gram)
        x.withUnsafeBufferPointer { tqk_awq_gram_accumulate($0.baseAddress! + 20 * inF, 30, Int64(inF), Int64(step), Int64(group), &gram) }
        let picked = Array(stride(from: 0, to: 20, by: step)) + Array(stride(from: 20, to: 50, by: step))
        for g in 0..<nGroups {
            let i0 = g * group, n = min(group, inF - i0)
            for a in 0..<n {
                for b in 0..<n {
                    let ref = picked.reduce(0.0) { $0 + Double(x[$1 * inF + i0 + a]) * Double(x[$1 * inF + i0 + b]) }
                    #expect(abs(Double(gram[g * group * group + a * group + b]) - ref) < 1e-4 * max(1, abs(ref)))
                }
            }
        }
        let gathered = picked.flatMap { x[($0 * inF)..<(($0 + 1) * inF)] }
        let shrinks = AWQSettings().shrinks
        var w1 = w, w2 = w, c1 = [Float](repeating: 0, count: out * nGroups), c2 = c1
        tqk_awq_clip_search_gram(&w1, Int64(out), Int64(inF), Int64(group), 2, 0, gram, Int64(picked.count), shrinks,
                                 Int64(shrinks.count), &c1, nil, nil)
        tqk_awq_clip_search(&w2, Int64(out), Int64(inF), Int64(group), 2, 0, gathered, Int64(picked.count), shrinks,
                            Int64(shrinks.count), 2, &c2, nil, nil)
        #expect(c1 == c2)
        #expect(w1 == w2)
    }

    /// AWQ's motivation: a few input channels with large activations. The searched scales lower
    /// the quantized output error against RTN, and the clipping lowers it further.
    @Test(arguments: [2, 3])
    func scalesThenClipsBeatRTNOnOneLinear(bits: Int) throws {
        var rng = SeededGenerator(seed: 4)
        let out = 32, inF = 64, tokens = 512, spec = QuantSpec(bits: bits, groupSize: 32)
        let salient: Set<Int> = [3, 17, 40, 41]
        let w = randomFloats(out * inF, 0.3, &rng)
        let x = (0..<(tokens * inF)).map { j in Float.random(in: -1...1, using: &rng) * (salient.contains(j % inF) ? 20 : 1) }
        let settings = AWQSettings()
        var xMean = [Double](repeating: 0, count: inF)
        tqk_awq_abs_sum(x, Int64(tokens), Int64(inF), &xMean)
        var wMean = [Float](repeating: 0, count: inF)
        tqk_awq_weight_mean(w, Int64(out), Int64(inF), 32, &wMean)
        let rtnErr = outputError(x, tokens: tokens, w, try rtnDequantized(w, out: out, in: inF, spec: spec), out: out, in: inF)
        // The scale search as AWQTransform runs it for a group whose inspected module is the linear.
        var best = (err: Double.infinity, ratio: Float(-1), s: [Float]())
        var fq = [Float](repeating: 0, count: out * inF)
        for r in settings.ratios {
            let s = AWQTransform.scales(xMean: xMean.map { Float($0 / Double(tokens)) }, wMean: wMean, ratio: r)
            tqk_awq_fake_quant(w, s, Int64(out), Int64(inF), 32, Int32(bits), 0, &fq)
            let e = outputError(x, tokens: tokens, w, fq, out: out, in: inF)
            if e < best.err { best = (e, r, s) }
        }
        #expect(best.ratio > 0)
        #expect(best.err < 0.8 * rtnErr, "scaled \(best.err) vs RTN \(rtnErr)")
        // Fold: W' = W * s sees inputs X / s; clip W' on them, quantize, and compare in the original basis.
        var ws = (0..<(out * inF)).map { w[$0] * best.s[$0 % inF] }
        let xs = (0..<(tokens * inF)).map { x[$0] / best.s[$0 % inF] }
        let scaledErr = outputError(xs, tokens: tokens, ws, try rtnDequantized(ws, out: out, in: inF, spec: spec), out: out, in: inF)
        #expect(abs(scaledErr / best.err - 1) < 1e-3)
        let unclipped = ws
        tqk_awq_clip_search(&ws, Int64(out), Int64(inF), 32, Int32(bits), 0, xs, Int64(tokens), settings.shrinks,
                            Int64(settings.shrinks.count), 0, nil, nil, nil)
        let clipErr = outputError(xs, tokens: tokens, unclipped, try rtnDequantized(ws, out: out, in: inF, spec: spec), out: out, in: inF)
        print("one linear W\(bits) g32: RTN \(rtnErr), AWQ scales (ratio \(best.ratio)) \(best.err), + clip \(clipErr)")
        #expect(clipErr <= scaledErr)
    }
}

@Suite struct AWQConfigTests {
    @Test func defaultsAndKeys() throws {
        let c = try QuantizeConfig.parse(#"{"method": "awq", "bits": 3, "preset": "ci", "n_grid": 10, "scale": false}"#)
        #expect(c.method == "awq")
        let o = try AWQOptions(options: c.options)
        #expect(o.calibration.nSamples == 32 && o.settings.nGrid == 10 && !o.settings.scale && o.settings.clip)
        #expect(o.settings.shrinks == [1, 0.9, 0.8, 0.7, 0.6])
        let d = try AWQOptions(options: [:])
        #expect(d == .paper && d.settings.nGrid == 20 && d.settings.clipSamples == 512 && d.settings.maxShrink == 0.45)
        #expect(d.settings.scaleSamples == 8 && d.settings.scaleTokens == 4096 && d.computeDType == .f32)
        let bf16 = try AWQOptions(options: ["compute_dtype": .string("bf16")])
        #expect(bf16.computeDType == .bf16 && bf16.json["compute_dtype"] as? String == "bf16")
        let all = try AWQOptions(options: ["scale_samples": .int(0), "scale_tokens": .int(100)]).settings
        #expect(all.scaleSamples == 0 && all.scaleTokens == 100)
        #expect(try makeBlockQuantizer(c) is AWQMethod)
    }

    @Test func tesseraqReadsAWQKeysWithPrefix() throws {
        let d = try TesseraQOptions(options: [:])   // the fast preset: the scale search on 4 sequences, 2048 tokens
        #expect(d.awq.scaleSamples == 4 && d.awq.scaleTokens == 2048 && d.awq.search == .refine)
        #expect(d.awq.samples == 32)
        let paper = try TesseraQOptions(options: ["preset": .string("paper")]).awq
        #expect(paper.scaleSamples == AWQSettings().scaleSamples && paper.scaleTokens == AWQSettings().scaleTokens)
        #expect(paper.search == .grid && paper.samples == 32)
        let o = try TesseraQOptions(options: ["awq_scale_samples": .int(0), "awq_scale_tokens": .int(0), "awq_n_grid": .int(10),
                                              "awq_clip": .bool(false), "awq_samples": .int(4)])
        #expect(o.awq.scaleSamples == 0 && o.awq.scaleTokens == 0 && o.awq.nGrid == 10 && !o.awq.clip && o.awq.samples == 4)
        #expect(o.json["awq_scale_tokens"] as? Int == 0 && o.json["awq_n_grid"] as? Int == 10 && o.json["awq_samples"] as? Int == 4)
        // The CPU presets search coarse to fine; paper and method awq keep llm-awq's grid.
        #expect(d.awq.search == .refine && TesseraQOptions.ci.awq.search == .refine && TesseraQOptions.paper.awq.search == .grid)
        #expect(try AWQOptions(options: [:]).settings.search == .grid)
        let g = try TesseraQOptions(options: ["awq_search": .string("grid")])
        #expect(g.awq.search == .grid && g.json["awq_search"] as? String == "grid")
        #expect(try AWQOptions(options: ["search": .string("refine")]).json["search"] as? String == "refine")
    }

    /// The coarse-to-fine walk: on a unimodal loss it returns the grid's choice (value and tie rule)
    /// from 9 of 20 evaluations, visiting each index once; non-finite losses are skipped.
    @Test func refineFindsTheGridMinimumOfUnimodalLosses() throws {
        for n in [1, 2, 5, 7, 10, 13, 20, 33, 64] {
            for m in 0..<n {
                for curve in [{ (k: Int) in Double(abs(k - m)) }, { (k: Int) in sqrt(Double(abs(k - m))) + 0.01 * Double(k) }] {
                    var visits: [Int] = []
                    let r = try #require(AWQSearch.refine.best(count: n) { k in visits.append(k); return curve(k) })
                    let g = try #require(AWQSearch.grid.best(count: n) { curve($0) })
                    #expect(r.index == g.index && r.loss == g.loss && r.index == m, "n \(n) minimum \(m): \(r) vs \(g)")
                    #expect(Set(visits).count == visits.count)
                    if n == 20 { #expect(visits.count <= 9) }
                    if n == 10 { #expect(visits.count <= 7) }
                }
            }
        }
        // Ties: the lowest index, as the grid's first strict minimum.
        #expect(AWQSearch.refine.best(count: 20) { k in k >= 8 && k <= 12 ? 0 : 1 }?.index == 8)
        #expect(AWQSearch.grid.best(count: 20) { k in k >= 8 && k <= 12 ? 0 : 1 }?.index == 8)
        // Non-finite losses are never chosen; none finite gives nil.
        #expect(AWQSearch.refine.best(count: 20) { k in k == 8 ? .nan : Double(abs(k - 8)) }?.index == 7)
        #expect(AWQSearch.refine.best(count: 20) { _ in .infinity } == nil)
        // Not unimodal: a narrow minimum between coarse points is missed (the grid finds it).
        let narrow = { (k: Int) in k == 5 ? 0.0 : 1 + Double(k) }
        #expect(AWQSearch.grid.best(count: 20, loss: narrow)?.index == 5 && AWQSearch.refine.best(count: 20, loss: narrow)?.index == 0)
    }

    @Test(arguments: [
        (#"{"method": "awq", "n_grid": 0}"#, "n_grid"), (#"{"method": "awq", "n_grid": "x"}"#, "n_grid"),
        (#"{"method": "awq", "clip_samples": 0}"#, "clip_samples"), (#"{"method": "awq", "max_shrink": 1}"#, "max_shrink"),
        (#"{"method": "awq", "max_shrink": -0.1}"#, "max_shrink"), (#"{"method": "awq", "scale": 1}"#, "scale"),
        (#"{"method": "awq", "clip": "yes"}"#, "clip"), (#"{"method": "awq", "preset": "slow"}"#, "preset"),
        (#"{"method": "awq", "iters": 3}"#, "iters"), (#"{"method": "awq", "batch": 9, "n_samples": 4}"#, "batch"),
        (#"{"method": "tesseraq", "n_grid": 20}"#, "n_grid"), (#"{"method": "tesseraq", "awq_samples": -1}"#, "awq_samples"),
        (#"{"method": "awq", "awq_samples": 8}"#, "awq_samples"), (#"{"method": "awq", "scale_samples": -1}"#, "scale_samples"),
        (#"{"method": "awq", "scale_tokens": -2}"#, "scale_tokens"), (#"{"method": "awq", "scale_tokens": 1.5}"#, "scale_tokens"),
        (#"{"method": "tesseraq", "awq_scale_tokens": -1}"#, "awq_scale_tokens"), (#"{"method": "tesseraq", "awq_n_grid": 0}"#, "awq_n_grid"),
        (#"{"method": "tesseraq", "awq_clip": 2}"#, "awq_clip"), (#"{"method": "awq", "awq_scale_tokens": 8}"#, "awq_scale_tokens"),
        (#"{"method": "awq", "compute_dtype": "f16"}"#, "compute_dtype"),
        (#"{"method": "awq", "search": "golden"}"#, "search"), (#"{"method": "tesseraq", "awq_search": 1}"#, "awq_search"),
    ])
    func rejectsBadAWQKeys(json: String, key: String) {
        #expect { try QuantizeConfig.parse(json) } throws: { ($0 as? TQError)?.message.contains(key) == true }
    }
}

/// A random block of a tiny qwen2-style model (hidden 16, intermediate 24, 4 heads of 4).
private func tinyBlock(kvHeads: Int, _ rng: inout SeededGenerator) throws -> (LlamaConfig, BlockWeights) {
    let json = JSONValue.object([
        "hidden_size": .int(16), "intermediate_size": .int(24), "num_hidden_layers": .int(1), "num_attention_heads": .int(4),
        "num_key_value_heads": .int(kvHeads), "head_dim": .int(4), "vocab_size": .int(8), "rms_norm_eps": .double(1e-5),
        "model_type": .string("qwen2"),
    ])
    let c = try LlamaConfig(json: json, path: "tiny")
    func buf(_ n: Int, _ scale: Float, offset: Float = 0) throws -> FloatBuffer {
        try FloatBuffer((0..<n).map { _ in offset + Float.random(in: -scale...scale, using: &rng) })
    }
    let linears = try LinearKind.allCases.map { k -> FloatBuffer in let (o, i) = k.shape(c); return try buf(o * i, 0.4) }
    let block = BlockWeights(attnNorm: try buf(16, 0.2, offset: 1), mlpNorm: try buf(16, 0.2, offset: 1), linears: linears,
                             biases: [try buf(16, 0.3), try buf(4 * kvHeads, 0.3), try buf(4 * kvHeads, 0.3)])
    return (c, block)
}

/// Calibration inputs [samples x length x hidden] with channel 2 large, in a cache and a buffer.
private func tinyInputs(_ c: LlamaConfig, samples S: Int, length L: Int,
                        _ rng: inout SeededGenerator) throws -> (ActivationCache, FloatBuffer) {
    let cache = try ActivationCache(samples: S, rowsPerSample: L, width: c.hidden, dtype: .f32)
    let x = try FloatBuffer((0..<(S * L * c.hidden)).map { j in Float.random(in: -1...1, using: &rng) * (j % 16 == 2 ? 6 : 1) })
    for s in 0..<S { cache.write(s, from: x.p + s * L * c.hidden) }
    return (cache, x)
}

/// w_mean counts each linear of a group by its rows (llm-awq concatenates them), here under GQA:
/// q has 16 rows, k and v 8 each.
@Test func weightMeanWeighsLinearsByRows() throws {
    var rng = SeededGenerator(seed: 12)
    let (c, block) = try tinyBlock(kvHeads: 2, &rng)
    // q: |w| constant (normalised 1 everywhere); k, v: 1 at the first column of each group of 8, else 0.5.
    for j in 0..<(16 * 16) { block[.q].p[j] = j % 3 == 0 ? -0.2 : 0.2 }
    for k in [LinearKind.k, .v] { for j in 0..<(8 * 16) { block[k].p[j] = j % 8 == 0 ? -0.8 : 0.4 } }
    let t = AWQTransform(config: c, settings: AWQSettings(), spec: QuantSpec(bits: 2, groupSize: 8), batch: 2, layer: 0)
    let m = t.weightMean(.qkv, block)
    // Column 0 of a group: (16 * 1 + 16 * 1) / 32; others: (16 * 1 + 16 * 0.5) / 32 = 0.75 (an equal average of
    // the three linears would give 2/3).
    for j in 0..<16 { #expect(abs(m[j] - (j % 8 == 0 ? 1 : 0.75)) < 1e-6, "column \(j): \(m[j])") }
}

/// The one forward pass gathers what the reference would: the clip Gram over every
/// floor(L / clip_samples)-th token of each sequence, the attention group's evaluation set from
/// every floor(n / scale_samples)-th whole sequence, the per-token groups' from every
/// floor(n L / scale_tokens)-th token.
@Test func statisticsPickTheReferenceRows() throws {
    var rng = SeededGenerator(seed: 13)
    let (c, block) = try tinyBlock(kvHeads: 4, &rng)
    let S = 5, L = 10, d = c.hidden
    let (cache, x) = try tinyInputs(c, samples: S, length: L, &rng)
    var settings = AWQSettings()
    settings.clipSamples = 4; settings.scaleSamples = 2; settings.scaleTokens = 12
    let t = AWQTransform(config: c, settings: settings, spec: QuantSpec(bits: 2, groupSize: 8), batch: 2, layer: 0)
    let stats = try AWQStatistics(t, block: block, inputs: cache)
    let plan = stats.plan
    #expect(plan.clipStep == 2 && plan.clipTokens == 25 && plan.sequenceStep == 2 && plan.sequences == 3)
    #expect(plan.tokenStep == 4 && plan.tokens == 13)
    let work = try BlockWorkspace(config: c, sequences: S, length: L)
    let y = try FloatBuffer(count: S * L * d)
    work.forward(x.p, weights: block, into: y.p)
    // Clip: tokens 0, 2, ..., 8 of every sequence (per sample, as llmc), not every 10th of the 50.
    let clipRows = (0..<S).flatMap { s in stride(from: 0, to: L, by: 2).map { s * L + $0 } }
    let gram = stats.clipGram[.qkv]!
    for g in 0..<2 {
        for a in 0..<8 {
            for b in 0..<8 {
                let ref = clipRows.reduce(0.0) { $0 + Double(work.n1.p[$1 * d + g * 8 + a]) * Double(work.n1.p[$1 * d + g * 8 + b]) }
                #expect(abs(Double(gram.p[g * 64 + a * 8 + b]) - ref) < 1e-4 * max(1, abs(ref)))
            }
        }
    }
    let set = try #require(stats.scaleSet)
    for (j, s) in [0, 2, 4].enumerated() {
        #expect(Array(UnsafeBufferPointer(start: set.n1.p + j * L * d, count: L * d))
                == Array(UnsafeBufferPointer(start: work.n1.p + s * L * d, count: L * d)))
    }
    for (j, r) in stride(from: 0, to: S * L, by: 4).enumerated() {
        #expect(Array(UnsafeBufferPointer(start: set.n2.p + j * d, count: d)) == Array(UnsafeBufferPointer(start: work.n2.p + r * d, count: d)))
        #expect(Array(UnsafeBufferPointer(start: set.attn!.p + j * c.qDim, count: c.qDim))
                == Array(UnsafeBufferPointer(start: work.attn.p + r * c.qDim, count: c.qDim)))
    }
}

/// With `massive_token_cap`, the scale search weighs each output row as the training loss does: a
/// row whose norm exceeds cap x the set's median norm counts as a row of that norm. Checked on
/// up_down with down_proj scaled by 1 + e, whose error on a row is e^2 |y|^2 exactly, so the capped
/// sum is e^2 sum min(|y|^2, cap^2 median |y|^2).
@Test(arguments: [0.0, 3.0])
func scaleSearchCapsMassiveRows(cap: Double) throws {
    var rng = SeededGenerator(seed: 14)
    let (c, block) = try tinyBlock(kvHeads: 4, &rng)
    let (cache, _) = try tinyInputs(c, samples: 4, length: 8, &rng)
    let t = AWQTransform(config: c, settings: AWQSettings(), spec: QuantSpec(bits: 2, groupSize: 8), batch: 2, layer: 0,
                         tokenCap: cap)
    let stats = try AWQStatistics(t, block: block, inputs: cache)
    let set = try #require(stats.scaleSet)
    // Rows 0 and 5 of the MLP's evaluation set become massive: their activation times 200.
    for r in [0, 5] { for j in 0..<c.intermediate { set.act.p[r * c.intermediate + j] *= 200 } }
    try set.computeTargets(block)
    let e: Float = 0.01, (o, i) = LinearKind.down.shape(c)
    let down = try FloatBuffer((0..<(o * i)).map { block[.down].p[$0] * (1 + e) })
    let err = set.squaredError(.upDown, { $0 == .down ? UnsafePointer(down.p) : UnsafePointer(block[$0].p) }, block: block)
    let norms = (0..<set.plan.tokens).map { r in (0..<c.hidden).reduce(0.0) { $0 + pow(Double(set.mlpFP.p[r * c.hidden + $1]), 2) } }
    let sorted = norms.sorted(), n = sorted.count
    let median = n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2
    let ref = Double(e * e) * norms.reduce(0.0) { $0 + (cap > 0 ? min($1, cap * cap * median) : $1) }
    #expect(norms[0] > 100 * median, "row 0 should be massive")
    #expect(abs(err - ref) < 1e-3 * ref, "squared error \(err), reference \(ref)")
}

/// A tiny block transformed with AWQ scales computes the same function.
@Test func foldingIsExactOnATinyNonGQABlock() throws {
    var rng = SeededGenerator(seed: 11)
    let (c, block) = try tinyBlock(kvHeads: 4, &rng)
    let S = 3, L = 6
    let (cache, x) = try tinyInputs(c, samples: S, length: L, &rng)
    let work = try BlockWorkspace(config: c, sequences: S, length: L)
    let y0 = try FloatBuffer(count: S * L * c.hidden), y1 = try FloatBuffer(count: S * L * c.hidden)
    work.forward(x.p, weights: block, into: y0.p)
    var settings = AWQSettings()
    settings.clip = false
    let t = AWQTransform(config: c, settings: settings, spec: QuantSpec(bits: 2, groupSize: 8), batch: 2, layer: 0)
    #expect(t.groups == AWQGroup.allCases)
    let norm0 = block.attnNorm.array, o0 = block[.o].array
    let report = try t.apply(to: block, inputs: cache)
    #expect((report["awq_ratios"] as! [String: Double]).count == 4)
    #expect(block.attnNorm.array != norm0 && block[.o].array != o0)
    work.forward(x.p, weights: block, into: y1.p)
    let diff = zip(y0.array, y1.array).map { abs($0 - $1) }.max()!
    #expect(diff < 1e-4, "max difference \(diff)")
}

@Suite(.serialized)
struct AWQStoriesTests {
    /// AWQ scales (searched on calibration inputs, clipping off) and random positive scales folded
    /// into every block through `blockTransform` give the original logits.
    @Test(arguments: [false, true])
    func foldedScalesKeepTheLogits(random: Bool) throws {
        let original = try LlamaModel(directory: Fixtures.model("stories260K"))
        let c = original.config
        let tokens = try Fixtures.storiesTokens("valid")
        let n = 8, L = 64
        let windows = try calibrationWindows(tokens, samples: n, length: L, seed: 7)
        let cache = try ActivationCache(samples: n, rowsPerSample: L, width: c.hidden, dtype: .f32)
        try windows.withUnsafeBufferPointer { w in
            for i in 0..<n {
                let x = try original.embed(UnsafeBufferPointer(rebasing: w[(i * L)..<((i + 1) * L)]))
                withExtendedLifetime(x) { cache.write(i, from: x.p) }   // a temporary's `.p` may outlive its buffer
            }
        }
        var settings = AWQSettings()
        settings.clip = false
        let runner = try BlockRunner(config: c, length: L, chunk: 4)
        var transformed: [BlockWeights] = []
        var rng = SeededGenerator(seed: 5)
        var spread: Float = 1
        for layer in 0..<c.layers {
            let block = try original.loadBlock(layer)
            if random {
                let t = AWQTransform(config: c, settings: settings, spec: QuantSpec(bits: 3, groupSize: 32), batch: 4, layer: layer)
                for gr in t.groups {
                    let s = (0..<gr.width(c)).map { _ in expf(Float.random(in: -1.5...1.5, using: &rng)) }
                    t.fold(gr, s, into: block)
                }
            } else {
                let before = block.attnNorm.array + block.mlpNorm.array
                let report = try AWQTransform(config: c, settings: settings, spec: QuantSpec(bits: 2, groupSize: 32), batch: 4, layer: layer)
                    .apply(to: block, inputs: cache)
                print("block \(layer) AWQ ratios \(report["awq_ratios"]!)")
                let r = zip(block.attnNorm.array + block.mlpNorm.array, before).map { $1 / $0 }
                spread = max(spread, r.max()! / r.min()!)   // s = old norm / new norm
            }
            try runner.run(block, inputs: cache, targets: nil, advance: true)
            transformed.append(block)
        }
        if !random { #expect(spread > 1.5, "searched scales should be non-trivial (max/min \(spread))") }
        let folded = try LlamaModel(directory: Fixtures.model("stories260K"))
        folded.blockTransform = { layer, block in
            let t = transformed[layer]
            block.attnNorm.p.update(from: t.attnNorm.p, count: c.hidden)
            block.mlpNorm.p.update(from: t.mlpNorm.p, count: c.hidden)
            for k in LinearKind.allCases { block[k] = t[k] }
        }
        let test = Array(try Fixtures.storiesTokens("test.raw").prefix(256))
        let a = try FloatBuffer(count: test.count * c.vocab), b = try FloatBuffer(count: test.count * c.vocab)
        try test.withUnsafeBufferPointer { try original.logits($0, into: a.p); try folded.logits($0, into: b.p) }
        let diff = zip(a.array, b.array).map { abs($0 - $1) }.max()!
        print("folded \(random ? "random" : "searched") scales: max logit difference \(diff)")
        #expect(diff < 1e-4)
    }

    func runAWQ(bits: Int, extra: [String: JSONValue] = [:]) throws -> (String, [String: Any]) {
        try runCalibrated("awq", bits: bits, group: 32, extra: extra)
    }

    @Test(arguments: [2, 3])
    func awqBeatsRTN(bits: Int) throws {
        let (dir, report) = try runAWQ(bits: bits)
        let blocks = report["blocks"] as! [[String: Any]]
        #expect(blocks.count == 5)
        for b in blocks {
            let ratios = try #require(b["awq_ratios"] as? [String: Double])
            #expect(Set(ratios.keys) == ["qkv", "gate_up", "up_down"])   // GQA: no v -> o
            let clips = try #require(b["awq_clip"] as? [String: Double])
            #expect(Set(clips.keys) == ["v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
            #expect(clips.values.allSatisfy { $0 > 0.5 && $0 <= 1 })
            #expect(b["awq_seconds"] is Double)
        }
        let (_, rtn) = try quantizeStories(QuantSpec(bits: bits, groupSize: 32))
        let pAWQ = try perplexity(try LlamaModel(directory: dir)), pRTN = try perplexity(try LlamaModel(directory: rtn))
        let blockLosses = blocks.map { String(format: "%.4g/%.4g", $0["rtn_loss"] as! Double, $0["final_loss"] as! Double) }
        print("stories260K W\(bits) g32 ci calibration: RTN \(pRTN), AWQ \(pAWQ); block losses rtn/awq \(blockLosses)")
        #expect(pAWQ < pRTN)
        // The checkpoint carries the folded norms.
        let store = try TensorStore(directory: dir), orig = try TensorStore(directory: Fixtures.model("stories260K"))
        #expect(try store.floats("model.layers.0.input_layernorm.weight") != orig.floats("model.layers.0.input_layernorm.weight"))
    }

    /// compute_dtype bf16 runs the scale search's candidate forwards in bf16 (llm-awq searches in
    /// fp16), and the run's block passes: block 0 (the same inputs either way) chooses float32's
    /// ratios, most later ones too (their inputs drift by bf16's rounding), and the perplexity stays close.
    @Test func bf16ScaleSearchMatchesFloat32() throws {
        let (d32, r32) = try runAWQ(bits: 3)
        let (d16, r16) = try runAWQ(bits: 3, extra: ["compute_dtype": .string("bf16")])
        #expect((r16["options"] as? [String: Any])?["compute_dtype"] as? String == "bf16")
        func field(_ r: [String: Any], _ key: String) -> [Double] {
            (r["blocks"] as! [[String: Any]]).flatMap { b in (b[key] as! [String: Double]).sorted { $0.key < $1.key }.map(\.value) }
        }
        let a = field(r32, "awq_ratios"), b = field(r16, "awq_ratios"), same = zip(a, b).filter { $0 == $1 }.count
        // The best candidates' losses: computed in bf16 (not equal), yet close to float32's.
        let l32 = field(r32, "awq_scale_loss"), l16 = field(r16, "awq_scale_loss")
        #expect(l32 != l16 && zip(l32, l16).allSatisfy { abs($1 / $0 - 1) < 0.05 }, "\(l32) vs \(l16)")
        let p32 = try perplexity(try LlamaModel(directory: d32)), p16 = try perplexity(try LlamaModel(directory: d16))
        print("stories260K W3 g32 AWQ: f32 \(p32), bf16 search \(p16); ratios equal \(same) of \(a.count): \(a) vs \(b)")
        #expect(a.count == 15 && a[0..<3] == b[0..<3] && same * 3 >= a.count * 2)
        #expect(abs(p16 / p32 - 1) < 0.02)
    }

    /// TesseraQ from the AWQ-transformed block (the presets' default init): per-block losses below
    /// RTN's even with a short schedule, AWQ's report fields merged into the block reports.
    /// (The full ci schedule's perplexities are printed by TesseraQPipelineTests.beatsRTNOnEveryBlock.)
    @Test(arguments: [2, 3])
    func tesseraqFromAWQ(bits: Int) throws {
        #expect(try TesseraQOptions(options: [:]).initMethod == .awq)
        let (_, report) = try runTesseraQ(bits: bits, group: 32, extra: ["init": .string("awq"), "iters": .int(5)])
        let blocks = report["blocks"] as! [[String: Any]]
        #expect((report["options"] as! [String: Any])["init"] as? String == "awq")
        for b in blocks {
            #expect((b["final_loss"] as! Double) < (b["rtn_loss"] as! Double), "block \(b["block"]!)")
            #expect(b["awq_ratios"] != nil && b["awq_clip"] != nil && b["awq_seconds"] != nil)
        }
    }

    /// A NaN in the calibration activations stops the AWQ search with a numeric error naming the block.
    @Test func nonFiniteInputsStopTheSearch() throws {
        let model = try storiesWithNaNEmbedding()
        for method in ["awq", "tesseraq"] {
            #expect {
                try quantizeModel(model, config: QuantizeConfig(method: method, spec: QuantSpec(bits: 2, groupSize: 32),
                                                                options: ["preset": .string("ci")]),
                                  outDir: temporaryDirectory("awq-nan-out") + "/ckpt", calibration: [UInt32](repeating: 5, count: 4096))
            } throws: { e in
                guard let e = e as? TQError else { return false }
                return e.kind == .numeric && e.message.contains("block 0") && e.message.contains("AWQ")
            }
        }
    }
}
