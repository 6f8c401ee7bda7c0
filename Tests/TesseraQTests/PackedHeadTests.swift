import Foundation
import Testing
@testable import TesseraQ

/// The `lm_head: w8` model option: the head packed chunk by chunk equals the whole matrix rounded
/// at once, every use of the model runs it, and the options parser refuses what it does not know.
@Suite struct PackedHeadTests {
    static let stories = Fixtures.model("stories260K")

    /// All rows of a token matrix as float32.
    static func rows(_ m: TokenMatrix) -> [Float] {
        let ids = (0..<m.rows).map(UInt32.init)
        var out = [Float](repeating: 0, count: m.rows * m.dim)
        ids.withUnsafeBufferPointer { i in out.withUnsafeMutableBufferPointer { m.gather(i, into: $0.baseAddress!) } }
        return out
    }

    /// Chunks of 100 rows (512 = 5 x 100 + 12) against one RTN of the whole float matrix, packed the
    /// same way: the same codes, scales and zeros, so the same dequantized values exactly; with one
    /// group per row (128 > hidden 64) and with two.
    @Test(arguments: [ModelOptions.headSpec, QuantSpec(bits: 8, groupSize: 32), QuantSpec(bits: 4, groupSize: 32)])
    func chunkedPackingEqualsWholeMatrix(spec: QuantSpec) throws {
        let model = try LlamaModel(directory: Self.stories)
        let source = model.embed, float = Self.rows(source)
        let packed = try TokenMatrix(packing: source, spec: spec, name: "lm_head", chunk: 100)
        #expect(packed.isPacked)
        let whole = try roundToNearest(try FloatBuffer(float), out: source.rows, inFeatures: source.dim, spec: spec, name: "lm_head")
        let reference = try PackedLinear(name: "lm_head", whole, groupSize: spec.groupSize).dequantized()
        let got = Self.rows(packed)
        #expect(got == Array(UnsafeBufferPointer(start: reference.p, count: reference.count)))
        // and it is an 8- or 4-bit copy of the float head, not the head itself
        let err = zip(got, float).map { abs($0 - $1) }.max()!, top = float.map(abs).max()!
        #expect(err > 0 && err <= top / Float((1 << spec.bits) - 1))
    }

    /// A model opened with lm_head w8: its logits are those of the packed head (close to the float
    /// head's, not equal), decoding equals its full forward, and the session counts the head's bytes.
    @Test func w8HeadModelRunsThePackedHead() throws {
        let plain = try LlamaModel(directory: Self.stories)
        let w8 = try LlamaModel(directory: Self.stories, options: ModelOptions(lmHead: .w8))
        #expect(w8.lmHead.isPacked && !plain.lmHead.isPacked && w8.embed.bytes == plain.embed.bytes)
        let tokens = Array(DecodingSessionTests.storiesGolden[..<40]), V = plain.config.vocab
        let a = try DecodingSessionTests.fullLogits(w8, tokens), b = try DecodingSessionTests.fullLogits(plain, tokens)
        for t in 0..<tokens.count {
            let e = DecodingSessionTests.relativeError(a[(t * V)..<((t + 1) * V)], b[(t * V)..<((t + 1) * V)])
            #expect(e > 0 && e <= 2e-2, "row \(t): \(e)")
        }
        try DecodingSessionTests.checkDecodeEqualsForward(w8, tokens, split: 7)
        let s8 = try DecodingSession(model: w8, capacity: 8), s = try DecodingSession(model: plain, capacity: 8)
        // tied: the plain session counts the embedding once; w8 adds the packed head
        #expect(s8.weightBytes == s.weightBytes + w8.lmHead.bytes)
    }

    @Test func parsesOptions() throws {
        #expect(try ModelOptions.parse("") == ModelOptions())
        #expect(try ModelOptions.parse("{}") == ModelOptions())
        #expect(try ModelOptions.parse(#"{"lm_head": "w8"}"#).lmHead == .w8)
        #expect(try ModelOptions.parse(#"{"lm_head": "checkpoint"}"#).lmHead == .checkpoint)
        let refusals = [#"{"lm_head": "w4"}"#: "lm_head", #"{"head": "w8"}"#: "head", #"{"lm_head": 8}"#: "lm_head",
                        "[]": "not a JSON object"]
        for (text, named) in refusals {
            do {
                _ = try ModelOptions.parse(text)
                Issue.record("\(text) accepted")
            } catch let e as TQError {
                #expect(e.kind == .invalidArgument && e.message.contains(named), "\(text): \(e.message)")
            }
        }
        // malformed JSON is a format error, as for tq_quantize's configuration
        #expect(throws: TQError.self) { try ModelOptions.parse("{") }
        do { _ = try ModelOptions.parse("{") } catch let e as TQError { #expect(e.kind == .format && e.message.contains("model options")) }
    }
}
