import Foundation
import Testing
@testable import TesseraQ

func temporaryDirectory(_ tag: String) -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tq-\(tag)-\(UUID().uuidString)").path
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

/// Quantizes stories260K with RTN into a fresh temporary directory.
func quantizeStories(_ spec: QuantSpec, format: String = "gptq_v2") throws -> (model: LlamaModel, out: String) {
    let model = try LlamaModel(directory: Fixtures.model("stories260K"))
    let out = temporaryDirectory("rtn") + "/ckpt"
    try quantizeModel(model, config: QuantizeConfig(method: "rtn", spec: spec, format: format), outDir: out)
    return (model, out)
}

func perplexity(_ model: LlamaModel, windows: Int = 8) throws -> Double {
    let ids = try Fixtures.storiesTokens("test.raw")
    return try ids.withUnsafeBufferPointer { try evaluatePerplexity(model: model, tokens: $0, seqLen: 512, maxWindows: windows) }.perplexity
}

/// The same quantization simulated in float32 on the original model.
func simulatedRTN(_ spec: QuantSpec, directory: String = Fixtures.model("stories260K")) throws -> LlamaModel {
    let sim = try LlamaModel(directory: directory)
    sim.blockTransform = { _, block in
        for kind in LinearKind.allCases {
            let (o, i) = kind.shape(sim.config)
            block[kind] = try QuantizedLinear.roundToNearest(block[kind].p, out: o, inFeatures: i, spec: spec).dequantized()
        }
    }
    return sim
}

struct PackedCheckpointTests {
    @Test(arguments: [QuantSpec(bits: 2, groupSize: 32), QuantSpec(bits: 3, groupSize: 32), QuantSpec(bits: 4, groupSize: 64, sym: true),
                      QuantSpec(bits: 8, groupSize: -1), QuantSpec(bits: 3, groupSize: 48)])
    func roundTripIsExact(spec: QuantSpec) throws {
        let (model, out) = try quantizeStories(spec)
        let ckpt = try PackedCheckpoint(directory: out)
        #expect(ckpt.linears.count == 7 * model.config.layers)
        #expect(ckpt.quantization == GPTQConfig(bits: spec.bits, groupSize: spec.groupSize, sym: spec.sym))
        for layer in 0..<model.config.layers {
            let block = try model.loadBlock(layer)
            for kind in LinearKind.allCases {
                let (o, i) = kind.shape(model.config)
                let l = try #require(ckpt.linear(named: kind.prefix(layer: layer)))
                let q = QuantizedLinear.roundToNearest(block[kind].p, out: o, inFeatures: i, spec: spec)
                var codes = [UInt8](repeating: 0, count: o * i)
                l.unpack(into: &codes)
                #expect(codes == q.codes)
                #expect(l.unpackZeros() == q.zeros)
                #expect(try l.dequantized().array == q.dequantized().array)
                #expect(l.trivialGIdx)
            }
        }
        // Float tensors are carried over byte for byte in the input's dtype, tokenizer files copied.
        let store = try TensorStore(directory: out)
        #expect(try store.floats("model.embed_tokens.weight") == model.store.floats("model.embed_tokens.weight"))
        #expect(store.info("model.layers.0.self_attn.q_proj.weight") == nil)
        #expect(FileManager.default.contentsEqual(atPath: out + "/tokenizer.json", andPath: Fixtures.model("stories260K") + "/tokenizer.json"))
        #expect(FileManager.default.fileExists(atPath: out + "/quantize_report.json"))
        #expect(!FileManager.default.fileExists(atPath: out + ".partial"))
    }

    @Test func packedPerplexityEqualsSimulated() throws {
        let spec = QuantSpec(bits: 3, groupSize: 32)
        let (_, out) = try quantizeStories(spec)
        let packed = try perplexity(try LlamaModel(directory: out))
        let simulated = try perplexity(try simulatedRTN(spec))
        #expect(abs(packed / simulated - 1) <= 1e-5, "packed \(packed) vs simulated \(simulated)")
    }

    @Test func rtnPerplexityOrdering() throws {
        let fp = try perplexity(try LlamaModel(directory: Fixtures.model("stories260K")))
        var ppl: [Int: Double] = [:]
        for bits in [8, 4, 3, 2] {
            let (_, out) = try quantizeStories(QuantSpec(bits: bits, groupSize: 32))
            ppl[bits] = try perplexity(try LlamaModel(directory: out))
        }
        print("stories260K RTN g32 perplexity (8 windows of 512): FP \(fp), W8 \(ppl[8]!), W4 \(ppl[4]!), W3 \(ppl[3]!), W2 \(ppl[2]!)")
        #expect(abs(ppl[8]! / fp - 1) < 0.005)
        #expect(fp < ppl[4]! && ppl[4]! < ppl[3]! && ppl[3]! < ppl[2]!)
    }

    @Test func v1FormatRoundTripsOrRefuses() throws {
        // Symmetric grids have zero points 2^(b-1) >= 1, which v1 can store.
        let spec = QuantSpec(bits: 4, groupSize: 32, sym: true)
        let (_, v1) = try quantizeStories(spec, format: "gptq")
        let (_, v2) = try quantizeStories(spec)
        let a = try PackedCheckpoint(directory: v1), b = try PackedCheckpoint(directory: v2)
        #expect(a.quantization.checkpointFormat == "gptq")
        for (x, y) in zip(a.linears, b.linears) { #expect(try x.dequantized().array == y.dequantized().array) }
        // Asymmetric 2-bit grids on this model have groups with zero point 0: refused, nothing written.
        let model = try LlamaModel(directory: Fixtures.model("stories260K"))
        let out = temporaryDirectory("v1") + "/ckpt"
        #expect {
            try quantizeModel(model, config: QuantizeConfig(method: "rtn", spec: QuantSpec(bits: 2, groupSize: 32), format: "gptq"), outDir: out)
        } throws: { ($0 as? TQError)?.message.contains("zero point of 0") == true }
        #expect(!FileManager.default.fileExists(atPath: out))
    }

    @Test func cancelledRunLeavesNoCheckpoint() throws {
        let model = try LlamaModel(directory: Fixtures.model("stories260K"))
        let out = temporaryDirectory("cancel") + "/ckpt"
        #expect(throws: TQError.self) {
            try quantizeModel(model, config: QuantizeConfig(method: "rtn", spec: QuantSpec(bits: 4, groupSize: 32)), outDir: out) { $0.block < 2 }
        }
        #expect(!FileManager.default.fileExists(atPath: out))
        // An existing output is kept unless overwrite is set.
        try quantizeModel(model, config: QuantizeConfig(method: "rtn", spec: QuantSpec(bits: 4, groupSize: 32)), outDir: out)
        #expect(throws: TQError.self) {
            try quantizeModel(model, config: QuantizeConfig(method: "rtn", spec: QuantSpec(bits: 2, groupSize: 32)), outDir: out)
        }
        #expect(try PackedCheckpoint(directory: out).quantization.bits == 4)
        try quantizeModel(model, config: QuantizeConfig(method: "rtn", spec: QuantSpec(bits: 2, groupSize: 32), overwrite: true), outDir: out)
        #expect(try PackedCheckpoint(directory: out).quantization.bits == 2)
    }
}

/// Corrupted, truncated and inconsistent packed checkpoints: a clear error, never a crash.
struct PackedCorruptionTests {
    static let base: String = {
        try! quantizeStories(QuantSpec(bits: 4, groupSize: 32)).out
    }()

    /// Copies the base checkpoint, rewrites one thing, and returns the error opening it gives.
    func openError(config: ((inout [String: Any]) -> Void)? = nil, tensors: ((inout SafeTensorsWriter, TensorStore) -> Void)? = nil,
                   bytes: ((inout Data) -> Void)? = nil) throws -> TQError? {
        let dir = temporaryDirectory("corrupt")
        for f in ["config.json", "model.safetensors"] {
            try FileManager.default.copyItem(atPath: Self.base + "/" + f, toPath: dir + "/" + f)
        }
        if let config {
            var c = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/config.json"))) as! [String: Any]
            config(&c)
            try JSONSerialization.data(withJSONObject: c).write(to: URL(fileURLWithPath: dir + "/config.json"))
        }
        if let tensors {
            let store = try TensorStore(directory: Self.base)
            var w = SafeTensorsWriter()
            tensors(&w, store)
            let replaced = Set(w.entries.map(\.name))
            for name in store.names where !replaced.contains(name) {
                let (f, i) = try store.require(name)
                w.add(name, i.dtype, i.shape, Data(bytes: f.bytes(i), count: i.end - i.begin))
            }
            try w.write(to: dir + "/model.safetensors")
        }
        if let bytes {
            var d = try Data(contentsOf: URL(fileURLWithPath: dir + "/model.safetensors"))
            bytes(&d)
            try d.write(to: URL(fileURLWithPath: dir + "/model.safetensors"))
        }
        do {
            _ = try LlamaModel(directory: dir)
            _ = try PackedCheckpoint(directory: dir)
            return nil
        } catch let e as TQError { return e }
    }

    let q = "model.layers.1.self_attn.q_proj"

    @Test func intactCopyOpens() throws { #expect(try openError() == nil) }

    @Test func configBitsNotMatchingTensors() throws {
        let e = try #require(try openError(config: {
            var q = $0["quantization_config"] as! [String: Any]; q["bits"] = 2; $0["quantization_config"] = q
        }))
        #expect(e.kind == .format && e.message.contains("qweight") && e.message.contains("bits"))
    }

    @Test func unsupportedBits() throws {
        let e = try #require(try openError(config: {
            var q = $0["quantization_config"] as! [String: Any]; q["bits"] = 5; $0["quantization_config"] = q
        }))
        #expect(e.kind == .unsupported && e.message.contains("bits"))
    }

    @Test func wrongQweightRows() throws {
        let e = try #require(try openError(tensors: { w, _ in w.add(q + ".qweight", .i32, [4, 64], [Int32](repeating: 0, count: 256)) }))
        #expect(e.message.contains(q + ".qweight") && e.message.contains("rows"))
    }

    @Test func scalesShapeOff() throws {
        let e = try #require(try openError(tensors: { w, _ in w.add(q + ".scales", .f16, [3, 64], [UInt16](repeating: 0x3c00, count: 192)) }))
        #expect(e.message.contains(q + ".scales") && e.message.contains("shape"))
    }

    @Test func gIdxOutOfRange() throws {
        let e = try #require(try openError(tensors: { w, _ in
            var g = (0..<64).map { Int32($0 / 32) }
            g[17] = 9
            w.add(q + ".g_idx", .i32, [64], g)
        }))
        #expect(e.message.contains("g_idx[17]"))
    }

    @Test func nonFiniteScale() throws {
        let e = try #require(try openError(tensors: { w, _ in w.add(q + ".scales", .f16, [2, 64], [UInt16](repeating: 0x7c00, count: 128)) }))
        #expect(e.message.contains("not finite"))
    }

    @Test func wrongDtype() throws {
        let e = try #require(try openError(tensors: { w, _ in w.add(q + ".qzeros", .f32, [2, 8], [Float](repeating: 0, count: 16)) }))
        #expect(e.message.contains(q + ".qzeros") && e.message.contains("dtype"))
    }

    @Test func missingTensor() throws {
        let dir = temporaryDirectory("missing")
        let store = try TensorStore(directory: Self.base)
        var w = SafeTensorsWriter()
        for name in store.names where name != q + ".scales" {
            let (f, i) = try store.require(name)
            w.add(name, i.dtype, i.shape, Data(bytes: f.bytes(i), count: i.end - i.begin))
        }
        try w.write(to: dir + "/model.safetensors")
        try FileManager.default.copyItem(atPath: Self.base + "/config.json", toPath: dir + "/config.json")
        #expect { try PackedCheckpoint(directory: dir) } throws: { ($0 as? TQError)?.message.contains("missing tensor \(q).scales") == true }
    }

    @Test func truncatedFile() throws {
        let e = try #require(try openError(bytes: { $0 = $0.prefix($0.count - 100) }))
        #expect(e.kind == .format && e.message.contains("model.safetensors"))
    }

    @Test func packedShapeDisagreesWithConfig() throws {
        let e = try #require(try openError(config: { $0["hidden_size"] = 72 }))
        #expect(e.kind == .format)
    }
}
