import Foundation
import Testing
import TQKernels
@testable import TesseraQ

/// A tiny random block (GQA, partial groups) for gradient checks; with `qkNorm`, a Qwen3 block
/// (per-head q/k RMSNorm, weights away from 1 so that they matter).
func tinyBlock(seed: UInt64, qkNorm: Bool = false) throws -> (LlamaConfig, BlockWeights) {
    var fields: [String: JSONValue] = [
        "hidden_size": .int(16), "intermediate_size": .int(24), "num_hidden_layers": .int(1), "num_attention_heads": .int(4),
        "num_key_value_heads": .int(2), "head_dim": .int(4), "vocab_size": .int(8), "rms_norm_eps": .double(1e-5),
    ]
    if qkNorm { fields["model_type"] = .string("qwen3") }
    let c = try! LlamaConfig(json: .object(fields), path: "tiny")
    var rng = SeededGenerator(seed: seed)
    func buf(_ n: Int, _ scale: Float, offset: Float = 0) throws -> FloatBuffer {
        try FloatBuffer((0..<n).map { _ in offset + Float.random(in: -scale...scale, using: &rng) })
    }
    let linears = try LinearKind.allCases.map { k -> FloatBuffer in let (o, i) = k.shape(c); return try buf(o * i, 0.4) }
    let norms = qkNorm ? [try buf(c.headDim, 0.5, offset: 1), try buf(c.headDim, 0.5, offset: 1)] : nil
    return (c, BlockWeights(attnNorm: try buf(16, 0.2, offset: 1), mlpNorm: try buf(16, 0.2, offset: 1), linears: linears, biases: nil,
                            qkNorms: norms))
}

@Suite(.serialized) struct TesseraQGradientTests {
    /// The loss of the whole block with fake-quantised linears, as a function of the rounding
    /// and DST variables, against central finite differences.
    /// With `qkNorm`, the q and k variables' gradients also pass through the per-head norms' backward.
    @Test(arguments: [false, true])
    func wholeBlockGradientMatchesFiniteDifferences(qkNorm: Bool) throws {
        let (c, fp) = try tinyBlock(seed: 3, qkNorm: qkNorm)
        let spec = QuantSpec(bits: 3, groupSize: 12)
        let fq = try LinearKind.allCases.map { k -> FakeQuantLinear in
            let (o, i) = k.shape(c)
            let grid = QuantizedLinear.roundToNearest(fp[k].p, out: o, inFeatures: i, spec: spec)
            return try FakeQuantLinear(weight: fp[k].p, grid: grid)
        }
        // Move the variables off their initial values so DST and rounding both matter.
        var rng = SeededGenerator(seed: 9)
        for l in fq {
            for j in 0..<l.a.count { l.a.p[j] += Float.random(in: -0.5...0.5, using: &rng) }
            for j in 0..<l.v.count { l.v.p[j] = Float.random(in: -0.6...0.6, using: &rng) }
        }
        let train = fp.replacingLinears(fq.map(\.wHat))
        let S = 2, L = 5, d = c.hidden
        let work = try BlockWorkspace(config: c, sequences: S, length: L)
        let x = try FloatBuffer((0..<(S * L * d)).map { _ in Float.random(in: -1...1, using: &rng) })
        let target = try FloatBuffer((0..<(S * L * d)).map { _ in Float.random(in: -1...1, using: &rng) })
        let y = try FloatBuffer(count: S * L * d), dY = try FloatBuffer(count: S * L * d)
        func loss() -> Double {
            for l in fq { l.materialize() }
            work.forward(x.p, weights: train, into: y.p)
            return tqk_l2_loss(y.p, target.p, Int64(S * L), Int64(d), nil, dY.p)
        }
        tqk_set_num_threads(1)
        defer { tqk_set_num_threads(2) }
        _ = loss()
        let grads = try BlockGradients(config: c, rows: S * L)
        work.backward(dY.p, weights: train, into: grads)
        for (k, l) in fq.enumerated() { l.backward(grads.dW[k].p) }

        func check(_ name: String, _ param: FloatBuffer, _ grad: FloatBuffer, indices: [Int]) {
            var num: [Double] = [], ana: [Double] = []
            for j in indices {
                let keep = param.p[j], h: Float = 1e-2
                param.p[j] = keep + h; let lp = loss()
                param.p[j] = keep - h; let lm = loss()
                param.p[j] = keep
                num.append((lp - lm) / Double(2 * h))
                ana.append(Double(grad.p[j]))
            }
            let diff = zip(num, ana).reduce(0.0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }.squareRoot()
            let norm = num.reduce(0.0) { $0 + $1 * $1 }.squareRoot()
            #expect(norm > 1e-4, "\(name): gradient too small to test")
            #expect(diff / norm < 3e-2, "\(name): relative error \(diff / norm)")
            // The same comparison rejects a wrong gradient.
            let wrong = zip(num, ana.map { $0 * 1.2 }).reduce(0.0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }.squareRoot()
            #expect(wrong / norm > 3e-2)
        }
        for (k, l) in fq.enumerated() {
            // Soft weights whose code is strictly inside the grid and away from h's kinks.
            let soft = (0..<l.a.count).filter { j in
                let hv = 1.2 / (1 + exp(-Double(l.a.p[j]))) - 0.1
                let g = (j % l.inFeatures) / l.group, o = j / l.inFeatures
                let u = Double(l.fl.p[j]) + hv + Double(l.z.p[o * l.nGroups + g])
                return hv > 0.05 && hv < 0.95 && u > 0.1 && u < Double(spec.qmax) - 0.1
            }
            check("\(LinearKind.allCases[k]).a", l.a, l.da, indices: Array(soft.prefix(12)))
            check("\(LinearKind.allCases[k]).v", l.v, l.dv, indices: Array(0..<min(l.v.count, 12)))
        }
    }

    @Test func softWeightsStartAtTheOriginals() throws {
        let (c, fp) = try tinyBlock(seed: 5)
        for k in LinearKind.allCases {
            let (o, i) = k.shape(c)
            let grid = QuantizedLinear.roundToNearest(fp[k].p, out: o, inFeatures: i, spec: QuantSpec(bits: 2, groupSize: 8))
            let l = try FakeQuantLinear(weight: fp[k].p, grid: grid)
            l.materialize()
            // Exact up to float rounding, except where the min/max grid clamps a group's extreme
            // weight (its zero point is rounded): there within half a step.
            var exact = 0
            for j in 0..<(o * i) {
                let err = abs(l.wHat.p[j] - fp[k].p[j]), step = grid.scales[(j % i) / grid.group * o + j / i]
                if err <= 1e-5 * max(1, abs(fp[k].p[j])) { exact += 1 } else { #expect(err <= 0.51 * step) }
            }
            #expect(Double(exact) >= 0.75 * Double(o * i), "\(k): \(exact) of \(o * i) exact")
            #expect(l.dstRange == (1, 1))
        }
    }
}

/// Quantizes stories260K with a calibrated `method` (its `ci` preset, calibration on WikiText-2 valid)
/// into `out` or a fresh temporary directory; `extra` overrides configuration keys.
func runCalibrated(_ method: String, bits: Int, group: Int, extra: [String: JSONValue] = [:], out: String? = nil,
                   progress: QuantProgressHandler? = nil) throws -> (String, [String: Any]) {
    let model = try LlamaModel(directory: Fixtures.model("stories260K"))
    var options: [String: JSONValue] = ["preset": .string("ci")]
    options.merge(extra) { $1 }
    let dir = out ?? temporaryDirectory(method) + "/ckpt"
    let report = try quantizeModel(model, config: QuantizeConfig(method: method, spec: QuantSpec(bits: bits, groupSize: group),
                                                                  options: options), outDir: dir,
                                   calibration: Fixtures.storiesTokens("valid"), progress: progress)
    return (dir, report)
}

func runTesseraQ(bits: Int, group: Int, extra: [String: JSONValue] = [:], out: String? = nil,
                 progress: QuantProgressHandler? = nil) throws -> (String, [String: Any]) {
    try runCalibrated("tesseraq", bits: bits, group: group, extra: extra, out: out, progress: progress)
}

/// A copy of stories260K whose embedding row 5 holds a NaN: calibrating on token 5 puts a NaN
/// into the block inputs.
func storiesWithNaNEmbedding() throws -> LlamaModel {
    let dir = temporaryDirectory("nan")
    let store = try TensorStore(directory: Fixtures.model("stories260K"))
    var w = SafeTensorsWriter()
    for name in store.names {
        var v = try store.floats(name)
        if name == "model.embed_tokens.weight" { v[5 * 64] = .nan }
        w.add(name, .f32, store.info(name)!.shape, v)
    }
    try w.write(to: dir + "/model.safetensors")
    try FileManager.default.copyItem(atPath: Fixtures.model("stories260K") + "/config.json", toPath: dir + "/config.json")
    return try LlamaModel(directory: dir)
}

@Suite(.serialized)
struct TesseraQPipelineTests {
    @Test(arguments: [2, 3])
    func beatsRTNOnEveryBlock(bits: Int) throws {
        let (dir, report) = try runTesseraQ(bits: bits, group: 32)
        let blocks = report["blocks"] as! [[String: Any]]
        #expect(blocks.count == 5)
        for b in blocks {
            #expect((b["final_loss"] as! Double) < (b["rtn_loss"] as! Double), "block \(b["block"]!)")
            #expect((b["changed_from_nearest"] as! Double) > 0)
            // The steps' time is part of the block's (which also holds the start and the loss passes).
            #expect((b["train_seconds"] as! Double) > 0 && (b["train_seconds"] as! Double) < (b["seconds"] as! Double))
        }
        let (_, rtn) = try quantizeStories(QuantSpec(bits: bits, groupSize: 32))
        let pTQ = try perplexity(try LlamaModel(directory: dir)), pRTN = try perplexity(try LlamaModel(directory: rtn))
        print("stories260K W\(bits) g32 ci preset: RTN \(pRTN), TesseraQ \(pTQ), ratio \(pRTN / pTQ)")
        #expect(pTQ < pRTN * (bits == 2 ? 0.5 : 0.97))
        let saved = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/quantize_report.json"))) as! [String: Any]
        #expect((saved["blocks"] as! [Any]).count == 5)
        #expect(!FileManager.default.fileExists(atPath: dir + "/blocks"))
    }

    /// compute_dtype bf16 trains the same problem in bf16 GEMMs: every block still beats RTN, and
    /// the perplexity stays near the float32 run's. The bounds are this 64-wide model's noise, not
    /// issue 12's 2% (which README reports as a mean over seeds): one run's perplexity moves by
    /// 2-4% at W3 and 5-8% at W2 with the seed or an ulp of arithmetic (an ulp in SiLU's exp moved
    /// the float32 W2 run from 133.0 to 129.6).
    @Test(arguments: [(3, 0.05), (2, 0.12)])
    func bf16TrainingMatchesFloat32(bits: Int, bound: Double) throws {
        let (f32Dir, _) = try runTesseraQ(bits: bits, group: 32)
        let (bf16Dir, report) = try runTesseraQ(bits: bits, group: 32, extra: ["compute_dtype": .string("bf16")])
        #expect((report["options"] as? [String: Any])?["compute_dtype"] as? String == "bf16")
        for b in report["blocks"] as! [[String: Any]] {
            #expect((b["final_loss"] as! Double) < (b["rtn_loss"] as! Double), "block \(b["block"]!)")
        }
        let p32 = try perplexity(try LlamaModel(directory: f32Dir)), p16 = try perplexity(try LlamaModel(directory: bf16Dir))
        print("stories260K W\(bits) g32 ci preset: TesseraQ f32 \(p32), bf16 \(p16), ratio \(p16 / p32)")
        #expect(abs(p16 / p32 - 1) < bound)
    }

    static let quick: [String: JSONValue] = ["iters": .int(4), "n_samples": .int(8)]

    /// A quick W2 run cancelled once blocks 0-2 are persisted (as a kill would leave it), in `tag`.
    func interruptedRun(_ tag: String) throws -> String {
        let dir = temporaryDirectory(tag) + "/ckpt"
        #expect(throws: TQError.self) {
            try runTesseraQ(bits: 2, group: 32, extra: Self.quick, out: dir) { $0.block < 3 }
        }
        #expect(!FileManager.default.fileExists(atPath: dir))
        #expect(FileManager.default.fileExists(atPath: dir + ".partial/blocks/0002/block.sum"))
        return dir
    }

    /// Resumes the run in `dir`; returns the blocks it trained (finished blocks report no loss) and
    /// whether its checkpoint equals the uninterrupted run's.
    func resume(_ dir: String) throws -> (trained: [Int], identical: Bool) {
        let (full, _) = try runTesseraQ(bits: 2, group: 32, extra: Self.quick)
        var trained: Set<Int> = []
        _ = try runTesseraQ(bits: 2, group: 32, extra: Self.quick, out: dir) { p in
            if !p.loss.isNaN { trained.insert(p.block) }
            return true
        }
        return (trained.sorted(), FileManager.default.contentsEqual(atPath: full + "/model.safetensors",
                                                                    andPath: dir + "/model.safetensors"))
    }

    @Test func resumeAfterKillIsBitIdentical() throws {
        let dir = try interruptedRun("resume")
        let (trained, identical) = try resume(dir)
        #expect(trained == [3, 4] && identical, "resumed run trained blocks \(trained)")
        // A different configuration refuses the partial state of another run.
        #expect(throws: TQError.self) {
            try runTesseraQ(bits: 2, group: 32, extra: Self.quick, out: dir + "2") { $0.block < 1 }
        }
        #expect { try runTesseraQ(bits: 3, group: 32, extra: Self.quick, out: dir + "2") } throws: {
            ($0 as? TQError)?.message.contains("different run") == true
        }
    }

    /// A persisted block whose files were damaged after the kill (a flipped byte, an empty file)
    /// fails its checksum and is computed again; the result is still bit-identical.
    @Test func damagedBlocksAreRecomputedNotLoaded() throws {
        let blocks = try interruptedRun("resume-damaged") + ".partial/blocks/"
        let weights = URL(fileURLWithPath: blocks + "0001/model.safetensors")
        var bytes = try Data(contentsOf: weights)
        bytes[bytes.count / 2] ^= 0x10
        try bytes.write(to: weights)
        try Data().write(to: URL(fileURLWithPath: blocks + "0000/report.json"))
        let (trained, identical) = try resume(String(blocks.dropLast(".partial/blocks/".count)))
        #expect(trained == [0, 1, 3, 4] && identical, "resumed run trained blocks \(trained)")
    }

    @Test func nonFiniteLossStopsWithBlockRoundStep() throws {
        let tokens = [UInt32](repeating: 5, count: 4096)
        let model = try storiesWithNaNEmbedding()
        #expect {
            try quantizeModel(model, config: QuantizeConfig(method: "tesseraq", spec: QuantSpec(bits: 2, groupSize: 32),
                                                            options: ["preset": .string("ci"), "init": .string("rtn")]),
                              outDir: temporaryDirectory("nan-out") + "/ckpt", calibration: tokens)
        } throws: { e in
            guard let e = e as? TQError else { return false }
            return e.kind == .numeric && e.message.contains("block 0, round 1, step 1")
        }
    }

    @Test func memoryIsCheckedUpFront() throws {
        let t0 = Date()
        #expect {
            try runTesseraQ(bits: 2, group: 32, extra: ["n_samples": .int(4_000_000), "seq_len": .int(512), "batch": .int(4)])
        } throws: { ($0 as? TQError)?.kind == .outOfMemory }
        #expect(Date().timeIntervalSince(t0) < 5)
    }

    @Test(arguments: [
        (#"{"method": "tesseraq", "iters": -1}"#, "iters"), (#"{"method": "tesseraq", "thresholds": [2]}"#, "thresholds"),
        (#"{"method": "tesseraq", "preset": "slow"}"#, "preset"), (#"{"method": "tesseraq", "init": "gptq"}"#, "init"),
        (#"{"method": "tesseraq", "cache_dtype": "f8"}"#, "cache_dtype"), (#"{"method": "tesseraq", "batch": 9, "n_samples": 4}"#, "batch"),
        (#"{"method": "tesseraq", "lr": "fast"}"#, "lr"), (#"{"method": "tesseraq", "compute_dtype": "f16"}"#, "compute_dtype"), (#"{"method": "rtn", "iters": 3}"#, "iters"),
        (#"{"method": "tesseraq", "massive_token_cap": 0.5}"#, "massive_token_cap"),
        (#"{"method": "tesseraq", "massive_token_cap": -1}"#, "massive_token_cap"),
        (#"{"method": "tesseraq", "massive_token_cap": "8"}"#, "massive_token_cap"),
    ])
    func rejectsBadTesseraQKeys(json: String, key: String) {
        #expect { try QuantizeConfig.parse(json) } throws: { ($0 as? TQError)?.message.contains(key) == true }
    }
}
