import Foundation
import Testing
@testable import TesseraQ
import TesseraQC

/// Small tokenizer.json documents built in the tests, so most checks need no model files.
enum TokFixtures {
    static func data(_ obj: [String: Any]) -> Data {
        try! JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys])
    }

    static let byteAlphabet: [String] = ByteLevelAlphabet.byteToChar.map { String(Character(Unicode.Scalar($0)!)) }

    /// A byte-level BPE whose vocabulary is the 256 byte characters plus each with "</w>" and no
    /// merges, with end_of_word_suffix "</w>": its ids show exactly where the pre-tokenizer cut.
    static func boundaryTokenizer(preTokenizer: [String: Any]) throws -> Tokenizer {
        var vocab: [String: Int] = [:]
        for (i, c) in byteAlphabet.enumerated() {
            vocab[c] = i
            vocab[c + "</w>"] = 256 + i
        }
        let doc: [String: Any] = [
            "version": "1.0", "added_tokens": [], "normalizer": NSNull(), "post_processor": NSNull(),
            "pre_tokenizer": preTokenizer, "decoder": ["type": "ByteLevel"],
            "model": ["type": "BPE", "vocab": vocab, "merges": [], "end_of_word_suffix": "</w>"],
        ]
        return try Tokenizer(json: data(doc))
    }

    /// The pre-tokens of `text`, read back from a boundary tokenizer's ids.
    static func pieces(_ tok: Tokenizer, _ text: String) throws -> [String] {
        var out: [String] = [], bytes: [UInt8] = []
        for id in try tok.encode(text) {
            bytes.append(UInt8(ByteLevelAlphabet.charToByteTable[Int(ByteLevelAlphabet.byteToChar[Int(id % 256)])]))
            if id >= 256 {
                out.append(String(decoding: bytes, as: UTF8.self))
                bytes = []
            }
        }
        return out
    }

    static var smolPreTokenizer: [String: Any] { [
        "type": "Sequence", "pretokenizers": [
            ["type": "Digits", "individual_digits": true],
            ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true],
        ],
    ] }

    /// A SentencePiece-style BPE as LLaMA-2 / stories260K: Prepend + Replace normalizer, byte
    /// fallback, BOS by TemplateProcessing, Replace/ByteFallback/Fuse/Strip decoder.
    static func sentencePiece(extra: [String: Any] = [:], model: [String: Any] = [:]) throws -> Tokenizer {
        var vocab: [String: Int] = ["<unk>": 0, "<s>": 1, "</s>": 2]
        for b in 0..<256 { vocab[String(format: "<0x%02X>", b)] = 3 + b }
        for t in ["▁", "a", "b", "c", "▁a", "ab", "▁ab", "bc", "▁abc"] { vocab[t] = vocab.count }
        var m: [String: Any] = [
            "type": "BPE", "vocab": vocab, "merges": [["▁", "a"], ["a", "b"], ["▁a", "b"], ["b", "c"], ["▁ab", "c"]],
            "unk_token": "<unk>", "fuse_unk": true, "byte_fallback": true, "dropout": NSNull(),
        ]
        m.merge(model) { $1 }
        func special(_ id: Int, _ s: String) -> [String: Any] {
            ["id": id, "content": s, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true]
        }
        var doc: [String: Any] = [
            "version": "1.0", "truncation": NSNull(), "padding": NSNull(),
            "added_tokens": [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
            "normalizer": ["type": "Sequence", "normalizers": [
                ["type": "Prepend", "prepend": "▁"], ["type": "Replace", "pattern": ["String": " "], "content": "▁"]]],
            "pre_tokenizer": NSNull(),
            "post_processor": ["type": "TemplateProcessing",
                               "single": [["SpecialToken": ["id": "<s>", "type_id": 0]], ["Sequence": ["id": "A", "type_id": 0]]],
                               "pair": [], "special_tokens": ["<s>": ["id": "<s>", "ids": [1], "tokens": ["<s>"]]]],
            "decoder": ["type": "Sequence", "decoders": [
                ["type": "Replace", "pattern": ["String": "▁"], "content": " "], ["type": "ByteFallback"], ["type": "Fuse"],
                ["type": "Strip", "content": " ", "start": 1, "stop": 0]]],
            "model": m,
        ]
        doc.merge(extra) { $1 }
        return try Tokenizer(json: data(doc))
    }

    static func id(_ tok: Tokenizer, _ s: String) -> UInt32 { tok.tokenID(s)! }
}

@Suite struct TokenizerPreTokenizerTests {
    /// Expectations are `tokenizers`' (0.23) for SmolLM2's Digits + ByteLevel pre-tokenizer.
    @Test(arguments: [
        ("Hello  world   ", ["Hello", " ", " world", "   "]),
        ("a\t\tb", ["a", "\t", "\t", "b"]),
        ("12345 abc123", ["1", "2", "3", "4", "5", " abc", "1", "2", "3"]),
        ("don't DON'T", ["don", "'t", " DON", "'", "T"]),
        (" \n\n x", [" \n\n", " x"]),
        ("I'll we've they're 'S 'd'm", ["I", "'ll", " we", "'ve", " they", "'re", " '", "S", " '", "d", "'m"]),
        ("é漢字😀", ["é漢字", "😀"]),
        ("x = 3.14", ["x", " =", " ", "3", ".", "1", "4"]),
        ("a\u{10EC5}b", ["a", "\u{10EC5}", "b"]),  // a Unicode 17 letter, unknown to Oniguruma
        ("\u{A0}x", ["\u{A0}", "x"]),
        ("  x", [" ", " x"]),
        ("x  ", ["x", "  "]),
        ("a  \n  b", ["a", "  \n ", " b"]),
        ("٣٤ Ⅻ ½x", ["٣", "٤", " ", "Ⅻ", " ", "½", "x"]),
        ("x'''s", ["x", "'''", "s"]),
        ("\r\n\r\n", ["\r\n\r\n"]),
        ("hi!!  ?? ok", ["hi", "!!", " ", " ??", " ok"]),
        ("", []),
    ])
    func gpt2Pattern(_ text: String, _ expected: [String]) throws {
        let tok = try TokFixtures.boundaryTokenizer(preTokenizer: TokFixtures.smolPreTokenizer)
        #expect(try TokFixtures.pieces(tok, text) == expected)
    }

    @Test func metaspaceAndSplit() throws {
        let ms = try TokFixtures.boundaryTokenizer(preTokenizer: ["type": "Sequence", "pretokenizers": [
            ["type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true],
            ["type": "ByteLevel", "add_prefix_space": false, "use_regex": false]]])
        #expect(try TokFixtures.pieces(ms, "Hey  friend") == ["▁Hey", "▁", "▁friend"])
        let split = try TokFixtures.boundaryTokenizer(preTokenizer: ["type": "Sequence", "pretokenizers": [
            ["type": "Split", "pattern": ["String": "-"], "behavior": "MergedWithNext", "invert": false],
            ["type": "ByteLevel", "add_prefix_space": false, "use_regex": false]]])
        #expect(try TokFixtures.pieces(split, "the-final--countdown") == ["the", "-final", "-", "-countdown"])
        let re = try TokFixtures.boundaryTokenizer(preTokenizer: ["type": "Sequence", "pretokenizers": [
            ["type": "Split", "pattern": ["Regex": "\\p{N}{1,3}"], "behavior": "Isolated", "invert": false],
            ["type": "ByteLevel", "add_prefix_space": false, "use_regex": false]]])
        #expect(try TokFixtures.pieces(re, "ab12345c") == ["ab", "123", "45", "c"])
    }
}

@Suite struct TokenizerSentencePieceTests {
    @Test func encodesLikeTokenizers() throws {
        let tok = try TokFixtures.sentencePiece()
        let id = { TokFixtures.id(tok, $0) }
        #expect(try tok.encode("") == [1])
        #expect(try tok.encode("", addSpecialTokens: false) == [])
        #expect(try tok.encode("ab ab") == [1, id("▁ab"), id("▁ab")])
        #expect(try tok.encode("abc") == [1, id("▁abc")])
        #expect(try tok.encode(" ") == [1, id("▁"), id("▁")])
        // Byte fallback for characters outside the vocabulary: é is C3 A9, \n is 0A.
        #expect(try tok.encode("é\n", addSpecialTokens: false) == [id("▁"), id("<0xC3>"), id("<0xA9>"), id("<0x0A>")])
        // The literal text "<unk>" is the added token <unk> (tokenizers' default: special tokens are
        // matched), and each piece around an added token gets its own ▁.
        #expect(try tok.encode("a<unk>b") == [1, id("▁a"), 0, id("▁"), id("b")])
        #expect(try tok.encode("<s>ab") == [1, 1, id("▁ab")])
    }

    @Test func decodesLikeTokenizers() throws {
        let tok = try TokFixtures.sentencePiece()
        let id = { TokFixtures.id(tok, $0) }
        #expect(tok.decode([1, id("▁ab"), id("▁ab")]) == "ab ab")
        #expect(tok.decode([1, id("▁ab"), 2], skipSpecialTokens: false) == "<s> ab</s>")
        #expect(tok.decode([id("▁"), id("<0xC3>"), id("<0xA9>")]) == "é")
        // Invalid byte sequences give one U+FFFD per byte token; unknown ids are skipped.
        #expect(tok.decode([id("a"), id("<0xC3>"), id("b"), 99_999]) == "a\u{FFFD}b")
        // <unk> is special, so it is skipped by default.
        #expect(tok.decode([id("▁a"), 0, id("▁"), id("b")]) == "a b")
    }

    @Test func unknownWithoutByteFallback() throws {
        let fused = try TokFixtures.sentencePiece(model: ["byte_fallback": false, "fuse_unk": true])
        #expect(try fused.encode("aéé", addSpecialTokens: false) == [TokFixtures.id(fused, "▁a"), 0])
        let unfused = try TokFixtures.sentencePiece(model: ["byte_fallback": false, "fuse_unk": false])
        #expect(try unfused.encode("aéé", addSpecialTokens: false) == [TokFixtures.id(unfused, "▁a"), 0, 0])
    }

    @Test func metaspacePrependFirst() throws {
        // The newer LLaMA conversion: no normalizer, Metaspace(prepend_scheme: first, split: false).
        let tok = try TokFixtures.sentencePiece(extra: [
            "normalizer": NSNull(),
            "pre_tokenizer": ["type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false]])
        let id = { TokFixtures.id(tok, $0) }
        #expect(try tok.encode("ab ab") == [1, id("▁ab"), id("▁ab")])
        // Only the piece at the start of the text gets the ▁.
        #expect(try tok.encode("ab<s>ab") == [1, id("▁ab"), 1, id("ab")])
    }

    @Test func invalidUTF8IsAnError() throws {
        let tok = try TokFixtures.sentencePiece()
        let bad: [UInt8] = [0x61, 0xC3, 0x28]
        #expect { try bad.withUnsafeBufferPointer { try tok.encode(utf8: $0) } } throws: { e in
            (e as? TQError)?.kind == .invalidArgument && (e as? TQError)?.message.contains("byte 1") == true
        }
    }
}

@Suite struct TokenizerErrorTests {
    func error(_ json: String) -> TQError? {
        do { _ = try Tokenizer(json: Data(json.utf8), path: "t.json"); return nil } catch { return error as? TQError }
    }

    static let model = #""model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}"#

    @Test func minimalBPE() throws {
        let tok = try Tokenizer(json: Data("{\(Self.model)}".utf8))
        #expect(try tok.encode("abba") == [2, 1, 0])
        #expect(tok.decode([2, 1]) == "ab b")  // no decoder: tokens joined with spaces
        #expect(tok.vocabSize == 3)
    }

    @Test(arguments: [
        ("{\"model\": ", TQError.Kind.format, "malformed JSON"),
        ("[1, 2]", .format, "not an object"),
        ("{}", .format, "model"),
        ("{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}", .unsupported, "WordPiece"),
        ("{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}", .unsupported, "Unigram"),
        ("{\"normalizer\": {\"type\": \"Precompiled\", \"precompiled_charsmap\": \"\"}, \(model)}", .unsupported, "Precompiled"),
        ("{\"pre_tokenizer\": {\"type\": \"UnicodeScripts\"}, \(model)}", .unsupported, "UnicodeScripts"),
        ("{\"decoder\": {\"type\": \"CTC\"}, \(model)}", .unsupported, "CTC"),
        ("{\"post_processor\": {\"type\": \"Mystery\"}, \(model)}", .unsupported, "Mystery"),
        ("{\"truncation\": {\"max_length\": 8}, \(model)}", .unsupported, "truncation"),
        ("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a b\"]}}", .format, "not in the vocabulary"),
        ("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a\"]}}", .format, "merge 1"),
        ("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -3}, \"merges\": []}}", .format, "vocab"),
        ("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [], \"dropout\": 0.1}}", .unsupported, "dropout"),
        ("{\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"(\"}, \"behavior\": \"Isolated\"}, \(model)}",
         .unsupported, "regex"),
    ])
    func refusesWithAClearError(_ json: String, _ kind: TQError.Kind, _ words: String) {
        let e = error(json)
        #expect(e?.kind == kind, "\(json): \(String(describing: e))")
        #expect(e?.message.contains(words) == true, "\(json): \(String(describing: e))")
        #expect(e?.message.contains("t.json") == true)
    }

    @Test func tokenFileRoundTripAndEncodeFile() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tq-tokf-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Data("{\(Self.model)}".utf8).write(to: URL(fileURLWithPath: dir + "/tokenizer.json"))
        try Data("abba\nab".utf8).write(to: URL(fileURLWithPath: dir + "/text.txt"))
        let ids = try TokenFile.encodeText(dir + "/text.txt", tokenizerPath: dir)
        #expect(ids == [2, 1, 0, 2])  // "\n" has no token and there is no unk: dropped
        try TokenFile.write(ids + [0xDEAD_BEEF], to: dir + "/ids.bin")
        #expect(try TokenFile.read(dir + "/ids.bin") == ids + [0xDEAD_BEEF])
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/ids.bin")).prefix(4) == Data([2, 0, 0, 0]))
        try Data([0x61, 0xFF]).write(to: URL(fileURLWithPath: dir + "/bad.txt"))
        #expect { try TokenFile.encodeText(dir + "/bad.txt", tokenizerPath: dir) } throws: { e in
            (e as? TQError)?.kind == .format && (e as? TQError)?.message.contains("bad.txt") == true
        }
    }

    @Test func missingFiles() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tq-tok-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(throws: TQError.self) { try Tokenizer(path: dir + "/nope.json") }
        do { _ = try Tokenizer(path: dir) } catch let e as TQError {
            #expect(e.kind == .io && e.message.contains("tokenizer.json"))
        }
        // A directory holding tokenizer.json opens.
        try Data("{\(Self.model)}".utf8).write(to: URL(fileURLWithPath: dir + "/tokenizer.json"))
        #expect(try Tokenizer(path: dir).encode("ab") == [2])
    }
}

@Suite struct TokenizerCABITests {
    @Test func capacityConvention() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tq-tokc-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Data("{\(TokenizerErrorTests.model)}".utf8).write(to: URL(fileURLWithPath: dir + "/tokenizer.json"))

        var tok: OpaquePointer? = nil
        #expect(tq_tokenizer_open(dir, &tok) == 0)
        defer { tq_tokenizer_free(tok) }
        var n: Int64 = -1
        #expect(tq_tokenize(tok, "abba", -1, nil, 0, &n) == 0 && n == 3)
        var ids = [UInt32](repeating: 7, count: 3)
        #expect(tq_tokenize(tok, "abba", 4, &ids, 2, &n) == TQError.Kind.invalidArgument.rawValue && n == 3)
        #expect(String(cString: tq_last_error()).contains("needs 3"))
        #expect(ids == [7, 7, 7])
        #expect(tq_tokenize(tok, "abba", 4, &ids, 3, &n) == 0 && ids == [2, 1, 0])
        #expect(tq_tokenize(tok, "ab\u{FF}", -1, nil, 0, &n) == 0)  // valid UTF-8 ("ÿ" has no token: dropped)

        var len: Int64 = -1
        #expect(tq_detokenize(tok, ids, 3, nil, 0, &len) == 0 && len == 6)  // "ab b a"
        var buf = [CChar](repeating: 1, count: 7)
        #expect(tq_detokenize(tok, ids, 3, &buf, 5, &len) == TQError.Kind.invalidArgument.rawValue && len == 6)
        #expect(tq_detokenize(tok, ids, 3, &buf, 7, &len) == 0 && buf[6] == 0)
        #expect(String(decoding: buf.prefix(6).map { UInt8(bitPattern: $0) }, as: UTF8.self) == "ab b a")
        #expect(tq_detokenize(tok, nil, 0, &buf, 7, &len) == 0 && len == 0 && buf[0] == 0)
        var size: Int64 = 0
        #expect(tq_tokenizer_vocab_size(tok, &size) == 0 && size == 3)
        var one: UInt32 = 0
        #expect(tq_tokenizer_token_id(tok, "ab", &one) == 0 && one == 2)
        #expect(tq_tokenizer_token_id(tok, "zz", &one) == TQError.Kind.invalidArgument.rawValue)

        var bad: OpaquePointer? = nil
        #expect(tq_tokenizer_open(dir + "/missing", &bad) == TQError.Kind.io.rawValue && bad == nil)
        #expect(tq_tokenize(nil, "a", 1, nil, 0, &n) == TQError.Kind.invalidArgument.rawValue)
    }
}

/// The real tokenizers against references that do not need the `tokenizers` package: ids of
/// the WikiText-2 test text made independently of this library (llama2.c's encoder for
/// stories260K, `tokenizers` and a pure-Python llama.cpp pre-tokenizer for SmolLM2), kept as
/// their count, ends and FNV-1a checksum, and ids taken from `tokenizers`.
struct TokenizerWikiTextTests {
    static let text = Fixtures.text("test.raw")

    /// FNV-1a (64-bit) over the id values, as the reference token files were checksummed.
    static func checksum(_ ids: some Collection<UInt32>) -> UInt64 {
        ids.reduce(0xcbf2_9ce4_8422_2325) { ($0 ^ UInt64($1)) &* 0x100_0000_01b3 }
    }

    /// stories260K: the reference (llama2.c's encode, no BOS) equals `tokenizers` with
    /// encode_special_tokens=True; test.raw.txt has no "<unk>" literal, so the default encoding is
    /// BOS + those ids.
    @Test func stories260KWholeTestText() throws {
        let tok = try Tokenizer(path: Fixtures.model("stories260K"))
        let start = Date()
        let ids = try tok.encode(file: Self.text)
        let seconds = Date().timeIntervalSince(start)
        #expect(ids.count == 815_069 + 1)
        #expect(ids.first == 1 && Array(ids.dropFirst().prefix(8)) == [410, 13, 13, 410, 64, 410, 461, 414])
        #expect(Self.checksum(ids.dropFirst()) == 0xfb14_8967_8eb0_5ca0)
        let text = try String(contentsOfFile: Self.text, encoding: .utf8)
        #expect(tok.decode(ids) == text)
        print("stories260K: \(ids.count) tokens in \(String(format: "%.2f", seconds)) s")
    }

    /// valid.txt writes rare words as "<unk>": by default that literal is the added token <unk> (id 0).
    @Test func stories260KLiteralUnk() throws {
        let tok = try Tokenizer(path: Fixtures.model("stories260K") + "/tokenizer.json")
        let path = Fixtures.text("valid")
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let ids = try tok.encode(file: path, addSpecialTokens: false)
        #expect(ids.filter { $0 == 0 }.count == text.components(separatedBy: "<unk>").count - 1)
        #expect(try tok.encode("x <unk> y", addSpecialTokens: false).contains(0))
    }

    /// aidreams260K: first ids and the round trip (ids from `tokenizers` 0.23.3).
    @Test func aidreams260K() throws {
        let tok = try Tokenizer(path: Fixtures.model("aidreams260K"))
        let ids = try tok.encode(file: Self.text)
        #expect(Array(ids.prefix(10)) == [1, 429, 13, 13, 429, 506, 429, 486, 437, 450])
        #expect(ids.count == 802_738)
        #expect(tok.decode(ids) == (try String(contentsOfFile: Self.text, encoding: .utf8)))
        #expect(tok.vocabSize == 512)
    }
}

/// SmolLM2 (GPT-2 byte-level BPE): the tokenizer.json fixture against `tokenizers`' ids (no BOS).
struct TokenizerSmolLM2Tests {
    static let path = Fixtures.tokenizer("SmolLM2-135M-Instruct")

    @Test func wholeTestText() throws {
        let tok = try Tokenizer(path: Self.path)
        let textPath = TokenizerWikiTextTests.text
        let ids = try tok.encode(file: textPath)
        #expect(ids.count == 304_978)
        #expect(Array(ids.prefix(8)) == [1116, 446, 6356, 389, 9226, 352, 446, 38028])
        #expect(TokenizerWikiTextTests.checksum(ids) == 0x1510_dc78_c75a_b23d)
        #expect(tok.decode(ids) == (try String(contentsOfFile: textPath, encoding: .utf8)))
    }
    @Test func trickyStrings() throws {
        let tok = try Tokenizer(path: Self.path)
        #expect(try tok.encode("Hello  world   ") == [19556, 216, 905, 333])
        #expect(try tok.encode("12345 abc123") == [33, 34, 35, 36, 37, 43239, 33, 34, 35])
        #expect(try tok.encode("don't DON'T") == [12420, 982, 422, 2154, 23, 68])
        #expect(try tok.encode("<|im_start|>hi<|im_end|>") == [1, 6004, 2])
        #expect(try tok.encode(" \n\n x") == [38028, 1792])
        #expect(try tok.encode("é漢字😀") == [2756, 177, 137, 112, 36518, 10813, 242, 218])
        #expect(tok.decode([1, 6004, 2]) == "hi")
        #expect(tok.decode([1, 6004, 2], skipSpecialTokens: false) == "<|im_start|>hi<|im_end|>")
        #expect(tok.vocabSize == 49152)
    }
}
