import Foundation
import Testing
import TQKernels
@testable import TesseraQ

/// A bf16 checkpoint keeps its embedding and LM head in bf16 (TokenMatrix): its logits must equal
/// those of the same weights widened to float32, and decoding must equal its full forward.
@Suite struct TokenMatrixTests {
    /// stories260K (float32 on disk) written twice: every tensor rounded to bf16 and stored as BF16,
    /// and the same rounded values stored as F32. `tied` false adds an untied bf16 LM head.
    static func bf16Pair(tied: Bool) throws -> (bf16: LlamaModel, widened: LlamaModel) {
        let source = Fixtures.model("stories260K")
        let store = try TensorStore(directory: source)
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: source + "/config.json"))) as! [String: Any]
        config["tie_word_embeddings"] = tied
        var halves = SafeTensorsWriter(), widened = SafeTensorsWriter()
        var names = store.names
        if !tied { names.append("lm_head.weight") }
        for name in names {
            let (file, info) = try store.require(name == "lm_head.weight" ? "model.embed_tokens.weight" : name)
            var v = [Float](repeating: 0, count: info.count)
            try file.readFloats(info, into: &v)
            if name == "lm_head.weight" { v = v.map { -0.5 * $0 } }  // a head that differs from the embedding
            var h = [UInt16](repeating: 0, count: v.count)
            tqk_f32_to_bf16(v, &h, Int64(v.count))
            tqk_bf16_to_f32(h, &v, Int64(v.count))
            halves.add(name, .bf16, info.shape, h)
            widened.add(name, .f32, info.shape, v)
        }
        func write(_ w: SafeTensorsWriter, _ tag: String) throws -> LlamaModel {
            let dir = temporaryDirectory(tag)
            try w.write(to: dir + "/model.safetensors")
            try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: dir + "/config.json"))
            return try LlamaModel(directory: dir)
        }
        return (try write(halves, "bf16-\(tied)"), try write(widened, "widened-\(tied)"))
    }

    @Test(arguments: [true, false])
    func bf16LogitsEqualWidened(tied: Bool) throws {
        let (bf16, widened) = try Self.bf16Pair(tied: tied)
        #expect(bf16.embed.bytes == widened.embed.bytes / 2)
        let tokens = Array(DecodingSessionTests.storiesGolden[..<40]), V = bf16.config.vocab
        let a = try DecodingSessionTests.fullLogits(bf16, tokens), b = try DecodingSessionTests.fullLogits(widened, tokens)
        for t in 0..<tokens.count {
            let row = (t * V)..<((t + 1) * V)
            #expect(DecodingSessionTests.relativeError(a[row], b[row]) <= 1e-5, "row \(t)")
        }
        try DecodingSessionTests.checkDecodeEqualsForward(bf16, tokens, split: 7)
        // Read in place from the map: releasing its pages drops them from memory, not the values.
        #expect(bf16.embed.isMapped && bf16.lmHead.isMapped && bf16.heldEmbeddingBytes == 0)
        let map = try #require(bf16.store.files.first).file
        let before = residentBytes(ofMappingAt: UnsafeMutableRawPointer(mutating: map.base))
        bf16.releaseEmbeddingPages()
        let after = residentBytes(ofMappingAt: UnsafeMutableRawPointer(mutating: map.base))
        // The map also holds the blocks' weights; the embedding's (and an untied head's) pages leave
        // it, up to the pages they share with their neighbours.
        let released = (tied ? 1 : 2) * bf16.embed.bytes
        #expect(after >= 0 && before - after >= released - 2 * 4096, "map resident \(before) -> \(after) bytes")
        #expect(try DecodingSessionTests.fullLogits(bf16, tokens) == a)
    }

    /// The bf16 GEMV (AVX2 and AVX-512) against float64 sums over the widened weights, at lengths
    /// that leave every tail.
    @Test(arguments: [1, 15, 16, 17, 33, 64, 100])
    func gemvBF16MatchesWidenedReference(length: Int) {
        withAVX512(false) { checkGemvBF16(length: length) }
    }

    @Test(.enabled(if: cpuHasAVX512, noAVX512), arguments: [1, 15, 16, 17, 33, 64, 100])
    func gemvBF16AVX512MatchesWidenedReference(length: Int) {
        withAVX512(true) { checkGemvBF16(length: length) }
    }

    func checkGemvBF16(length: Int) {
        var rng = TestRNG(9)
        let out = 37, w = rng.floats(out * length, -1, 1), x = rng.floats(length, -1, 1)
        var h = [UInt16](repeating: 0, count: w.count), wide = [Float](repeating: 0, count: w.count)
        tqk_f32_to_bf16(w, &h, Int64(w.count))
        tqk_bf16_to_f32(h, &wide, Int64(w.count))
        // Odd byte offset: a safetensors tensor may start anywhere.
        var bytes = [UInt8](repeating: 0, count: 1 + 2 * h.count)
        h.withUnsafeBytes { raw in for i in 0..<raw.count { bytes[1 + i] = raw[i] } }
        var y = [Float](repeating: 0, count: out)
        bytes.withUnsafeBytes { tqk_gemv_bf16($0.baseAddress! + 1, x, &y, Int64(out), Int64(length)) }
        for o in 0..<out {
            let ref = (0..<length).reduce(0.0) { $0 + Double(wide[o * length + $1]) * Double(x[$1]) }
            #expect(abs(Double(y[o]) - ref) <= 1e-5 * Double(length), "row \(o)")
        }
    }
}
