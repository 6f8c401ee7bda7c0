import Foundation
import Testing
import TQKernels
@testable import TesseraQ

/// A tiny model built by scripts/make_tiny_models.py with transformers, and the numbers
/// transformers computed on it (reference.json).
struct TinyFixture: CustomTestStringConvertible, Sendable {
    let name: String
    var directory: String { Fixtures.model(name) }
    var testDescription: String { name }

    struct Reference {
        let sequences: [[UInt32]]
        let logits: [[Float]]
        let layer: Int
        let input, target: [Float]
        let loss: Double
        let gradNorms: [String: Double]
        let gradHead: [String: [Double]]
    }

    static func floats(_ base64: Any?) throws -> [Float] {
        let text = try #require(base64 as? String)
        let data = try #require(Data(base64Encoded: text))
        return data.withUnsafeBytes { raw in
            (0..<(data.count / 4)).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) }
        }
    }

    func reference() throws -> Reference {
        let data = try Data(contentsOf: URL(fileURLWithPath: directory + "/reference.json"))
        let r = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let block = try #require(r["block"] as? [String: Any])
        return Reference(sequences: try #require(r["sequences"] as? [[Int]]).map { $0.map(UInt32.init) },
                         logits: try #require(r["logits"] as? [Any]).map(Self.floats),
                         layer: try #require(block["layer"] as? Int), input: try Self.floats(block["input"]),
                         target: try Self.floats(block["target"]), loss: try #require(block["loss"] as? Double),
                         gradNorms: try #require(block["grad_norms"] as? [String: Double]),
                         gradHead: try #require(block["grad_head"] as? [String: [Double]]))
    }

    /// The fixture opened, its reference, and the reference block input [T x hidden] of the long sequence.
    func blockCase() throws -> (model: LlamaModel, reference: Reference, length: Int, input: FloatBuffer) {
        let ref = try reference()
        return (try LlamaModel(directory: directory), ref, ref.sequences[0].count, try FloatBuffer(ref.input))
    }

    /// Calibration tokens for the fixture's vocabulary (random, seeded).
    static func calibrationTokens(vocab: Int) -> [UInt32] {
        var rng = TestRNG(77)
        return (0..<8192).map { _ in UInt32(rng.int(vocab)) }
    }

    /// The fixtures whose every feature the library implements.
    static let supported = ["tiny-llama", "tiny-qwen2", "tiny-qwen2-gqa", "tiny-qwen3", "tiny-mistral", "tiny-phi3",
                            "tiny-gemma2", "tiny-gemma3"]
        .map(TinyFixture.init)
}

/// JSON with every number as a double (a writer may print 1000000.0 as 1000000).
func sameNumbers(_ v: JSONValue) -> JSONValue {
    switch v {
    case .int(let i): .double(Double(i))
    case .array(let a): .array(a.map(sameNumbers))
    case .object(let o): .object(o.mapValues(sameNumbers))
    default: v
    }
}

/// The exported config.json is the input's plus quantization_config (and our "tesseraq" key).
func expectConfigKept(_ out: String, original: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
    guard case .object(var written) = try JSONValue.parseFile(out + "/config.json") else {
        Issue.record("\(out)/config.json is not an object", sourceLocation: sourceLocation)
        return
    }
    #expect(written.removeValue(forKey: "quantization_config") != nil, sourceLocation: sourceLocation)
    written.removeValue(forKey: "tesseraq")
    #expect(sameNumbers(.object(written)) == sameNumbers(try JSONValue.parseFile(original + "/config.json")),
            sourceLocation: sourceLocation)
}

@Suite(.serialized) struct TinyModelTests {
    @Test(arguments: TinyFixture.supported)
    func logitsMatchTransformers(_ f: TinyFixture) throws {
        let model = try LlamaModel(directory: f.directory)
        let ref = try f.reference()
        for (tokens, expected) in zip(ref.sequences, ref.logits) {
            let got = try logits(model, tokens)
            let err = zip(got, expected).map { abs($0 - $1) }.max()!
            #expect(err <= 1e-4, "\(f.name), \(tokens.count) tokens: max |logit difference| \(err)")
            #expect(expected.map(abs).max()! > 1, "logits too flat to test")
        }
    }

    /// One block's loss and weight gradients against transformers' autograd.
    @Test(arguments: TinyFixture.supported)
    func blockLossAndGradientsMatchTransformers(_ f: TinyFixture) throws {
        let model = try LlamaModel(directory: f.directory)
        let ref = try f.reference()
        let c = model.config, T = ref.sequences[0].count
        let work = try BlockWorkspace(config: c, sequences: 1, length: T)
        let w = try model.loadBlock(ref.layer)
        let y = try FloatBuffer(count: T * c.hidden), dY = try FloatBuffer(count: T * c.hidden)
        let x = try FloatBuffer(ref.input), target = try FloatBuffer(ref.target)
        work.forward(x.p, weights: w, into: y.p)
        let loss = tqk_l2_loss(y.p, target.p, Int64(T), Int64(c.hidden), nil, dY.p)
        #expect(abs(loss / ref.loss - 1) < 1e-5, "\(f.name): loss \(loss) vs \(ref.loss)")
        let grads = try BlockGradients(config: c, rows: T)
        work.backward(dY.p, weights: w, into: grads)
        for kind in LinearKind.allCases {
            let g = grads[kind].array.map(Double.init)
            let norm = g.reduce(0) { $0 + $1 * $1 }.squareRoot(), refNorm = try #require(ref.gradNorms[kind.module])
            #expect(abs(norm / refNorm - 1) < 1e-4, "\(f.name) \(kind): |dW| \(norm) vs \(refNorm)")
            let head = try #require(ref.gradHead[kind.module])
            for (a, b) in zip(g, head) { #expect(abs(a - b) <= 1e-4 * refNorm, "\(f.name) \(kind): dW entry \(a) vs \(b)") }
        }
    }

    /// RTN W4 g32 exported, re-read from disk, evaluates as the quantization simulated in float32;
    /// config.json keeps every architecture field of the input.
    @Test(arguments: TinyFixture.supported)
    func rtnExportEvaluatesAsSimulated(_ f: TinyFixture) throws {
        let spec = QuantSpec(bits: 4, groupSize: 32)
        let out = temporaryDirectory("tiny-rtn") + "/ckpt"
        try quantizeModel(try LlamaModel(directory: f.directory), config: QuantizeConfig(method: "rtn", spec: spec), outDir: out)
        let packed = try LlamaModel(directory: out)
        #expect(packed.packed != nil)
        let tokens = try f.reference().sequences[0]
        let err = relativeMaxError(try logits(packed, tokens), try logits(try simulatedRTN(spec, directory: f.directory), tokens))
        #expect(err < 1e-5, "\(f.name): packed vs simulated logits, relative error \(err)")
        try expectConfigKept(out, original: f.directory)
        #expect(try LlamaConfig(directory: out) == packed.config && packed.config == (try LlamaConfig(directory: f.directory)))
    }

    /// GPTQ and TesseraQ (`ci` preset, W2 g32) lower every block's loss below RTN's, and the
    /// exported config.json keeps the input's architecture fields.
    @Test(arguments: TinyFixture.supported, ["gptq", "tesseraq"])
    func calibratedMethodBeatsRTNOnEveryBlock(_ f: TinyFixture, method: String) throws {
        let model = try LlamaModel(directory: f.directory)
        let out = temporaryDirectory("tiny-\(method)") + "/ckpt"
        let report = try quantizeModel(model, config: QuantizeConfig(method: method, spec: QuantSpec(bits: 2, groupSize: 32),
                                                                     options: ["preset": .string("ci")]),
                                       outDir: out, calibration: TinyFixture.calibrationTokens(vocab: model.config.vocab))
        let blocks = try #require(report["blocks"] as? [[String: Any]])
        #expect(blocks.count == model.config.layers)
        for b in blocks {
            let final = try #require(b["final_loss"] as? Double), rtn = try #require(b["rtn_loss"] as? Double)
            #expect(final < rtn, "\(f.name) \(method) block \(b["block"]!): final \(final) vs RTN \(rtn)")
        }
        try expectConfigKept(out, original: f.directory)
    }

    /// AWQ's export (its folded norms and biases included) evaluates from disk as its in-memory result.
    @Test(arguments: TinyFixture.supported)
    func awqExportEvaluatesAsInMemory(_ f: TinyFixture) throws {
        let vocab = try LlamaConfig(directory: f.directory).vocab
        try expectAWQExportMatchesInMemory(f.directory, spec: QuantSpec(bits: 4, groupSize: 32),
                                           calibration: TinyFixture.calibrationTokens(vocab: vocab),
                                           tokens: try f.reference().sequences[0])
    }

    /// Mistral's window (8) is shorter than the long reference sequence (24) and than the block
    /// reference's: the logits and gradient checks above cover sliding-window attention.
    @Test func mistralWindowIsShorterThanTheReferenceSequence() throws {
        let f = TinyFixture(name: "tiny-mistral")
        let model = try LlamaModel(directory: f.directory)
        #expect(model.config.slidingWindow == 8 && model.config.slidingLayers == [true, true])
        #expect(try f.reference().sequences[0].count > 8)
        #expect(try model.loadBlock(1).attentionWindow == 8)
    }

    /// Gemma's settings reach the model as the fixtures mean them: sliding and global layers, the
    /// caps (small enough that the logits saturate: capped logits reach the cap), (1 + w) norms.
    @Test func gemmaFixturesExerciseWhatDiffers() throws {
        let g2 = try LlamaModel(directory: TinyFixture(name: "tiny-gemma2").directory)
        #expect(g2.config.slidingLayers == [true, false] && g2.config.slidingWindow == 8)
        #expect(g2.config.attentionSoftcap == 3 && g2.config.finalSoftcap == 4 && g2.config.attentionScale == Float(1 / 24.0.squareRoot()))
        let ref = try TinyFixture(name: "tiny-gemma2").reference()
        #expect(ref.sequences[0].count > 8 && ref.logits[0].map(abs).max()! > 3.9)
        let g3 = try LlamaModel(directory: TinyFixture(name: "tiny-gemma3").directory)
        #expect(g3.config.slidingLayers == [true, true, false] && g3.config.qkNorm)
        #expect(g3.config.slidingRope == LlamaConfig.Rope(theta: 10000, scaling: .none) && g3.config.ropeScaling == .linear(factor: 2))
        // Norm weights are loaded as the multipliers 1 + w (exactly, in float32).
        let block = try g3.loadBlock(1)
        let stored = try g3.store.floats("model.layers.1.pre_feedforward_layernorm.weight")
        #expect(block.mlpNorm.array == stored.map { $0 + 1 })
        #expect(try g3.store.floats("model.layers.1.self_attn.q_norm.weight").map { $0 + 1 } == block.qkNorms![0].array)
        let global = try g3.loadBlock(2)
        #expect(block.postNorms?.count == 2 && block.attentionWindow == 8 && global.attentionWindow == nil)
    }

    /// Gemma's embedding multiplier sqrt(hidden) in the embedding dtype, as transformers' values
    /// (torch.tensor(hidden ** 0.5, dtype=...) for Gemma 2 2B's 2304 and 9B's 3584).
    @Test func gemmaEmbeddingScaleIsRoundedAsTransformers() {
        let expected: [(Int, DType, Float)] = [(32, .f32, 5.656854152679443), (32, .bf16, 5.65625), (3584, .bf16, 59.75),
                                               (3584, .f16, 59.875), (3584, .f32, 59.866519927978516)]
        for (hidden, dtype, value) in expected {
            #expect(LlamaModel.rounded(Float(Double(hidden).squareRoot()), to: dtype) == value, "\(hidden) \(dtype)")
        }
    }

    /// dL/dW of a Gemma block against central finite differences of the block loss, for entries of
    /// every linear: the gradient passes through the post-norms (o, down), GeGLU (gate, up), the
    /// soft-capped scores (Gemma 2; q, k) and the (1 + w) q/k norms (Gemma 3).
    @Test(arguments: ["tiny-gemma2", "tiny-gemma3"])
    func gemmaBlockGradientsMatchFiniteDifferences(_ name: String) throws {
        let (model, ref, T, x) = try TinyFixture(name: name).blockCase()
        let c = model.config, target = try FloatBuffer(ref.target)
        let work = try BlockWorkspace(config: c, sequences: 1, length: T)
        for layer in 0..<c.layers {
            let w = try model.loadBlock(layer)
            var rng = TestRNG(UInt64(layer + 5))
            for (kind, err, size) in try finiteDifferenceErrors(work, w, x: x, target: target, rng: &rng) {
                #expect(size > 1e-3 && err < 1e-2 * size, "\(name) layer \(layer) \(kind): |dW - FD| \(err) vs |FD| \(size)")
            }
        }
    }

    /// AWQ's scales folded into a Gemma block (into the (1 + w) multipliers of the pre-norms, and
    /// through GeGLU's up into down) leave the block's output unchanged; clipping off.
    @Test(arguments: ["tiny-gemma2", "tiny-gemma3"])
    func awqFoldingIsExactOnGemmaBlocks(_ name: String) throws {
        let (model, _, T, x) = try TinyFixture(name: name).blockCase()
        let c = model.config
        let cache = try ActivationCache(samples: 1, rowsPerSample: T, width: c.hidden, dtype: .f32)
        cache.write(0, from: x.p)
        let work = try BlockWorkspace(config: c, sequences: 1, length: T)
        let y0 = try FloatBuffer(count: T * c.hidden), y1 = try FloatBuffer(count: T * c.hidden)
        var settings = AWQSettings()
        settings.clip = false
        for layer in 0..<c.layers {
            let block = try model.loadBlock(layer)
            work.forward(x.p, weights: block, into: y0.p)
            let norms = (block.attnNorm.array, block.mlpNorm.array)
            _ = try AWQTransform(config: c, settings: settings, spec: QuantSpec(bits: 2, groupSize: 8), batch: 1, layer: layer)
                .apply(to: block, inputs: cache)
            #expect(block.attnNorm.array != norms.0 && block.mlpNorm.array != norms.1, "\(name) \(layer): nothing folded")
            work.forward(x.p, weights: block, into: y1.p)
            let diff = zip(y0.array, y1.array).map { abs($0 - $1) }.max()!
            #expect(diff < 1e-4 * y0.array.map(abs).max()!, "\(name) layer \(layer): max difference \(diff)")
        }
    }

    /// Phi-3's export stores qkv_proj and gate_up_proj as the input does (3 bits: the stacked zero
    /// points are repacked across word boundaries), and evaluates as the simulated quantization.
    @Test func phi3ExportKeepsTheFusedLinears() throws {
        let f = TinyFixture(name: "tiny-phi3")
        let spec = QuantSpec(bits: 3, groupSize: 32)
        let out = temporaryDirectory("tiny-phi3") + "/ckpt"
        try quantizeModel(try LlamaModel(directory: f.directory), config: QuantizeConfig(method: "rtn", spec: spec), outDir: out)
        let store = try TensorStore(directory: out)
        for l in 0..<2 {
            let p = "model.layers.\(l)."
            #expect(store.info(p + "self_attn.qkv_proj.qweight")?.shape == [3, 64])
            #expect(store.info(p + "self_attn.qkv_proj.qzeros")?.shape == [1, 6])
            #expect(store.info(p + "mlp.gate_up_proj.scales")?.shape == [1, 128])
            #expect(store.info(p + "mlp.down_proj.qweight")?.shape == [6, 32])
            #expect(store.info(p + "self_attn.qkv_proj.weight") == nil && store.info(p + "mlp.gate_up_proj.weight") == nil)
            for part in ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj", "mlp.up_proj"] {
                #expect(store.info(p + part + ".qweight") == nil, "\(part) stored unfused")
            }
        }
        let tokens = try f.reference().sequences[0]
        let err = relativeMaxError(try logits(try LlamaModel(directory: out), tokens),
                                   try logits(try simulatedRTN(spec, directory: f.directory), tokens))
        #expect(err < 1e-5, "packed vs simulated logits, relative error \(err)")
    }

    /// GPTQ with act-order on Phi-3: q, k, v (and gate, up) share their Hessian, hence one
    /// permutation and one g_idx, so they fuse; the checkpoint reloads and beats RTN per block.
    @Test func phi3GPTQActOrderFuses() throws {
        let f = TinyFixture(name: "tiny-phi3")
        let model = try LlamaModel(directory: f.directory)
        let out = temporaryDirectory("tiny-phi3-gptq") + "/ckpt"
        let report = try quantizeModel(model, config: QuantizeConfig(method: "gptq", spec: QuantSpec(bits: 4, groupSize: 16),
                                                                     options: ["preset": .string("ci"), "act_order": .bool(true)]),
                                       outDir: out, calibration: TinyFixture.calibrationTokens(vocab: model.config.vocab))
        let packed = try LlamaModel(directory: out)
        let qkv = try #require(packed.packed?.linear(named: "model.layers.0.self_attn.qkv_proj"))
        #expect(qkv.out == 64 && !qkv.trivialGIdx)
        for b in try #require(report["blocks"] as? [[String: Any]]) {
            #expect(try #require(b["final_loss"] as? Double) < (try #require(b["rtn_loss"] as? Double)))
        }
        #expect(try logits(packed, try f.reference().sequences[1]).allSatisfy(\.isFinite))
    }
}
