import Foundation
import Testing
@testable import TesseraQ

/// The reference outputs in Tests/Fixtures/models/*/golden.json (transformers fp32 and llama2.c).
struct Golden: Decodable {
    struct LogitsCheck: Decodable {
        let input_ids: [UInt32]
        let positions: Int
        let logits: [[Double]]
    }
    struct PerplexityCheck: Decodable {
        let input_ids: [UInt32]
        let ppl: Double
    }
    let prompt_ids: [UInt32]
    let greedy_ids: [UInt32]
    let logits_check: LogitsCheck
    let perplexity_check: PerplexityCheck

    static func load(_ model: String) throws -> Golden {
        let data = try Data(contentsOf: URL(fileURLWithPath: Fixtures.model(model) + "/golden.json"))
        return try JSONDecoder().decode(Golden.self, from: data)
    }
}

struct GoldenTests {
    static let models = ["stories260K", "aidreams260K"]

    @Test(arguments: models)
    func logitsMatchReference(name: String) throws {
        let g = try Golden.load(name)
        let m = try LlamaModel(directory: Fixtures.model(name))
        let ids = g.logits_check.input_ids
        var out = [Float](repeating: 0, count: ids.count * m.config.vocab)
        try ids.withUnsafeBufferPointer { t in try out.withUnsafeMutableBufferPointer { try m.logits(t, into: $0.baseAddress!) } }
        var worst = 0.0
        for (p, row) in g.logits_check.logits.enumerated() {
            #expect(row.count == m.config.vocab)
            for (v, ref) in row.enumerated() { worst = max(worst, abs(Double(out[p * m.config.vocab + v]) - ref)) }
        }
        #expect(g.logits_check.logits.count == g.logits_check.positions)
        #expect(worst < 2e-4, "max |logit - golden| = \(worst)")
    }

    @Test(arguments: models)
    func greedyContinuationIsExact(name: String) throws {
        let g = try Golden.load(name)
        let m = try LlamaModel(directory: Fixtures.model(name))
        var seq = g.prompt_ids
        var logits = [Float](repeating: 0, count: (seq.count + g.greedy_ids.count) * m.config.vocab)
        for _ in 0..<g.greedy_ids.count {
            try seq.withUnsafeBufferPointer { t in try logits.withUnsafeMutableBufferPointer { try m.logits(t, into: $0.baseAddress!) } }
            let last = logits[((seq.count - 1) * m.config.vocab)..<(seq.count * m.config.vocab)]
            seq.append(UInt32(last.indices.max { last[$0] < last[$1] }! - (seq.count - 1) * m.config.vocab))
        }
        #expect(Array(seq.dropFirst(g.prompt_ids.count)) == g.greedy_ids)
    }

    @Test(arguments: models)
    func perplexityMatchesReference(name: String) throws {
        let g = try Golden.load(name)
        let m = try LlamaModel(directory: Fixtures.model(name))
        let ids = g.perplexity_check.input_ids
        let r = try ids.withUnsafeBufferPointer { try evaluatePerplexity(model: m, tokens: $0, seqLen: ids.count) }
        #expect(r.windows == 1 && r.tokens == ids.count - 1)
        #expect(abs(r.perplexity / g.perplexity_check.ppl - 1) < 1e-4, "ppl \(r.perplexity) vs \(g.perplexity_check.ppl)")
    }

    @Test func perplexityWindowsAndCancellation() throws {
        let m = try LlamaModel(directory: Fixtures.model("stories260K"))
        let ids = try Fixtures.storiesTokens("test.raw")
        let r = try ids.withUnsafeBufferPointer { try evaluatePerplexity(model: m, tokens: $0, seqLen: 256, maxWindows: 3) }
        #expect(r.windows == 3 && r.tokens == 3 * 255)
        // The same three windows evaluated one by one give the same mean NLL.
        var nll = 0.0
        for w in 0..<3 {
            nll += try ids.withUnsafeBufferPointer { try m.nextTokenNLL(UnsafeBufferPointer(rebasing: $0[(w * 256)..<((w + 1) * 256)])) }
        }
        #expect(abs(exp(nll / Double(3 * 255)) / r.perplexity - 1) < 1e-12)
        var calls = 0
        #expect(throws: TQError.self) {
            try ids.withUnsafeBufferPointer { try evaluatePerplexity(model: m, tokens: $0, seqLen: 256, maxWindows: 3) { done, _ in calls += 1; return done < 1 } }
        }
        #expect(calls == 2)
        #expect(throws: TQError.self) {
            try ids.withUnsafeBufferPointer { try evaluatePerplexity(model: m, tokens: $0, seqLen: 4096) }
        }
    }
}
