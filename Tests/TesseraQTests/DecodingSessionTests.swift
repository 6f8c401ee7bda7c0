import Foundation
import Synchronization
import Testing
@testable import TesseraQ

/// KV-cached decoding against the full forward, the golden greedy continuations, and the session's
/// refusals.
@Suite struct DecodingSessionTests {
    /// The largest |a - b| over a row relative to the row's largest |b|.
    static func relativeError(_ a: ArraySlice<Float>, _ b: ArraySlice<Float>) -> Float {
        let scale = b.map(abs).max()!
        return zip(a, b).map { abs($0 - $1) }.max()! / max(scale, 1e-30)
    }

    /// Full-forward logits [T x vocab] of `tokens`.
    static func fullLogits(_ model: LlamaModel, _ tokens: [UInt32]) throws -> [Float] {
        var out = [Float](repeating: 0, count: tokens.count * model.config.vocab)
        try tokens.withUnsafeBufferPointer { t in try out.withUnsafeMutableBufferPointer { try model.logits(t, into: $0.baseAddress!) } }
        return out
    }

    /// prefill(tokens[..<split]) then decode of each later token: every row against the full forward.
    static func checkDecodeEqualsForward(_ model: LlamaModel, _ tokens: [UInt32], split: Int) throws {
        let V = model.config.vocab
        let full = try fullLogits(model, tokens)
        let session = try DecodingSession(model: model, capacity: tokens.count + 3)
        var row = [Float](repeating: 0, count: V)
        var all = [Float](repeating: 0, count: split * V)
        try tokens[..<split].withUnsafeBufferPointer { p in
            try all.withUnsafeMutableBufferPointer { try session.prefill(p, allLogits: true, into: $0.baseAddress!) }
        }
        for t in 0..<split {
            #expect(relativeError(all[(t * V)..<((t + 1) * V)], full[(t * V)..<((t + 1) * V)]) <= 1e-4, "prefill row \(t)")
        }
        for t in split..<tokens.count {
            try row.withUnsafeMutableBufferPointer { try session.decode(tokens[t], into: $0.baseAddress!) }
            #expect(relativeError(row[...], full[(t * V)..<((t + 1) * V)]) <= 1e-4, "decode row \(t)")
        }
        #expect(session.position == tokens.count)
    }

    static func tokens(_ count: Int, vocab: Int, seed: UInt64 = 5) -> [UInt32] {
        var rng = TestRNG(seed)
        return (0..<count).map { _ in UInt32(rng.int(vocab)) }
    }

    static let storiesGolden: [UInt32] = try! goldenIDs("stories260K")

    static func goldenIDs(_ name: String) throws -> [UInt32] {
        let data = try Data(contentsOf: URL(fileURLWithPath: Fixtures.model(name) + "/golden.json"))
        let g = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        return ((g["prompt_ids"] as! [Int]) + (g["greedy_ids"] as! [Int])).map(UInt32.init)
    }

    @Test func storiesFloat() throws {
        let model = try LlamaModel(directory: Fixtures.model("stories260K"))
        try Self.checkDecodeEqualsForward(model, Array(Self.storiesGolden[..<48]), split: 9)
    }

    @Test(arguments: [QuantSpec(bits: 8, groupSize: -1), QuantSpec(bits: 4, groupSize: 32)])
    func storiesPacked(_ spec: QuantSpec) throws {
        let packed = try LlamaModel(directory: try quantizeStories(spec).out)
        #expect(packed.packed != nil)
        try Self.checkDecodeEqualsForward(packed, Array(Self.storiesGolden[..<48]), split: 9)
    }

    @Test(arguments: TinyFixture.supported)
    func tinyFloat(_ fixture: TinyFixture) throws {
        let model = try LlamaModel(directory: fixture.directory)
        // Past every fixture's sliding window (8 or 16), prefill and decode both crossing it.
        try Self.checkDecodeEqualsForward(model, Self.tokens(30, vocab: model.config.vocab), split: 11)
    }

    /// Packed tiny models: Qwen2's biases, Phi-3's fused q/k/v and gate/up, Gemma 2's caps.
    @Test(arguments: ["tiny-qwen2", "tiny-phi3", "tiny-gemma2", "tiny-qwen3"])
    func tinyPacked(_ name: String) throws {
        let model = try LlamaModel(directory: Fixtures.model(name))
        let out = temporaryDirectory("session") + "/ckpt"
        try quantizeModel(model, config: QuantizeConfig(method: "rtn", spec: QuantSpec(bits: 4, groupSize: 16)), outDir: out)
        let packed = try LlamaModel(directory: out)
        #expect(packed.packed != nil)
        try Self.checkDecodeEqualsForward(packed, Self.tokens(30, vocab: model.config.vocab), split: 11)
    }

    /// A prompt longer than a chunk runs in several chunks.
    @Test func longPrefillInChunks() throws {
        let model = try LlamaModel(directory: Fixtures.model("stories260K"))
        let tokens = Self.tokens(DecodingSession.maxChunk + 40, vocab: model.config.vocab)
        try Self.checkDecodeEqualsForward(model, tokens, split: tokens.count - 2)
    }

    static func greedy(_ model: LlamaModel, prompt: [UInt32], count: Int) throws -> [UInt32] {
        let session = try DecodingSession(model: model, capacity: prompt.count + count)
        var row = [Float](repeating: 0, count: model.config.vocab)
        try prompt.withUnsafeBufferPointer { p in try row.withUnsafeMutableBufferPointer { try session.prefill(p, into: $0.baseAddress!) } }
        var out: [UInt32] = []
        while out.count < count {
            out.append(Sampler.argmax(row))
            if out.count < count { try row.withUnsafeMutableBufferPointer { try session.decode(out.last!, into: $0.baseAddress!) } }
        }
        return out
    }

    /// aidreams260K's context is 128 positions: its golden holds 200, of which the first 127 fit.
    @Test(arguments: ["stories260K", "aidreams260K"])
    func goldenGreedyFloat(_ name: String) throws {
        let ids = try Self.goldenIDs(name)
        let model = try LlamaModel(directory: Fixtures.model(name))
        let n = min(200, model.config.maxPositions - 1)
        #expect(try Self.greedy(model, prompt: [ids[0]], count: n) == Array(ids[1...n]))
    }

    /// W8 with groups of 32 keeps stories260K's golden greedy path for all 200 tokens; per-channel W8
    /// (a group is a whole row of 64 or 172) keeps its first 71, then takes the runner-up (README).
    @Test func goldenGreedyW8() throws {
        let golden = Array(Self.storiesGolden[1...])
        let g32 = try LlamaModel(directory: try quantizeStories(QuantSpec(bits: 8, groupSize: 32)).out)
        #expect(try Self.greedy(g32, prompt: [1], count: 200) == golden)
        let perChannel = try LlamaModel(directory: try quantizeStories(QuantSpec(bits: 8, groupSize: -1)).out)
        let g = try Self.greedy(perChannel, prompt: [1], count: 200)
        #expect(g[..<71] == golden[..<71] && g[71] != golden[71])
    }

    /// Many sessions over one (packed) model at once: each gives what it gives alone.
    @Test func concurrentSessionsOverOneModel() throws {
        let packed = try LlamaModel(directory: try quantizeStories(QuantSpec(bits: 4, groupSize: 32)).out)
        let prompts: [[UInt32]] = [[1], [1, 403, 407], [1, 261, 378, 400]]
        let alone = try prompts.map { try Self.greedy(packed, prompt: $0, count: 60) }
        let results = Mutex<[[UInt32]?]>(Array(repeating: nil, count: prompts.count))
        DispatchQueue.concurrentPerform(iterations: prompts.count) { i in
            let r = try? Self.greedy(packed, prompt: prompts[i], count: 60)
            results.withLock { $0[i] = r }
        }
        #expect(results.withLock { $0 } == alone.map { Optional($0) })
    }

    @Test func rewindThenDecodeEqualsFresh() throws {
        let model = try LlamaModel(directory: Fixtures.model("stories260K"))
        let V = model.config.vocab, prompt = Array(Self.storiesGolden[..<10])
        func run(_ session: DecodingSession, _ tokens: [UInt32]) throws -> [Float] {
            var row = [Float](repeating: 0, count: V)
            for t in tokens { try row.withUnsafeMutableBufferPointer { try session.decode(t, into: $0.baseAddress!) } }
            return row
        }
        let a = try DecodingSession(model: model, capacity: 32), b = try DecodingSession(model: model, capacity: 32)
        _ = try run(a, prompt + [7, 8, 9])
        try a.rewind(to: prompt.count)
        #expect(a.position == prompt.count)
        #expect(try run(a, [40, 41]) == (try run(b, prompt + [40, 41])))
        #expect(throws: TQError.self) { try a.rewind(to: a.position + 1) }
        #expect(throws: TQError.self) { try a.rewind(to: -1) }
    }

    @Test func refusals() throws {
        let model = try LlamaModel(directory: Fixtures.model("stories260K"))
        #expect(throws: TQError.self) { try DecodingSession(model: model, capacity: 0) }
        #expect(throws: TQError.self) { try DecodingSession(model: model, capacity: model.config.maxPositions + 1) }
        let s = try DecodingSession(model: model, capacity: 4), t = try DecodingSession(model: model, capacity: 4)
        var row = [Float](repeating: 0, count: model.config.vocab), fresh = row
        let p = row.withUnsafeMutableBufferPointer { $0.baseAddress! }
        let bad: [UInt32] = [3, UInt32(model.config.vocab)]
        do {
            try bad.withUnsafeBufferPointer { try s.prefill($0, into: p) }
            Issue.record("an out-of-vocabulary token was accepted")
        } catch let e as TQError {
            #expect(e.kind == .invalidArgument && e.message.contains("outside the vocabulary"))
        }
        let five: [UInt32] = [1, 2, 3, 4, 5]
        do {
            try five.withUnsafeBufferPointer { try s.prefill($0, into: p) }
            Issue.record("a prompt longer than the cache was accepted")
        } catch let e as TQError {
            #expect(e.kind == .invalidArgument && e.message.contains("do not fit"))
        }
        #expect(s.position == 0)
        // The refused calls left the cache as it was: the same logits as a fresh session.
        try row.withUnsafeMutableBufferPointer { try s.decode(3, into: $0.baseAddress!) }
        try fresh.withUnsafeMutableBufferPointer { try t.decode(3, into: $0.baseAddress!) }
        #expect(row == fresh)
        for token in [4, 5, 6] as [UInt32] { try row.withUnsafeMutableBufferPointer { try s.decode(token, into: $0.baseAddress!) } }
        #expect(throws: TQError.self) { try row.withUnsafeMutableBufferPointer { try s.decode(7, into: $0.baseAddress!) } }
        #expect(s.position == 4)
    }

    @Test func memoryFigures() throws {
        let model = try LlamaModel(directory: Fixtures.model("stories260K"))
        let s = try DecodingSession(model: model, capacity: 100)
        let c = model.config
        #expect(s.kvCacheBytes == 2 * c.layers * 100 * c.kvDim * 4)
        let packed = try DecodingSession(model: try LlamaModel(directory: try quantizeStories(QuantSpec(bits: 4, groupSize: 32)).out),
                                         capacity: 100)
        #expect(packed.weightBytes < s.weightBytes)
    }
}

/// The text side of generation: incremental detokenization, ChatML prompts, EOS ids.
@Suite struct GenerationTests {
    /// stories260K spells characters outside its vocabulary as UTF-8 byte tokens: pushed one at a
    /// time, the pieces never hold a partial character and join to the whole text.
    @Test func streamEmitsWholeCharacters() throws {
        let tok = try Tokenizer(path: Fixtures.model("stories260K"))
        let ids = Array(try tok.encode("Lily saw a café, a naïve dragon ✓ and 🙂!").dropFirst())
        var stream = TextStream(tokenizer: tok), pieces: [String] = [], held = 0
        for id in ids {
            if let p = stream.push(id) { pieces.append(p) } else { held += 1 }
        }
        if let rest = stream.finish() { pieces.append(rest) }
        #expect(held > 0 && pieces.allSatisfy { !$0.contains("\u{FFFD}") })
        #expect(pieces.joined() == tok.decode(ids))
    }

    /// ByteFallback decodes a run of byte tokens together: "~" (<0x7E>) followed by the lone
    /// continuation byte <0xAD> becomes two U+FFFDs. The stream holds the run until a text token
    /// ends it (found by the tokenize fuzz target), so the pieces still join to the decoded text.
    @Test func byteRunIsHeldUntilItEnds() throws {
        let tok = try Tokenizer(path: Fixtures.model("stories260K"))
        let tilde = try #require(tok.tokenID("<0x7E>")), lone = try #require(tok.tokenID("<0xAD>"))
        let word = try tok.encode("Lily").last!
        let ids = [word, tilde, lone, word]
        var stream = TextStream(tokenizer: tok), pieces: [String?] = ids.map { stream.push($0) }
        pieces.append(stream.finish())
        #expect(tok.decode(ids).contains("\u{FFFD}\u{FFFD}") && !tok.decode(ids).contains("~"))
        #expect(pieces[1] == nil && pieces[2] == nil && pieces.compactMap { $0 }.joined() == tok.decode(ids))
        #expect(tok.isFallbackByte(tilde) == true && tok.isFallbackByte(word) == false && tok.isFallbackByte(999_999) == nil)
    }

    /// A long text through each tokenizer kind (stories260K's SentencePiece-style byte fallback and
    /// SmolLM2's byte-level BPE): the pieces, each decoded from the previous piece's tokens on,
    /// join to the decoding of all the ids.
    @Test(arguments: ["stories260K", "SmolLM2-135M-Instruct"])
    func longStreamJoinsToTheWholeText(_ name: String) throws {
        let tok = try Tokenizer(path: name == "stories260K" ? Fixtures.model(name) : Fixtures.tokenizer(name))
        let text = String(try String(contentsOfFile: Fixtures.text("valid"), encoding: .utf8).prefix(6000)) + " café 🙂 naïve"
        let ids = try tok.encode(text)
        var stream = TextStream(tokenizer: tok), joined = ""
        for id in ids { if let p = stream.push(id) { joined += p } }
        if let rest = stream.finish() { joined += rest }
        #expect(ids.count > 1000 && joined == tok.decode(ids))
    }

    @Test func chatPromptAndEOS() throws {
        let dir = temporaryDirectory("chat")
        let smol = "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are SmolLM<|im_end|>\\n' }}{% endif %}"
        let config = try JSONSerialization.data(withJSONObject: ["chat_template": smol])
        try config.write(to: URL(fileURLWithPath: dir + "/tokenizer_config.json"))
        #expect(try Generation.chatPrompt(directory: dir, prompt: "Hi")
                == "<|im_start|>system\nYou are SmolLM<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
        #expect(throws: TQError.self) { try Generation.chatPrompt(directory: Fixtures.model("stories260K"), prompt: "Hi") }
        #expect(try Generation.eosTokens(directory: Fixtures.model("stories260K")) == [2])
        try Data(#"{"eos_token_id": [2, 7]}"#.utf8).write(to: URL(fileURLWithPath: dir + "/config.json"))
        #expect(try Generation.eosTokens(directory: dir) == [2, 7])
    }
}
