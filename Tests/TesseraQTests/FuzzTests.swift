// Deterministic fuzzing of the safetensors header parser and the config.json parser: thousands
// of seeded mutations of valid inputs. Every outcome must be success or a thrown TQError (no
// crash, no other error type); every file that parses must only describe bytes inside itself.
//
// Uses STTempDir, STFixture and TinyLlama from SafeTensorsTests.swift.

import Foundation
import Testing
@testable import TesseraQ

/// The fuzzers' draws on the tests' seeded generator.
private extension TestRNG {
    mutating func below(_ n: Int) -> Int { int(n) }
    mutating func chance(_ p: Double) -> Bool { Double(next() >> 11) / Double(1 << 53) < p }
    mutating func pick<T>(_ a: [T]) -> T { a[below(a.count)] }
}

private let interestingNumbers = [
    "0", "-0", "-1", "1", "2", "3", "4", "7", "8", "12", "16", "24", "64", "0.5", "-0.0", "2.0", "1e-5", "1e3",
    "1e308", "-1e308", "1e999", "2147483647", "2147483648", "4294967296", "9007199254740993",
    "9223372036854775807", "9223372036854775808", "-9223372036854775808", "18446744073709551616",
    "4611686018427387904", "8999999999999999",
]

private let jsonTokens = [
    "{", "}", "[", "]", ",", ":", "\"", "null", "true", "false", "\"F32\"", "\"F16\"", "\"BF16\"", "\"I32\"",
    "\"dtype\": ", "\"shape\": ", "\"data_offsets\": ", "[0, 4]", "[1]", "[]", "{}", "\"__metadata__\": {}",
    "\"z\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}",
    "\"z\": {\"dtype\": \"F16\", \"shape\": [3], \"data_offsets\": [60, 66]}", "\\u0000", "\\\"", "\u{00e9}", "\u{1F600}",
]

/// A random JSON value, at most `depth` levels deep.
private func randomJSON(_ r: inout TestRNG, depth: Int = 3) -> String {
    switch r.below(depth > 0 ? 8 : 5) {
    case 0: return r.pick(["null", "true", "false"])
    case 1, 2: return r.pick(interestingNumbers)
    case 3: return "\"" + r.pick(["", "F32", "BF16", "x", "llama", "silu", "LlamaForCausalLM", "GPT2LMHeadModel", "default", "llama3", "linear", "yarn"]) + "\""
    case 4: return String(r.below(100))
    case 5, 6: return "[" + (0..<r.below(4)).map { _ in randomJSON(&r, depth: depth - 1) }.joined(separator: ", ") + "]"
    default:
        let keys = ["dtype", "shape", "data_offsets", "factor", "rope_type", "type", "original_max_position_embeddings", "a", ""]
        return "{" + (0..<r.below(4)).map { _ in "\"\(r.pick(keys))\": " + randomJSON(&r, depth: depth - 1) }.joined(separator: ", ") + "}"
    }
}

/// Byte-level mutations of a JSON text, shared by both fuzzers.
private func mutateText(_ text: inout [UInt8], _ r: inout TestRNG) {
    switch r.below(7) {
    case 0 where !text.isEmpty: // flip a bit
        text[r.below(text.count)] ^= UInt8(1) << UInt8(r.below(8))
    case 1 where !text.isEmpty: // overwrite a byte with a structural or random byte
        let b: UInt8 = r.chance(0.7) ? r.pick(Array("{}[]:,\"-0123456789.eE \\ntf".utf8)) : UInt8(truncatingIfNeeded: r.next())
        text[r.below(text.count)] = b
    case 2: // splice a token or a random value
        let s = Array((r.chance(0.5) ? r.pick(jsonTokens) : randomJSON(&r)).utf8)
        text.insert(contentsOf: s, at: r.below(text.count + 1))
    case 3 where !text.isEmpty: // delete a range
        let a = r.below(text.count), n = min(text.count - a, 1 + r.below(12))
        text.removeSubrange(a..<a + n)
    case 4: // replace a run of digits (a number) with an interesting one
        let digits = text.indices.filter { (0x30...0x39).contains(text[$0]) }
        guard !digits.isEmpty else { return }
        var a = r.pick(digits), b = a
        while a > 0, (0x30...0x39).contains(text[a - 1]) || text[a - 1] == 0x2D || text[a - 1] == 0x2E { a -= 1 }
        while b < text.count, (0x30...0x39).contains(text[b]) || text[b] == 0x2E || text[b] == 0x65 { b += 1 }
        text.replaceSubrange(a..<b, with: Array(r.pick(interestingNumbers).utf8))
    case 5 where !text.isEmpty: // duplicate a range (repeated keys, doubled entries)
        let a = r.below(text.count), n = min(text.count - a, 1 + r.below(40))
        text.insert(contentsOf: Array(text[a..<a + n]), at: r.below(text.count + 1))
    default: // replace a quoted string with another
        let quotes = text.indices.filter { text[$0] == 0x22 }
        guard quotes.count >= 2 else { return }
        let i = r.below(quotes.count - 1)
        let s = r.pick(["F32", "F16", "BF16", "I32", "U8", "F64", "F8_E4M3", "Q4_K", "", "__metadata__", "dtype", "shape",
                        "data_offsets", "hidden_size", "head_dim", "rope_scaling", "llama3", "a", "b"])
        text.replaceSubrange(quotes[i] + 1..<quotes[i + 1], with: Array(s.utf8))
    }
}

@Suite("fuzz: safetensors and config parsers")
struct FuzzTests {
    /// The valid starting file: every float dtype, an integer tensor, an empty tensor, metadata.
    static func baseTensors() -> [STFixture.Tensor] {
        let v = (0..<15).map { Float($0) / 4 - 1 }
        return [
            STFixture.Tensor(name: "a", dtype: "F32", shape: [3, 5], data: STFixture.f32(v)),
            STFixture.Tensor(name: "b", dtype: "F16", shape: [7], data: STFixture.f16(Array(v[0..<7]))),
            STFixture.Tensor(name: "c", dtype: "BF16", shape: [2, 3], data: STFixture.bf16(Array(v[0..<6]))),
            STFixture.Tensor(name: "d", dtype: "I32", shape: [4], data: STFixture.i32([1, 2, 3, 4])),
            STFixture.Tensor(name: "e", dtype: "F32", shape: [0], data: []),
            STFixture.Tensor(name: "f", dtype: "U8", shape: [5], data: [1, 2, 3, 4, 5]),
        ]
    }

    /// Checks a parsed file against its own bytes, independently of the parser's checks, then
    /// reads every float tensor (which must stay inside the mapping).
    private func checkParsed(_ f: SafeTensorsFile, fileSize: Int, dataStart: Int, iteration: Int) throws {
        var ranges: [(Int, Int)] = []
        for (name, t) in f.tensors {
            var bytes = t.dtype.size
            var ok = t.shape.allSatisfy { $0 >= 0 }
            for d in t.shape where ok {
                let (m, o) = bytes.multipliedReportingOverflow(by: d)
                ok = !o
                bytes = m
            }
            guard ok, t.begin >= dataStart, t.begin <= t.end, t.end <= fileSize, t.end - t.begin == bytes else {
                Issue.record("iteration \(iteration): tensor \(name) \(t.dtype) \(t.shape) [\(t.begin), \(t.end)) escapes a \(fileSize)-byte file (data at \(dataStart))")
                return
            }
            if t.end > t.begin { ranges.append((t.begin, t.end)) }
            if t.dtype.isFloat {
                let out = UnsafeMutablePointer<Float>.allocate(capacity: max(t.count, 1))
                defer { out.deallocate() }
                try f.readFloats(t, into: out)
            } else {
                // Non-float tensors are refused by readFloats (before touching `out`).
                let out = UnsafeMutablePointer<Float>.allocate(capacity: 1)
                defer { out.deallocate() }
                do {
                    try f.readFloats(t, into: out)
                    Issue.record("iteration \(iteration): readFloats accepted \(t.dtype) tensor \(name)")
                } catch let e as TQError {
                    #expect(e.kind == .unsupported)
                }
            }
        }
        ranges.sort { $0.0 < $1.0 }
        for (x, y) in zip(ranges, ranges.dropFirst()) where y.0 < x.1 {
            Issue.record("iteration \(iteration): accepted overlapping ranges \(x) and \(y)")
        }
    }

    @Test("safetensors: 3000 seeded mutations parse or throw TQError, and stay in bounds")
    func safetensorsFuzz() throws {
        let dir = try STTempDir()
        let base = Self.baseTensors()
        let baseHeader = Array(STFixture.header(base, metadata: ["format": "pt", "note": "fuzz"]).utf8)
        let baseData = base.flatMap(\.data)
        var r = TestRNG(0x7E55_E7A0)
        var parsed = 0, refused = 0, floatReads = 0
        var kinds: [TQError.Kind: Int] = [:]
        let iterations = 3000
        for it in 0..<iterations {
            var header = baseHeader, data = baseData
            var prefix: UInt64? = nil // nil: the true header length
            var truncate: Int? = nil
            var extra: [UInt8] = []
            for _ in 0..<(1 + r.below(3)) {
                switch r.below(10) {
                case 0...5: mutateText(&header, &r)
                case 6: // a wrong length prefix
                    let n = UInt64(header.count)
                    prefix = r.pick([n &+ 1, n &- 1, n &+ UInt64(r.below(64)), n &- UInt64(r.below(64)), r.next(), UInt64(r.below(200)),
                                     UInt64.max, 1 << 63, 0])
                case 7: truncate = r.below(8 + header.count + data.count + 1)
                case 8: extra += (0..<(1 + r.below(64))).map { _ in UInt8(truncatingIfNeeded: r.next()) }
                default: // shrink or grow the data buffer
                    if r.chance(0.5), !data.isEmpty { data.removeLast(1 + r.below(min(data.count, 16))) } else { data += [0, 0, 0x80, 0x3F] }
                }
            }
            var bytes = STFixture.file(header: header, data: data + extra, lengthPrefix: prefix)
            if let truncate, truncate < bytes.count { bytes.removeSubrange(truncate...) }
            let p = try dir.write("f\(it).safetensors", bytes)
            defer { dir.remove("f\(it).safetensors") }
            do {
                let f = try SafeTensorsFile(path: p)
                parsed += 1
                let dataStart = 8 + Int(prefix ?? UInt64(header.count))
                try checkParsed(f, fileSize: bytes.count, dataStart: dataStart, iteration: it)
                floatReads += f.tensors.values.filter { $0.dtype.isFloat }.count
            } catch let e as TQError {
                refused += 1
                kinds[e.kind, default: 0] += 1
                #expect(e.kind == .format || e.kind == .unsupported, "iteration \(it): \(e.kind): \(e.message)")
                #expect(e.message.contains(p), "iteration \(it): message does not name the file: \(e.message)")
            } catch {
                Issue.record("iteration \(it): non-TQError \(type(of: error)): \(error)")
            }
        }
        // The fuzzer must explore both sides, or it tests nothing.
        #expect(parsed + refused == iterations)
        #expect(parsed >= 100, "only \(parsed) mutants parsed")
        #expect(refused >= iterations / 3, "only \(refused) mutants refused")
        #expect(floatReads >= 300)
        #expect((kinds[.unsupported] ?? 0) > 0 && (kinds[.format] ?? 0) > 0, "\(kinds)")
    }

    @Test("safetensors: nested JSON in a header parses up to JSONValue.maxDepth, deeper is refused quickly",
          arguments: [1, 10, 62, 63, 100, 511, 512, 2000, 100_000])
    func deepNesting(_ depth: Int) throws {
        let dir = try STTempDir()
        let t = STFixture.Tensor(name: "a", dtype: "F32", shape: [1], data: STFixture.f32([1]))
        let arrays = String(repeating: "[", count: depth) + String(repeating: "]", count: depth)
        let objects = String(repeating: "{\"k\": ", count: depth) + "1" + String(repeating: "}", count: depth)
        for deep in [arrays, objects] {
            // Two levels of our own around the nested value.
            let header = "{\"__metadata__\": {\"deep\": \(deep)}, \"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}"
            let p = try dir.write("deep.safetensors", STFixture.file(header: header, data: t.data))
            let start = ContinuousClock.now
            do {
                let f = try SafeTensorsFile(path: p)
                #expect(depth + 2 <= JSONValue.maxDepth, "depth \(depth + 2) accepted")
                #expect(f.tensors["a"]?.shape == [1] && f.metadata["deep"] == "")
            } catch let e as TQError {
                #expect(depth + 2 > JSONValue.maxDepth, "depth \(depth + 2) refused: \(e.message)")
                #expect(e.kind == .format && e.message.contains(p), "\(e.message)")
            } catch {
                Issue.record("non-TQError \(error)")
            }
            // Decoding cost must not explode with depth (it took seconds at depth 511).
            let elapsed = ContinuousClock.now - start
            #expect(elapsed < .seconds(2), "depth \(depth): \(elapsed)")
        }
    }

    @Test("config.json: 3000 seeded mutations parse or throw TQError; 300 valid ones open and run")
    func configFuzz() throws {
        // Weights for the tiny model stay fixed; only config.json changes.
        let dir = try STTempDir()
        var model = TinyLlama()
        model.config["head_dim"] = "4"
        model.config["attention_bias"] = "false"
        model.config["mlp_bias"] = "false"
        model.config["rope_scaling"] = "{\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 32}"
        try model.write(to: dir)
        let configPath = dir.path + "/config.json"
        let keys = model.config.keys.sorted() + ["quantization_config", "dtype", "rope_type", "bos_token_id", "max_position_embeddings"]
        var r = TestRNG(0xC0_4F16)
        var parsed = 0, opened = 0, refused = 0, ran = 0
        var modelRuns = 0 // LlamaModel opens are ~10 ms each in a debug build: the first 300 parsed configs
        let iterations = 3000
        for it in 0..<iterations {
            var text: [UInt8]
            if r.chance(0.6) {
                // Structured: replace, remove or add keys, then maybe some byte damage.
                var m = model
                for _ in 0..<(1 + r.below(3)) {
                    let k = r.pick(keys)
                    switch r.below(4) {
                    case 0: m.config[k] = nil
                    case 1: m.config[k] = r.pick(interestingNumbers)
                    default: m.config[k] = randomJSON(&r)
                    }
                }
                text = Array(m.configJSON.utf8)
                if r.chance(0.2) { mutateText(&text, &r) }
            } else {
                text = Array(model.configJSON.utf8)
                for _ in 0..<(1 + r.below(3)) { mutateText(&text, &r) }
                if r.chance(0.05) { text.removeSubrange(r.below(text.count + 1)...) }
            }
            // The parser alone.
            var configParsed = false
            do {
                let c = try LlamaConfig(json: try JSONValue.parse(Data(text), what: configPath), path: configPath)
                parsed += 1
                configParsed = true
                // Derived quantities must be computable without trapping.
                #expect(c.hidden > 0 && c.heads > 0 && c.kvHeads > 0 && c.headDim > 0 && c.vocab > 0 && c.layers > 0)
                #expect(c.qDim > 0 && c.kvDim > 0 && c.heads % c.kvHeads == 0)
                for k in LinearKind.allCases { let s = k.shape(c); #expect(s.out > 0 && s.in > 0) }
                if c.headDim <= 4096 { #expect(c.inverseFrequencies.count == c.headDim / 2) }
            } catch let e as TQError {
                refused += 1
                #expect(e.kind == .format || e.kind == .unsupported, "iteration \(it): \(e.kind): \(e.message)")
                #expect(e.message.contains(configPath), "iteration \(it): message does not name config.json: \(e.message)")
            } catch {
                Issue.record("iteration \(it): non-TQError \(type(of: error)): \(error)")
            }
            // The whole model, which checks the config against the tensors and runs when they
            // agree. (A config the parser refused fails LlamaModel the same way: skipped for time.)
            guard configParsed, modelRuns < 300 else { continue }
            modelRuns += 1
            try dir.write("config.json", text)
            do {
                let m = try LlamaModel(directory: dir.path)
                opened += 1
                if opened % 2 == 0 {
                    _ = try TinyLlama.logits(m)
                    ran += 1
                }
            } catch is TQError {
            } catch {
                Issue.record("iteration \(it): LlamaModel threw a non-TQError \(type(of: error)): \(error)")
            }
        }
        #expect(parsed + refused == iterations)
        #expect(parsed >= 300, "only \(parsed) configs parsed")
        #expect(refused >= 300, "only \(refused) configs refused")
        #expect(opened >= 100 && ran >= 50, "opened \(opened), ran \(ran)")
    }
}
