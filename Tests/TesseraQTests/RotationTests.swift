// QuaRot's pieces: the Hadamard kernel and matrices, activation fake quantization (forward and
// its straight-through backward), the rotated model's equivalence, the configuration keys, and
// WxAy checkpoints read back by evaluation and decoding.

import Foundation
import Testing
import TQKernels
@testable import TesseraQ

private func withThreads<R>(_ n: Int32, _ body: () throws -> R) rethrows -> R {
    let old = tqk_get_num_threads()
    tqk_set_num_threads(n)
    defer { tqk_set_num_threads(old) }
    return try body()
}

/// The dense normalised (H_m (x) H_p) / sqrt(n) in double, H_p by Sylvester's recursion from its definition.
private func denseHadamard(n: Int, paley: [Float], m: Int) -> [Double] {
    let p = n / m
    func sylvester(_ b: Int, _ d: Int) -> Double { (b & d).nonzeroBitCount % 2 == 0 ? 1 : -1 }
    var h = [Double](repeating: 0, count: n * n)
    for r in 0..<n {
        for c in 0..<n {
            let hm = m == 1 ? 1 : Double(paley[(r / p) * m + c / p])
            h[r * n + c] = hm * sylvester(r % p, c % p) / Double(n).squareRoot()
        }
    }
    return h
}

/// QuaRot's ActQuantizer, written out from its definition (not from the kernel).
private func fakeQuantReference(_ x: [Float], group: Int, bits: Int, sym: Bool, clip: Float) -> [Float] {
    var y = x
    for g in stride(from: 0, to: x.count, by: group) {
        let v = Array(x[g..<(g + group)])
        var hi = max(v.max()!, 0) * clip, lo = min(v.min()!, 0) * clip
        if sym {
            let qmax = Float((1 << (bits - 1)) - 1)
            let amax = max(-min(v.min()!, 0), max(v.max()!, 0)) * clip
            let scale = amax == 0 ? 1 : amax / qmax
            for i in 0..<group { y[g + i] = min(max((v[i] / scale).rounded(.toNearestOrEven), -qmax - 1), qmax) * scale }
        } else {
            if lo == 0 && hi == 0 { lo = -1; hi = 1 }
            let qmax = Float((1 << bits) - 1), scale = (hi - lo) / qmax, zero = (-lo / scale).rounded(.toNearestOrEven)
            for i in 0..<group {
                let q = min(max((v[i] / scale).rounded(.toNearestOrEven) + zero, 0), qmax)
                y[g + i] = (q - zero) * scale
            }
        }
    }
    return y
}

@Suite("QuaRot rotations and activation quantization", .serialized)
struct RotationTests {
    // MARK: Hadamard matrices and the kernel

    @Test("Paley matrices are Hadamard: +-1 entries, H H^T = m I", arguments: [4, 8, 12, 20, 24, 28, 36, 44, 52, 60, 68, 100])
    func paleyMatricesAreHadamard(_ m: Int) throws {
        let h = try #require(HadamardTransform.paleyMatrix(m))
        #expect(h.allSatisfy { $0 == 1 || $0 == -1 })
        for i in 0..<m {
            for j in 0..<m {
                let dot = (0..<m).reduce(Float(0)) { $0 + h[i * m + $1] * h[j * m + $1] }
                #expect(dot == (i == j ? Float(m) : 0), "m \(m) rows \(i), \(j)")
            }
        }
    }

    @Test func sizesFactorIntoAPaleyOrderAndAPowerOfTwo() throws {
        #expect(HadamardTransform.paleyOrder(for: 576) == 36)     // SmolLM2's hidden size
        #expect(HadamardTransform.paleyOrder(for: 1536) == 12)    // and its intermediate size
        #expect(HadamardTransform.paleyOrder(for: 64) == 1)
        #expect(HadamardTransform.paleyOrder(for: 5120) == 20)
        #expect(HadamardTransform.paleyOrder(for: 172) == nil)    // 172 is not a Paley order
        #expect(throws: TQError.self) { try HadamardTransform(size: 172) }
        #expect(HadamardTransform.paleyOrder(for: 52 * 64) == 52)  // Paley II over GF(25)
        #expect(HadamardTransform.paleyMatrix(92) == nil)        // 91 = 7 x 13, 45: neither a prime power here
    }

    @Test("hadamard_rows against the dense matrix; transpose is its inverse; 1 and 2 threads",
          arguments: [(8, 1), (64, 1), (12, 12), (48, 12), (72, 36), (576, 36), (80, 20)])
    func hadamardRowsMatchesTheDenseMatrix(_ n: Int, _ m: Int) throws {
        let paley = m == 1 ? [] : try #require(HadamardTransform.paleyMatrix(m))
        let dense = denseHadamard(n: n, paley: paley, m: m)
        var rng = TestRNG(UInt64(n))
        let rows = 5, x = rng.floats(rows * n)
        var results: [[Float]] = []
        for threads: Int32 in [1, 2] {
            for transpose in [false, true] {
                var y = x
                withThreads(threads) {
                    paley.withUnsafeBufferPointer { tqk_hadamard_rows(&y, Int64(rows), Int64(n), $0.baseAddress, Int64(m), transpose ? 1 : 0) }
                }
                for r in 0..<rows {
                    for c in 0..<n {
                        let want = (0..<n).reduce(0.0) { $0 + Double(x[r * n + $1]) * (transpose ? dense[c * n + $1] : dense[$1 * n + c]) }
                        #expect(abs(Double(y[r * n + c]) - want) < 1e-5, "n \(n) m \(m) T \(transpose) [\(r), \(c)]")
                    }
                }
                results.append(y)
            }
        }
        #expect(results[0] == results[2] && results[1] == results[3], "thread count changed the result")
        // The transform with random signs, then its transpose, gives the input back.
        let q = try HadamardTransform(size: n, seed: 7)
        var z = x
        q.apply(&z, rows: rows)
        #expect(z != x)
        q.applyTransposed(&z, rows: rows)
        #expect(zip(z, x).allSatisfy { abs($0 - $1) < 1e-5 })
    }

    // MARK: activation fake quantization

    @Test("act_fakequant equals QuaRot's quantizer, per token and per head, 1 and 2 threads",
          arguments: [(3, false), (4, false), (4, true), (6, false), (8, true)])
    func actFakeQuantMatchesTheReference(_ bits: Int, _ sym: Bool) {
        var rng = TestRNG(UInt64(bits * 2 + (sym ? 1 : 0)))
        let rows = 300, cols = 96
        var x = rng.floats(rows * cols, -3, 3)
        for i in 0..<cols { x[7 * cols + i] = 0 }                    // an all-zero token
        for i in 0..<cols { x[8 * cols + i] = abs(x[8 * cols + i]) }  // an all-positive one
        for (group, clip) in [(cols, Float(0.9)), (cols, 1), (16, 1)] {
            let want = fakeQuantReference(x, group: group, bits: bits, sym: sym, clip: clip)
            for threads: Int32 in [1, 2] {
                var y = x
                withThreads(threads) { tqk_act_fakequant(&y, Int64(rows), Int64(cols), Int64(group), Int32(bits), sym ? 1 : 0, clip) }
                #expect(y == want, "bits \(bits) sym \(sym) group \(group) clip \(clip) threads \(threads)")
            }
            // At most 2^bits levels per group, and the zero row stays zero.
            var y = x
            tqk_act_fakequant(&y, Int64(rows), Int64(cols), Int64(group), Int32(bits), sym ? 1 : 0, clip)
            #expect(Set(y[0..<group]).count <= 1 << bits)
            #expect(y[(7 * cols)..<(8 * cols)].allSatisfy { $0 == 0 })
        }
    }

    // MARK: the rotated model

    /// A SmolLM2-135M block's shapes (576 = 36 x 16, 1536 = 12 x 128, 9 heads of 64, 3 KV heads) with
    /// random weights, one layer and a small vocabulary.
    static let smolBlock: [String: JSONValue] = [
        "architectures": .array([.string("LlamaForCausalLM")]), "model_type": .string("llama"),
        "hidden_size": .int(576), "intermediate_size": .int(1536), "num_hidden_layers": .int(1),
        "num_attention_heads": .int(9), "num_key_value_heads": .int(3), "vocab_size": .int(512),
        "max_position_embeddings": .int(256), "rms_norm_eps": .double(1e-5), "rope_theta": .double(100000),
        "tie_word_embeddings": .bool(true), "torch_dtype": .string("float32"),
    ]

    func rotated(_ dir: String, seed: UInt64 = 3) throws -> (LlamaModel, LlamaModel) {
        let model = try LlamaModel(directory: dir)
        let out = temporaryDirectory("rotated")
        try ModelRotation(model: model, seed: seed).write(to: out + "/m")
        return (model, try LlamaModel(directory: out + "/m"))
    }

    @Test("the rotated float model computes the same logits (1e-4 relative)",
          arguments: ["stories260K", "tiny-llama", "tiny-qwen2-gqa", "tiny-qwen3", "tiny-mistral", "smol-block"])
    func rotatedModelIsEquivalent(_ name: String) throws {
        let dir = name == "smol-block" ? try writeRandomModel(Self.smolBlock, seed: 5, tag: "smol-block") : Fixtures.model(name)
        let (model, rot) = try rotated(dir)
        #expect(rot.config.onlineHadamard == (name != "stories260K"))   // 172 has no Hadamard matrix here
        #expect(rot.config.tiedEmbeddings == false && rot.config.activationQuant == nil)
        var rng = TestRNG(11)
        let tokens = (0..<40).map { _ in UInt32(rng.int(model.config.vocab)) }
        let a = try logits(model, tokens), b = try logits(rot, tokens)
        let err = relativeMaxError(b, a)
        #expect(err < 1e-4, "\(name): rotated logits differ by \(err) relative")
        // The weights did change: the stream is rotated, the norms are unit.
        let block = try rot.loadBlock(0)
        #expect(block.attnNorm.array.allSatisfy { $0 == 1 })
        #expect(try rot.store.floats("model.embed_tokens.weight") != (try model.store.floats("model.embed_tokens.weight")))
    }

    @Test func rotationRefusesWhatItCannotFold() throws {
        for (name, why) in [("tiny-gemma2", "post-norms"), ("tiny-phi3", "fused")] {
            let model = try LlamaModel(directory: Fixtures.model(name))
            #expect { try ModelRotation(model: model, seed: 0) } throws: { e in
                "\(e)".hasPrefix("rotate:") && "\(e)".contains(why)
            }
        }
    }

    // MARK: the straight-through estimator and the online Hadamard in the backward

    /// With quantized activations and the online Hadamard, the MLP's weight gradients are those of
    /// the STE: dW_down = dY^T act_q, dact = (dY W_down) H^T (the quantizer's gradient the identity),
    /// then SwiGLU's backward and dW_gate = dg^T n2_q, all written out here in double.
    @Test func mlpGradientsFollowTheStraightThroughEstimator() throws {
        let dir = try writeRandomModel(Self.smolBlock, seed: 8, tag: "ste")
        let (_, rot) = try rotated(dir)
        var c = rot.config
        c.activationQuant = ActivationQuantSpec(bits: 4, kvBits: 4)
        let T = 24, d = c.hidden, f = c.intermediate
        let w = try rot.loadBlock(0)
        let work = try BlockWorkspace(config: c, sequences: 1, length: T)
        var rng = TestRNG(4)
        let x = try FloatBuffer(rng.floats(T * d)), y = try FloatBuffer(count: T * d), dY = try FloatBuffer(rng.floats(T * d))
        work.forward(x.p, weights: w, into: y.p)
        // The saved inputs are the quantized ones: at most 16 levels per token.
        #expect(Set(work.act.array[0..<f]).count <= 16 && Set(work.n2.array[0..<d]).count <= 16)
        let grads = try BlockGradients(config: c, rows: T)
        work.backward(dY.p, weights: w, into: grads)
        let h = try HadamardTransform(size: f)
        var dact = [Float](repeating: 0, count: T * f)
        for t in 0..<T { for j in 0..<f { dact[t * f + j] = Float((0..<d).reduce(0.0) { $0 + Double(dY.p[t * d + $1]) * Double(w[.down].p[$1 * f + j]) }) } }
        h.applyTransposed(&dact, rows: T)
        var worst = 0.0
        for _ in 0..<40 {
            let o = rng.int(d), i = rng.int(f)
            let want = (0..<T).reduce(0.0) { $0 + Double(dY.p[$1 * d + o]) * Double(work.act.p[$1 * f + i]) }
            worst = max(worst, abs(Double(grads[.down].p[o * f + i]) - want) / (abs(want) + 1e-3))
            let r = rng.int(f), k = rng.int(d)
            let wantGate = (0..<T).reduce(0.0) { acc, t in
                let g = Double(work.g.p[t * f + r]), u = Double(work.u.p[t * f + r]), s = 1 / (1 + exp(-g))
                return acc + Double(dact[t * f + r]) * u * s * (1 + g * (1 - s)) * Double(work.n2.p[t * d + k])
            }
            worst = max(worst, abs(Double(grads[.gate].p[r * d + k]) - wantGate) / (abs(wantGate) + 1e-3))
        }
        #expect(worst < 1e-3, "STE gradients off by \(worst) relative")
    }

    /// The online Hadamard is differentiable: with float activations the whole block's dW still
    /// matches central finite differences.
    @Test func rotatedBlockGradientsMatchFiniteDifferences() throws {
        let (_, rot) = try rotated(Fixtures.model("tiny-llama"))
        let c = rot.config, T = 12
        #expect(c.onlineHadamard)
        let w = try rot.loadBlock(0)
        let work = try BlockWorkspace(config: c, sequences: 1, length: T)
        var rng = TestRNG(9)
        let x = try FloatBuffer(rng.floats(T * c.hidden)), target = try FloatBuffer(rng.floats(T * c.hidden))
        for (kind, err, size) in try finiteDifferenceErrors(work, w, x: x, target: target, kinds: [.gate, .up, .down, .o], rng: &rng) {
            #expect(size > 1e-4 && err < 1e-2 * size, "\(kind): |dW - FD| \(err) vs |FD| \(size)")
        }
    }

    // MARK: configuration

    @Test func activationKeysAreParsedAndBadCombinationsRefused() throws {
        let ok = try QuantizeConfig.parse(#"{"method": "rtn", "a_bits": 4, "a_sym": true, "kv_bits": 8, "rotate": "hadamard", "rotate_seed": 3}"#)
        #expect(ok.activations == ActivationQuantSpec(bits: 4, sym: true, clipRatio: 0.9, kvBits: 8))
        #expect(ok.rotationSeed == 3)
        let plain = try QuantizeConfig.parse(#"{"method": "rtn"}"#)
        #expect(plain.activations == nil && plain.rotationSeed == nil)
        let bad: [(String, String)] = [
            (#"{"a_bits": 5}"#, "config key a_bits"), (#"{"a_bits": 2}"#, "config key a_bits"),
            (#"{"kv_bits": 6}"#, "config key kv_bits"), (#"{"a_bits": 4, "a_clip_ratio": 1.5}"#, "config key a_clip_ratio"),
            (#"{"a_sym": true}"#, "config key a_sym"), (#"{"a_clip_ratio": 0.9}"#, "config key a_clip_ratio"),
            (#"{"rotate": "random"}"#, "config key rotate"), (#"{"rotate_seed": 1}"#, "config key rotate_seed"),
            (#"{"a_bits": "4"}"#, "config key a_bits"),
        ]
        for (text, key) in bad {
            #expect { try QuantizeConfig.parse(text) } throws: { "\($0)".hasPrefix(key) }
        }
    }

    @Test func checkpointRecordsAreReadStrictly() throws {
        func config(_ tesseraq: String) -> String {
            #"{"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "#
                + #""num_attention_heads": 4, "vocab_size": 16, "tesseraq": "# + tesseraq + "}"
        }
        let good = try LlamaConfig(json: try JSONValue.parse(Data(config(
            #"{"method": "rtn", "rotation": {"type": "hadamard", "seed": 1, "online_hadamard": "down_proj"}, "activations": {"bits": 4, "sym": false, "clip_ratio": 0.9, "kv_bits": 16}}"#).utf8),
            what: "t"), path: "c")
        #expect(good.onlineHadamard && good.activationQuant == ActivationQuantSpec(bits: 4))
        for bad in [#"{"rotation": {"type": "random"}}"#, #"{"rotation": {"type": "hadamard", "online_hadamard": "o_proj"}}"#,
                    #"{"activations": {"bits": 5, "clip_ratio": 1, "kv_bits": 16}}"#, #"{"activations": {"bits": 4, "kv_bits": 16}}"#] {
            #expect(throws: TQError.self, "\(bad)") { try LlamaConfig(json: try JSONValue.parse(Data(config(bad).utf8), what: "t"), path: "c") }
        }
    }

    // MARK: WxAy checkpoints

    /// RTN W4A4 with kv_bits 4 on the rotated tiny-llama (online Hadamard included): the checkpoint records rotation and
    /// activations, and evaluation, a decoding session and the in-memory simulation agree; without
    /// the activation quantization the same checkpoint scores differently (so it is applied).
    @Test func w4a4CheckpointReproducesFromDisk() throws {
        let model = try LlamaModel(directory: Fixtures.model("tiny-llama"))
        let out = temporaryDirectory("w4a4") + "/q"
        let config = try QuantizeConfig.parse(#"{"method": "rtn", "bits": 4, "group_size": 16, "a_bits": 4, "kv_bits": 4, "rotate": "hadamard"}"#)
        let report = try quantizeModel(model, config: config, outDir: out)
        #expect(report["rotate"] as? String == "hadamard")
        #expect(!FileManager.default.fileExists(atPath: out + ".rotated"))
        let q = try LlamaModel(directory: out)
        #expect(q.config.onlineHadamard && q.config.activationQuant == ActivationQuantSpec(bits: 4, kvBits: 4))
        var rng = TestRNG(2)
        let tokens = (0..<30).map { _ in UInt32(rng.int(q.config.vocab)) }
        let full = try logits(q, tokens)
        let session = try DecodingSession(model: q, capacity: 64)
        var stepwise = [Float](repeating: 0, count: tokens.count * q.config.vocab)
        try tokens[0..<10].withUnsafeBufferPointer { t in try stepwise.withUnsafeMutableBufferPointer { try session.prefill(t, allLogits: true, into: $0.baseAddress!) } }
        for i in 10..<tokens.count {
            try stepwise.withUnsafeMutableBufferPointer { try session.decode(tokens[i], into: $0.baseAddress! + i * q.config.vocab) }
        }
        #expect(relativeMaxError(stepwise, full) < 1e-5, "decoding differs from the full forward")
        // The same checkpoint read with float activations gives other logits.
        var floatQ = q.config
        floatQ.activationQuant = nil
        let work = try BlockWorkspace(config: q.config, sequences: 1, length: tokens.count)
        let workF = try BlockWorkspace(config: floatQ, sequences: 1, length: tokens.count)
        let x = try tokens.withUnsafeBufferPointer { try q.embed($0) }
        let xf = try FloatBuffer(x.array)
        work.forward(x.p, weights: try q.loadBlock(0), into: x.p)
        workF.forward(xf.p, weights: try q.loadBlock(0), into: xf.p)
        #expect(x.array != xf.array)
    }

    /// A cancelled TesseraQ W4A4 run over the rotated model resumes to the uninterrupted checkpoint,
    /// byte for byte; the rotated model written beside the output is gone after each run.
    @Test func rotatedW4A4RunResumesBitIdentically() throws {
        var fields = Self.smolBlock
        fields["hidden_size"] = .int(32); fields["intermediate_size"] = .int(96); fields["num_hidden_layers"] = .int(3)
        fields["num_attention_heads"] = .int(4); fields["num_key_value_heads"] = .int(2)
        let src = try writeRandomModel(fields, seed: 12, tag: "w4a4-resume")
        let config = try QuantizeConfig.parse(#"{"method": "tesseraq", "bits": 4, "group_size": 32, "a_bits": 4, "kv_bits": 8, "rotate": "hadamard", "init": "rtn", "preset": "ci", "iters": 2}"#)
        let calibration = try Fixtures.storiesTokens("valid")
        let full = temporaryDirectory("w4a4-full") + "/q"
        let report = try quantizeModel(try LlamaModel(directory: src), config: config, outDir: full, calibration: calibration)
        let blocks = try #require(report["blocks"] as? [[String: Any]])
        #expect(blocks.allSatisfy { ($0["final_loss"] as! Double) < ($0["rtn_loss"] as! Double) })
        let dir = temporaryDirectory("w4a4-resume") + "/q"
        #expect(throws: TQError.self) {
            try quantizeModel(try LlamaModel(directory: src), config: config, outDir: dir, calibration: calibration) { $0.block < 1 }
        }
        // Cancelled at block 1's first step: block 0 is persisted, block 1 is not.
        #expect(FileManager.default.fileExists(atPath: dir + ".partial/blocks/0000/report.json"))
        #expect(!FileManager.default.fileExists(atPath: dir + ".partial/blocks/0001/report.json"))
        #expect(!FileManager.default.fileExists(atPath: dir + ".rotated"))
        try quantizeModel(try LlamaModel(directory: src), config: config, outDir: dir, calibration: calibration)
        #expect(FileManager.default.contentsEqual(atPath: full + "/model.safetensors", andPath: dir + "/model.safetensors"))
        #expect(!FileManager.default.fileExists(atPath: dir + ".rotated"))
    }
}
