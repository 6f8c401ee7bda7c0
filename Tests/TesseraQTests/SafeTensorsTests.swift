// The safetensors loader, TensorStore and LlamaModel(directory:) on bad input: every case must
// throw a TQError of the right kind whose message names the file and the problem, and never
// crash. Valid tiny models (F32, F16, BF16, sharded) must open and agree exactly.
//
// STFixture (a safetensors writer), STTempDir and TinyLlama are also used by FuzzTests.swift.

import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing
@testable import TesseraQ

// MARK: - fixtures

/// A temporary directory removed when the object goes away.
final class STTempDir: @unchecked Sendable {
    let path: String

    init() throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("tesseraq-tests-" + UUID().uuidString).path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// Writes (replacing) `name`. Plain POSIX calls: Foundation's Data.write costs milliseconds
    /// per file here, too slow for thousands of fuzz cases.
    @discardableResult
    func write(_ name: String, _ bytes: [UInt8]) throws -> String {
        let p = path + "/" + name
        let fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: p]) }
        defer { close(fd) }
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + done, bytes.count - done) }
            guard n > 0 else { throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: p]) }
            done += n
        }
        return p
    }

    func remove(_ name: String) { unlink(path + "/" + name) }

    @discardableResult
    func write(_ name: String, text: String) throws -> String { try write(name, Array(text.utf8)) }
}

/// Builds safetensors files byte by byte: u64 LE header length, JSON header, data buffer.
enum STFixture {
    struct Tensor {
        var name: String
        var dtype: String
        var shape: [Int]
        var data: [UInt8]
    }

    static func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
    static func f32(_ v: [Float]) -> [UInt8] { v.flatMap { le($0.bitPattern) } }
    static func f16(_ v: [Float]) -> [UInt8] { v.flatMap { le(Float16($0).bitPattern) } }
    /// Truncating encode: exact only for values representable in bfloat16 (what the tests use).
    static func bf16(_ v: [Float]) -> [UInt8] { v.flatMap { le(UInt16($0.bitPattern >> 16)) } }
    static func i32(_ v: [Float]) -> [UInt8] { v.flatMap { le(Int32($0 * 64)) } }

    static func encode(_ v: [Float], dtype: String) -> [UInt8] {
        switch dtype {
        case "F32": f32(v)
        case "F16": f16(v)
        case "BF16": bf16(v)
        case "I32": i32(v)
        default: fatalError("test fixture: no encoder for \(dtype)")
        }
    }

    /// The JSON header for `tensors` laid out back to back from offset 0.
    static func header(_ tensors: [Tensor], metadata: [String: String]? = nil) -> String {
        var parts: [String] = []
        if let metadata {
            let m = metadata.sorted { $0.key < $1.key }.map { "\"\($0.key)\": \"\($0.value)\"" }
            parts.append("\"__metadata__\": {\(m.joined(separator: ", "))}")
        }
        var offset = 0
        for t in tensors {
            let shape = t.shape.map(String.init).joined(separator: ", ")
            parts.append("\"\(t.name)\": {\"dtype\": \"\(t.dtype)\", \"shape\": [\(shape)], \"data_offsets\": [\(offset), \(offset + t.data.count)]}")
            offset += t.data.count
        }
        return "{" + parts.joined(separator: ", ") + "}"
    }

    /// A file from a raw header and data; `lengthPrefix` overrides the true header length.
    static func file(header: [UInt8], data: [UInt8], lengthPrefix: UInt64? = nil) -> [UInt8] {
        le(lengthPrefix ?? UInt64(header.count)) + header + data
    }

    static func file(header: String, data: [UInt8], lengthPrefix: UInt64? = nil) -> [UInt8] {
        file(header: Array(header.utf8), data: data, lengthPrefix: lengthPrefix)
    }

    /// A well-formed file holding `tensors`; the header is space-padded to `align` bytes.
    static func file(_ tensors: [Tensor], metadata: [String: String]? = nil, align: Int = 8) -> [UInt8] {
        var h = Array(header(tensors, metadata: metadata).utf8)
        while h.count % align != 0 { h.append(0x20) }
        return file(header: h, data: tensors.flatMap(\.data))
    }
}

/// A tiny LLaMA (hidden 8, intermediate 12, 2 layers, 2 heads, 1 kv head, vocab 16) whose weights
/// are exactly representable in bfloat16 and float16, so F32/F16/BF16 copies hold equal weights.
struct TinyLlama {
    /// config.json as raw JSON values per key (so a test can put anything there).
    var config: [String: String]
    var tensors: [(name: String, shape: [Int], values: [Float])]

    static let hidden = 8, intermediate = 12, layers = 2, heads = 2, kvHeads = 1, headDim = 4, vocab = 16

    init(tied: Bool = false, seed: UInt64 = 1) {
        config = [
            "architectures": "[\"LlamaForCausalLM\"]", "model_type": "\"llama\"", "hidden_act": "\"silu\"",
            "hidden_size": "\(Self.hidden)", "intermediate_size": "\(Self.intermediate)",
            "num_hidden_layers": "\(Self.layers)", "num_attention_heads": "\(Self.heads)",
            "num_key_value_heads": "\(Self.kvHeads)", "vocab_size": "\(Self.vocab)",
            "max_position_embeddings": "64", "rms_norm_eps": "1e-05", "rope_theta": "10000.0",
            "tie_word_embeddings": tied ? "true" : "false", "torch_dtype": "\"float32\"",
        ]
        var state = seed
        func next() -> Int {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return Int((z ^ (z >> 31)) >> 33)
        }
        // k/64 with |k| <= 48 and 1 + k/64 with |k| <= 16 need at most 7 significant bits.
        func weights(_ n: Int) -> [Float] { (0..<n).map { _ in Float(next() % 97 - 48) / 64 } }
        func norm(_ n: Int) -> [Float] { (0..<n).map { _ in 1 + Float(next() % 33 - 16) / 64 } }
        let d = Self.hidden, f = Self.intermediate, q = Self.heads * Self.headDim, kv = Self.kvHeads * Self.headDim
        var t: [(name: String, shape: [Int], values: [Float])] = [("model.embed_tokens.weight", [Self.vocab, d], weights(Self.vocab * d))]
        for l in 0..<Self.layers {
            let p = "model.layers.\(l)."
            t.append((p + "input_layernorm.weight", [d], norm(d)))
            t.append((p + "self_attn.q_proj.weight", [q, d], weights(q * d)))
            t.append((p + "self_attn.k_proj.weight", [kv, d], weights(kv * d)))
            t.append((p + "self_attn.v_proj.weight", [kv, d], weights(kv * d)))
            t.append((p + "self_attn.o_proj.weight", [d, q], weights(d * q)))
            t.append((p + "post_attention_layernorm.weight", [d], norm(d)))
            t.append((p + "mlp.gate_proj.weight", [f, d], weights(f * d)))
            t.append((p + "mlp.up_proj.weight", [f, d], weights(f * d)))
            t.append((p + "mlp.down_proj.weight", [d, f], weights(d * f)))
        }
        t.append(("model.norm.weight", [d], norm(d)))
        if !tied { t.append(("lm_head.weight", [Self.vocab, d], weights(Self.vocab * d))) }
        tensors = t
        for x in t.flatMap(\.values) {
            precondition(Float(bitPattern: x.bitPattern & 0xFFFF_0000) == x && Float(Float16(x)) == x)
        }
    }

    var configJSON: String {
        "{" + config.sorted { $0.key < $1.key }.map { "\"\($0.key)\": \($0.value)" }.joined(separator: ",\n ") + "}"
    }

    func stTensors(dtype: String, dtypes: [String: String] = [:]) -> [STFixture.Tensor] {
        tensors.map { t in
            let dt = dtypes[t.name] ?? dtype
            return STFixture.Tensor(name: t.name, dtype: dt, shape: t.shape, data: STFixture.encode(t.values, dtype: dt))
        }
    }

    /// Writes config.json and model.safetensors (or, with `sharded`, two shards and an index).
    func write(to dir: STTempDir, dtype: String = "F32", dtypes: [String: String] = [:], sharded: Bool = false) throws {
        try dir.write("config.json", text: configJSON)
        let all = stTensors(dtype: dtype, dtypes: dtypes)
        if !sharded {
            try dir.write("model.safetensors", STFixture.file(all, metadata: ["format": "pt"]))
            return
        }
        let names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
        var map: [String] = []
        for (s, name) in names.enumerated() {
            let part = all.enumerated().filter { $0.offset % 2 == s }.map(\.element)
            try dir.write(name, STFixture.file(part, metadata: ["format": "pt"]))
            map += part.map { "\"\($0.name)\": \"\(name)\"" }
        }
        let size = all.reduce(0) { $0 + $1.data.count }
        try dir.write("model.safetensors.index.json",
                      text: "{\"metadata\": {\"total_size\": \(size)}, \"weight_map\": {\(map.joined(separator: ", "))}}")
    }

    static let tokens: [UInt32] = [3, 1, 15, 0, 7, 7, 2]

    static func logits(_ m: LlamaModel) throws -> [Float] {
        var out = [Float](repeating: .nan, count: tokens.count * m.config.vocab)
        try tokens.withUnsafeBufferPointer { t in
            try out.withUnsafeMutableBufferPointer { try m.logits(t, into: $0.baseAddress!) }
        }
        return out
    }
}

/// Runs `body`, which must throw a TQError of `kind` whose message contains every `mention`.
func expectTQError(_ kind: TQError.Kind, mentioning mentions: [String], _ what: String = "",
                   sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) {
    var thrown: (any Error)?
    do { try body() } catch { thrown = error }
    checkTQError(thrown, kind, mentioning: mentions, what, sourceLocation: sourceLocation)
}

/// `thrown` must be a TQError of `kind` whose message contains every `mention`.
func checkTQError(_ thrown: (any Error)?, _ kind: TQError.Kind, mentioning mentions: [String], _ what: String = "",
                  sourceLocation: SourceLocation = #_sourceLocation) {
    guard let thrown else {
        Issue.record("\(what): expected a TQError(\(kind)), but nothing was thrown", sourceLocation: sourceLocation)
        return
    }
    guard let e = thrown as? TQError else {
        Issue.record("\(what): threw a non-TQError \(type(of: thrown)): \(thrown)", sourceLocation: sourceLocation)
        return
    }
    #expect(e.kind == kind, "\(what): kind \(e.kind), want \(kind); message: \(e.message)", sourceLocation: sourceLocation)
    for m in mentions where !e.message.contains(m) {
        Issue.record("\(what): message does not mention \"\(m)\": \(e.message)", sourceLocation: sourceLocation)
    }
}

private final class OutcomeBox: @unchecked Sendable {
    var error: (any Error)?
}

/// Runs `body` on another thread and returns what it threw. If it is still running after 5 s
/// (blocked opening or reading the FIFO at `fifo`), records an issue and unblocks it by opening
/// the FIFO for writing and closing it again (the reader then sees end of file).
func outcome(unblocking fifo: String, sourceLocation: SourceLocation = #_sourceLocation,
             _ body: @escaping @Sendable () throws -> Void) -> (any Error)? {
    let box = OutcomeBox()
    let done = DispatchSemaphore(value: 0)
    DispatchQueue.global().async {
        do { try body() } catch { box.error = error }
        done.signal()
    }
    if done.wait(timeout: .now() + 5) == .timedOut {
        Issue.record("blocked on the FIFO \(fifo) for 5 s", sourceLocation: sourceLocation)
        repeat {
            let fd = open(fifo, O_WRONLY | O_NONBLOCK)
            if fd >= 0 { close(fd) }
        } while done.wait(timeout: .now() + 0.1) == .timedOut
    }
    return box.error
}

// MARK: - safetensors files

@Suite("safetensors loader: bad input")
struct SafeTensorsTests {
    @Test("missing file is an I/O error naming the path")
    func missingFile() throws {
        let dir = try STTempDir()
        let p = dir.path + "/nope.safetensors"
        expectTQError(.io, mentioning: [p, "cannot open"]) { _ = try SafeTensorsFile(path: p) }
    }

    @Test("a directory is not a regular file")
    func directory() throws {
        let dir = try STTempDir()
        let p = dir.path + "/model.safetensors"
        try FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: false)
        expectTQError(.io, mentioning: [p, "not a regular file"]) { _ = try SafeTensorsFile(path: p) }
        expectTQError(.io, mentioning: [p, "not a regular file"]) { _ = try TensorStore(directory: dir.path) }
    }

    @Test("a FIFO named model.safetensors is refused without waiting for a writer")
    func fifo() throws {
        let dir = try STTempDir()
        let p = dir.path + "/model.safetensors"
        #expect(mkfifo(p, 0o600) == 0)
        checkTQError(outcome(unblocking: p) { _ = try SafeTensorsFile(path: p) }, .io, mentioning: [p, "not a regular file"])
        let d = dir.path
        checkTQError(outcome(unblocking: p) { _ = try TensorStore(directory: d) }, .io, mentioning: [p, "not a regular file"])
    }

    @Test("an unreadable file is an I/O error", .enabled(if: getuid() != 0, "root reads mode-000 files"))
    func unreadable() throws {
        let dir = try STTempDir()
        let p = try dir.write("model.safetensors", STFixture.file([STFixture.Tensor(name: "a", dtype: "F32", shape: [1], data: STFixture.f32([1]))]))
        try FileManager.default.setAttributes([.posixPermissions: 0], ofItemAtPath: p)
        defer { try? FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: p) }
        expectTQError(.io, mentioning: [p, "cannot open"]) { _ = try SafeTensorsFile(path: p) }
    }

    @Test("files shorter than the 8-byte length prefix", arguments: [0, 1, 7])
    func tooShort(_ size: Int) throws {
        let dir = try STTempDir()
        let p = try dir.write("short.safetensors", [UInt8](repeating: 2, count: size))
        expectTQError(.format, mentioning: [p, "too short"]) { _ = try SafeTensorsFile(path: p) }
    }

    @Test("header length past the end of the file", arguments: [UInt64(1), 1000, 1 << 40, 1 << 63, UInt64.max])
    func headerPastEnd(_ extra: UInt64) throws {
        let dir = try STTempDir()
        let header = STFixture.header([STFixture.Tensor(name: "a", dtype: "F32", shape: [2], data: STFixture.f32([1, 2]))])
        let data = STFixture.f32([1, 2])
        let trueLength = UInt64(header.utf8.count) + UInt64(data.count)
        let prefix = extra >= 1 << 40 ? extra : trueLength + extra
        let p = try dir.write("x.safetensors", STFixture.file(header: header, data: data, lengthPrefix: prefix))
        expectTQError(.format, mentioning: [p, "past the end"]) { _ = try SafeTensorsFile(path: p) }
    }

    struct BadHeader: CustomTestStringConvertible, Sendable {
        let label: String
        let header: [UInt8]
        let dataSize: Int
        let kind: TQError.Kind
        let mentions: [String]
        var testDescription: String { label }
        init(_ label: String, _ header: String, data: Int = 64, kind: TQError.Kind = .format, _ mentions: [String]) {
            self.init(label, Array(header.utf8), data: data, kind: kind, mentions)
        }
        init(_ label: String, _ header: [UInt8], data: Int = 64, kind: TQError.Kind = .format, _ mentions: [String]) {
            self.label = label
            self.header = header
            dataSize = data
            self.kind = kind
            self.mentions = mentions
        }
    }

    static func entry(_ name: String = "t", dtype: String = "\"F32\"", shape: String = "[2, 2]", offsets: String = "[0, 16]") -> String {
        "\"\(name)\": {\"dtype\": \(dtype), \"shape\": \(shape), \"data_offsets\": \(offsets)}"
    }

    static let badHeaders: [BadHeader] = {
        var c: [BadHeader] = []
        // malformed JSON
        c.append(BadHeader("empty header", "", ["malformed JSON"]))
        c.append(BadHeader("truncated JSON", "{" + entry(), ["malformed JSON"]))
        c.append(BadHeader("not JSON", "hello world", ["malformed JSON"]))
        c.append(BadHeader("trailing garbage", "{" + entry() + "} x", ["malformed JSON"]))
        c.append(BadHeader("invalid UTF-8", Array("{\"t\": {\"dtype\": \"".utf8) + [0xFF, 0xFE] + Array("\"}}".utf8), ["malformed JSON"]))
        c.append(BadHeader("NUL padding", Array("{}".utf8) + [0, 0, 0, 0, 0, 0], ["malformed JSON"]))
        c.append(BadHeader("too deeply nested", String(repeating: "[", count: 5000) + String(repeating: "]", count: 5000), ["malformed JSON"]))
        // not an object
        c.append(BadHeader("array header", "[1, 2]", ["not a JSON object"]))
        c.append(BadHeader("string header", "\"model\"", ["not a JSON object"]))
        c.append(BadHeader("number header", "42", ["not a JSON object"]))
        c.append(BadHeader("null header", "null", ["not a JSON object"]))
        c.append(BadHeader("entry not an object", "{\"t\": [1, 2]}", ["t", "not an object"]))
        c.append(BadHeader("__metadata__ not an object", "{\"__metadata__\": 3}", ["__metadata__"]))
        // dtype
        c.append(BadHeader("missing dtype", "{\"t\": {\"shape\": [2, 2], \"data_offsets\": [0, 16]}}", ["t", "no dtype"]))
        c.append(BadHeader("dtype not a string", "{" + entry(dtype: "4") + "}", ["t", "no dtype"]))
        c.append(BadHeader("unsupported dtype", "{" + entry(dtype: "\"Q4_K\"") + "}", kind: .unsupported, ["t", "unsupported dtype", "Q4_K"]))
        c.append(BadHeader("lower-case dtype", "{" + entry(dtype: "\"f32\"") + "}", kind: .unsupported, ["t", "unsupported dtype", "f32"]))
        // shape
        c.append(BadHeader("negative shape", "{" + entry(shape: "[-2, -2]") + "}", ["t", "malformed shape"]))
        c.append(BadHeader("one negative dim", "{" + entry(shape: "[-1, 4]", offsets: "[0, 16]") + "}", ["t", "malformed shape"]))
        c.append(BadHeader("fractional shape", "{" + entry(shape: "[2.5, 2]") + "}", ["t", "malformed shape"]))
        c.append(BadHeader("string shape entry", "{" + entry(shape: "[\"2\", 2]") + "}", ["t", "malformed shape"]))
        c.append(BadHeader("boolean shape entry", "{" + entry(shape: "[true, 2]") + "}", ["t", "malformed shape"]))
        c.append(BadHeader("shape not an array", "{" + entry(shape: "4") + "}", ["t", "malformed shape"]))
        c.append(BadHeader("huge shape entry", "{" + entry(shape: "[1e300, 2]") + "}", ["t", "malformed shape"]))
        c.append(BadHeader("missing shape", "{\"t\": {\"dtype\": \"F32\", \"data_offsets\": [0, 16]}}", ["t", "malformed shape"]))
        // data_offsets
        c.append(BadHeader("offsets past the buffer", "{" + entry(offsets: "[0, 16]") + "}", data: 12, ["t", "data_offsets", "past the end"]))
        c.append(BadHeader("offsets far past the buffer", "{" + entry(offsets: "[9223372036854775791, 9223372036854775807]") + "}", ["t", "data_offsets"]))
        c.append(BadHeader("begin after end", "{" + entry(offsets: "[16, 0]") + "}", ["t", "malformed data_offsets"]))
        c.append(BadHeader("negative begin", "{" + entry(offsets: "[-16, 0]") + "}", ["t", "malformed data_offsets"]))
        c.append(BadHeader("one offset", "{" + entry(offsets: "[16]") + "}", ["t", "malformed data_offsets"]))
        c.append(BadHeader("three offsets", "{" + entry(offsets: "[0, 8, 16]") + "}", ["t", "malformed data_offsets"]))
        c.append(BadHeader("fractional offset", "{" + entry(offsets: "[0, 16.5]") + "}", ["t", "malformed data_offsets"]))
        c.append(BadHeader("offset past Int64", "{" + entry(offsets: "[0, 18446744073709551616]") + "}", ["t", "malformed data_offsets"]))
        c.append(BadHeader("missing offsets", "{\"t\": {\"dtype\": \"F32\", \"shape\": [2, 2]}}", ["t", "malformed data_offsets"]))
        // overlaps
        c.append(BadHeader("overlapping tensors",
                  "{" + entry("a", shape: "[4]", offsets: "[0, 16]") + ", " + entry("b", shape: "[4]", offsets: "[8, 24]") + "}",
                  ["a", "b", "overlap"]))
        c.append(BadHeader("identical ranges",
                  "{" + entry("a", shape: "[4]", offsets: "[0, 16]") + ", " + entry("b", shape: "[4]", offsets: "[0, 16]") + "}",
                  ["a", "b", "overlap"]))
        c.append(BadHeader("one tensor inside another",
                  "{" + entry("a", shape: "[8]", offsets: "[0, 32]") + ", " + entry("b", shape: "[2]", offsets: "[8, 16]") + ", "
                      + entry("c", shape: "[4]", offsets: "[32, 48]") + "}",
                  ["a", "b", "overlap"]))
        // shape vs byte count
        c.append(BadHeader("shape smaller than the bytes", "{" + entry(shape: "[3]", offsets: "[0, 16]") + "}", ["t", "needs 12 bytes", "give 16"]))
        c.append(BadHeader("shape larger than the bytes", "{" + entry(shape: "[5]", offsets: "[0, 16]") + "}", ["t", "needs 20 bytes"]))
        c.append(BadHeader("dtype size ignored", "{" + entry(dtype: "\"F16\"", shape: "[2, 2]", offsets: "[0, 16]") + "}", ["t", "needs 8 bytes"]))
        c.append(BadHeader("shape larger than the file", "{" + entry(shape: "[1099511627776, 1099511627776]", offsets: "[0, 16]") + "}",
                  ["t", "larger than the file"]))
        c.append(BadHeader("shape overflowing Int", "{" + entry(shape: "[4611686018427387904, 4611686018427387904, 0]", offsets: "[0, 0]") + "}",
                  ["t", "larger than the file"]))
        return c
    }()

    @Test("malformed headers", arguments: badHeaders)
    func badHeader(_ c: BadHeader) throws {
        let dir = try STTempDir()
        let p = try dir.write("model.safetensors", STFixture.file(header: c.header, data: [UInt8](repeating: 0x3F, count: c.dataSize)))
        expectTQError(c.kind, mentioning: [p] + c.mentions, c.label) { _ = try SafeTensorsFile(path: p) }
        // The same error surfaces through TensorStore.
        expectTQError(c.kind, mentioning: [p] + c.mentions, c.label + " (store)") { _ = try TensorStore(directory: dir.path) }
    }

    @Test("a valid file: every float dtype decodes, offsets are absolute, odd alignment works")
    func validFile() throws {
        let dir = try STTempDir()
        let v: [Float] = [1, -2, 0.5, 3.25, -0.0, 1024, 0.125]
        let tensors = [
            STFixture.Tensor(name: "f32", dtype: "F32", shape: [7], data: STFixture.f32(v)),
            STFixture.Tensor(name: "f16", dtype: "F16", shape: [1, 7], data: STFixture.f16(v)),
            STFixture.Tensor(name: "bf16", dtype: "BF16", shape: [7, 1], data: STFixture.bf16(v)),
            STFixture.Tensor(name: "empty", dtype: "F32", shape: [0, 3], data: []),
            STFixture.Tensor(name: "ints", dtype: "I32", shape: [7], data: STFixture.i32(v)),
            STFixture.Tensor(name: "bytes", dtype: "U8", shape: [3], data: [1, 2, 3]),
        ]
        for align in [1, 8] { // 1: header of odd length, so 2-byte tensors sit at odd addresses
            let p = try dir.write("v\(align).safetensors", STFixture.file(tensors, metadata: ["format": "pt", "who": "test"], align: align))
            let f = try SafeTensorsFile(path: p)
            #expect(f.metadata == ["format": "pt", "who": "test"])
            #expect(Set(f.tensors.keys) == Set(tensors.map(\.name)))
            let raw = try Data(contentsOf: URL(fileURLWithPath: p))
            let headerLen = Int(raw.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
            var offset = 8 + headerLen
            for t in tensors {
                let info = try #require(f.tensors[t.name])
                #expect(info.shape == t.shape && info.dtype.rawValue == t.dtype)
                #expect(info.begin == offset && info.end == offset + t.data.count, "\(t.name) range")
                offset += t.data.count
            }
            for name in ["f32", "f16", "bf16"] {
                let info = f.tensors[name]!
                var out = [Float](repeating: .nan, count: 8)
                try f.readFloats(info, into: &out)
                #expect(Array(out[0..<7]) == v && out[7].isNaN, "\(name), align \(align)")
                #expect(out[4].sign == .minus, "-0 keeps its sign in \(name)")
            }
            var none: Float = .nan
            try f.readFloats(f.tensors["empty"]!, into: &none)
            #expect(none.isNaN)
            expectTQError(.unsupported, mentioning: [p, "ints", "I32"]) {
                var out = [Float](repeating: 0, count: 7)
                try f.readFloats(f.tensors["ints"]!, into: &out)
            }
        }
        // TensorStore.floats on the same data, including the empty tensor.
        try dir.write("model.safetensors", STFixture.file(tensors))
        let store = try TensorStore(directory: dir.path)
        let bf = try store.floats("bf16")
        #expect(bf == v)
        let empty = try store.floats("empty")
        #expect(empty.isEmpty)
        expectTQError(.format, mentioning: [dir.path, "missing tensor", "nothere"]) { _ = try store.floats("nothere") }
        expectTQError(.unsupported, mentioning: ["ints", "I32"]) { try store.requireFloat("ints", shape: [7]) }
        expectTQError(.format, mentioning: ["f32", "shape"]) { try store.requireFloat("f32", shape: [8]) }
    }

    /// Reading tensors out of the map leaves none of its pages resident, not even the neighbours a
    /// fault maps with the page read (fault-around, large folios): before this was so, SmolLM2's
    /// model map grew by 10 MiB over its 30 blocks.
    @Test("tensors read out of the map leave no page of it resident")
    func readingReleasesTheMap() throws {
        let dir = try STTempDir()
        let count = 150_001, tensors = 40   // odd sizes: tensors share pages; 12 MB in all
        var w = SafeTensorsWriter()
        for t in 0..<tensors {
            w.add("t\(t)", .bf16, [count], (0..<count).map { UInt16(0x3F80 + (t + $0) % 64) })
        }
        let path = dir.path + "/m.safetensors"
        try w.write(to: path)
        let f = try SafeTensorsFile(path: path)
        let base = UnsafeMutableRawPointer(mutating: f.file.base)
        #expect(residentBytes(ofMappingAt: base) == 0, "the header's pages")
        let out = try FloatBuffer(count: count)
        for t in 0..<tensors {
            try f.readFloats(try #require(f.tensors["t\(t)"]), into: out.p)
            let expected = { (j: Int) in Float(bitPattern: UInt32(0x3F80 + (t + j) % 64) << 16) }
            #expect(out.p[0] == expected(0) && out.p[count - 1] == expected(count - 1), "t\(t) decodes")
            #expect(residentBytes(ofMappingAt: base) == 0, "after t\(t)")
        }
    }
}

// MARK: - checkpoint directories

@Suite("checkpoint directories: bad input and dtype equivalence")
struct CheckpointDirectoryTests {
    @Test("F32, F16, BF16 and a two-shard checkpoint give identical logits")
    func dtypesAgree() throws {
        let model = TinyLlama()
        var results: [String: [Float]] = [:]
        var dirs: [STTempDir] = []
        for (label, dtype, sharded) in [("F32", "F32", false), ("F16", "F16", false), ("BF16", "BF16", false),
                                        ("F32 sharded", "F32", true), ("BF16 sharded", "BF16", true)] {
            let dir = try STTempDir()
            dirs.append(dir)
            try model.write(to: dir, dtype: dtype, sharded: sharded)
            let m = try LlamaModel(directory: dir.path)
            #expect(m.config.hidden == 8 && m.config.kvHeads == 1 && m.config.headDim == 4 && m.config.vocab == 16)
            if sharded { #expect(m.store.files.count == 2) }
            #expect(m.store.names.count == model.tensors.count)
            results[label] = try TinyLlama.logits(m)
        }
        let ref = try #require(results["F32"])
        #expect(ref.allSatisfy { $0.isFinite })
        #expect(Set(ref).count > ref.count / 2, "logits should not be degenerate")
        for (label, l) in results { #expect(l == ref, "\(label) differs from F32") }
    }

    @Test("tied embeddings: no lm_head, same logits as an explicit copy of embed_tokens")
    func tiedEmbeddings() throws {
        var tied = TinyLlama(tied: true)
        let tiedDir = try STTempDir()
        try tied.write(to: tiedDir)
        let a = try TinyLlama.logits(try LlamaModel(directory: tiedDir.path))

        let embed = tied.tensors[0]
        tied.tensors.append(("lm_head.weight", embed.shape, embed.values))
        tied.config["tie_word_embeddings"] = "false"
        let untiedDir = try STTempDir()
        try tied.write(to: untiedDir)
        let b = try TinyLlama.logits(try LlamaModel(directory: untiedDir.path))
        #expect(a == b)
    }

    @Test("missing config.json")
    func missingConfig() throws {
        let dir = try STTempDir()
        try TinyLlama().write(to: dir)
        try FileManager.default.removeItem(atPath: dir.path + "/config.json")
        expectTQError(.io, mentioning: [dir.path + "/config.json"]) { _ = try LlamaModel(directory: dir.path) }
        expectTQError(.io, mentioning: [dir.path + "/config.json"]) { _ = try LlamaConfig(directory: dir.path) }
    }

    @Test("config.json that is a directory")
    func configIsDirectory() throws {
        let dir = try STTempDir()
        try TinyLlama().write(to: dir)
        try FileManager.default.removeItem(atPath: dir.path + "/config.json")
        try FileManager.default.createDirectory(atPath: dir.path + "/config.json", withIntermediateDirectories: false)
        expectTQError(.io, mentioning: [dir.path + "/config.json"]) { _ = try LlamaModel(directory: dir.path) }
    }

    @Test("a FIFO named config.json is refused without waiting for a writer")
    func configFIFO() throws {
        let dir = try STTempDir()
        try TinyLlama().write(to: dir)
        let p = dir.path + "/config.json"
        try FileManager.default.removeItem(atPath: p)
        #expect(mkfifo(p, 0o600) == 0)
        let d = dir.path
        checkTQError(outcome(unblocking: p) { _ = try LlamaModel(directory: d) }, .io, mentioning: [p])
    }

    struct ConfigCase: CustomTestStringConvertible, Sendable {
        let label: String
        let edit: @Sendable (inout TinyLlama) -> Void
        let kind: TQError.Kind
        let mentions: [String]
        var testDescription: String { label }
    }

    static let configCases: [ConfigCase] = [
        ConfigCase(label: "unsupported architecture", edit: { $0.config["architectures"] = "[\"GPT2LMHeadModel\"]" },
                   kind: .unsupported, mentions: ["unsupported architecture", "GPT2LMHeadModel"]),
        ConfigCase(label: "unsupported model_type", edit: { $0.config["architectures"] = nil; $0.config["model_type"] = "\"gpt2\"" },
                   kind: .unsupported, mentions: ["model_type", "gpt2"]),
        ConfigCase(label: "unsupported activation", edit: { $0.config["hidden_act"] = "\"gelu\"" },
                   kind: .unsupported, mentions: ["hidden_act", "gelu"]),
        ConfigCase(label: "missing hidden_size", edit: { $0.config["hidden_size"] = nil },
                   kind: .format, mentions: ["missing hidden_size"]),
        ConfigCase(label: "hidden_size a string", edit: { $0.config["hidden_size"] = "\"8\"" },
                   kind: .format, mentions: ["hidden_size"]),
        ConfigCase(label: "negative vocab_size", edit: { $0.config["vocab_size"] = "-16" },
                   kind: .format, mentions: ["vocab_size"]),
        ConfigCase(label: "fractional layer count", edit: { $0.config["num_hidden_layers"] = "2.5" },
                   kind: .format, mentions: ["num_hidden_layers"]),
        ConfigCase(label: "heads not a multiple of kv heads", edit: { $0.config["num_key_value_heads"] = "3" },
                   kind: .format, mentions: ["num_key_value_heads"]),
        ConfigCase(label: "odd head_dim", edit: { $0.config["head_dim"] = "3" },
                   kind: .format, mentions: ["head_dim"]),
        ConfigCase(label: "rope_scaling not an object", edit: { $0.config["rope_scaling"] = "7" },
                   kind: .format, mentions: ["rope_scaling"]),
        ConfigCase(label: "unsupported rope_scaling", edit: { $0.config["rope_scaling"] = "{\"rope_type\": \"yarn\", \"factor\": 2}" },
                   kind: .unsupported, mentions: ["rope_scaling", "yarn"]),
        // Shapes the tensors cannot have; must be refused without overflowing Int (heads * head_dim).
        ConfigCase(label: "enormous head count and head_dim",
                   edit: { $0.config["num_attention_heads"] = "4000000000000000"; $0.config["num_key_value_heads"] = "4000000000000000"
                       $0.config["head_dim"] = "4000000000000000" },
                   kind: .format, mentions: ["num_attention_heads", "too large"]),
        ConfigCase(label: "enormous intermediate_size", edit: { $0.config["intermediate_size"] = "8000000000000000" },
                   kind: .format, mentions: ["intermediate_size", "too large"]),
        // Without head_dim, hidden_size / num_attention_heads = 0 is not a usable head size.
        ConfigCase(label: "hidden_size below the head count", edit: { $0.config["hidden_size"] = "1" },
                   kind: .format, mentions: ["head_dim 0"]),
    ]

    @Test("config.json problems", arguments: configCases)
    func badConfig(_ c: ConfigCase) throws {
        var model = TinyLlama()
        c.edit(&model)
        let dir = try STTempDir()
        try model.write(to: dir)
        expectTQError(c.kind, mentioning: [dir.path + "/config.json"] + c.mentions, c.label) { _ = try LlamaModel(directory: dir.path) }
    }

    @Test("malformed config.json", arguments: ["{\"hidden_size\": 8,", "", "not json", "[1, 2, 3]", "null"])
    func malformedConfig(_ text: String) throws {
        let dir = try STTempDir()
        try TinyLlama().write(to: dir)
        try dir.write("config.json", text: text)
        expectTQError(.format, mentioning: [dir.path + "/config.json"], text) { _ = try LlamaModel(directory: dir.path) }
    }

    @Test("a tensor whose shape disagrees with config.json")
    func shapeMismatch() throws {
        var model = TinyLlama()
        let name = "model.layers.1.self_attn.k_proj.weight"
        let i = try #require(model.tensors.firstIndex { $0.name == name })
        model.tensors[i] = (name, [8, 8], model.tensors[i].values + model.tensors[i].values) // [4, 8] expected
        let dir = try STTempDir()
        try model.write(to: dir)
        expectTQError(.format, mentioning: [dir.path + "/model.safetensors", name, "[8, 8]", "[4, 8]"]) {
            _ = try LlamaModel(directory: dir.path)
        }
        // And a transposed one (same element count).
        var t = TinyLlama()
        let j = try #require(t.tensors.firstIndex { $0.name == "model.layers.0.mlp.down_proj.weight" })
        t.tensors[j].shape = [12, 8]
        let dir2 = try STTempDir()
        try t.write(to: dir2)
        expectTQError(.format, mentioning: [dir2.path + "/model.safetensors", "down_proj", "[12, 8]"]) {
            _ = try LlamaModel(directory: dir2.path)
        }
    }

    @Test("a missing tensor", arguments: ["model.layers.0.mlp.up_proj.weight", "model.norm.weight",
                                          "model.embed_tokens.weight", "model.layers.1.input_layernorm.weight"])
    func missingTensor(_ name: String) throws {
        var model = TinyLlama()
        model.tensors.removeAll { $0.name == name }
        let dir = try STTempDir()
        try model.write(to: dir)
        expectTQError(.format, mentioning: [dir.path, "missing tensor", name]) { _ = try LlamaModel(directory: dir.path) }
    }

    @Test("lm_head missing when tie_word_embeddings is false")
    func missingLMHead() throws {
        var model = TinyLlama()
        model.tensors.removeAll { $0.name == "lm_head.weight" }
        let dir = try STTempDir()
        try model.write(to: dir)
        expectTQError(.format, mentioning: [dir.path, "lm_head.weight"]) { _ = try LlamaModel(directory: dir.path) }
    }

    @Test("an integer tensor where a float weight is expected", arguments: ["model.layers.0.mlp.down_proj.weight", "lm_head.weight"])
    func integerWeight(_ name: String) throws {
        let dir = try STTempDir()
        try TinyLlama().write(to: dir, dtypes: [name: "I32"])
        expectTQError(.unsupported, mentioning: [dir.path + "/model.safetensors", name, "I32"]) { _ = try LlamaModel(directory: dir.path) }
    }

    @Test("neither model.safetensors nor an index")
    func noWeights() throws {
        let dir = try STTempDir()
        try TinyLlama().write(to: dir)
        try FileManager.default.removeItem(atPath: dir.path + "/model.safetensors")
        expectTQError(.io, mentioning: [dir.path, "model.safetensors"]) { _ = try LlamaModel(directory: dir.path) }
    }

    @Test("shard index naming a missing shard")
    func missingShard() throws {
        let dir = try STTempDir()
        try TinyLlama().write(to: dir, sharded: true)
        let shard = dir.path + "/model-00002-of-00002.safetensors"
        try FileManager.default.removeItem(atPath: shard)
        expectTQError(.io, mentioning: [shard]) { _ = try LlamaModel(directory: dir.path) }
    }

    @Test("shard index problems", arguments: [
        ("index is not JSON", "{\"weight_map\": ", ["malformed JSON"]),
        ("no weight_map", "{\"metadata\": {}}", ["weight_map"]),
        ("weight_map not an object", "{\"weight_map\": [1]}", ["weight_map"]),
        ("shard name not a string", "{\"weight_map\": {\"lm_head.weight\": 3}}", ["lm_head.weight"]),
        ("shard outside the directory", "{\"weight_map\": {\"lm_head.weight\": \"../model-00001-of-00002.safetensors\"}}", ["lm_head.weight"]),
    ])
    func badIndex(_ label: String, _ text: String, _ mentions: [String]) throws {
        let dir = try STTempDir()
        try TinyLlama().write(to: dir, sharded: true)
        let index = try dir.write("model.safetensors.index.json", text: text)
        expectTQError(.format, mentioning: [index] + mentions, label) { _ = try LlamaModel(directory: dir.path) }
    }

    @Test("shard index naming a tensor its shard does not hold")
    func indexNamesAbsentTensor() throws {
        let dir = try STTempDir()
        try TinyLlama().write(to: dir, sharded: true)
        let index = dir.path + "/model.safetensors.index.json"
        var text = try String(contentsOfFile: index, encoding: .utf8)
        text = text.replacingOccurrences(of: "\"weight_map\": {", with: "\"weight_map\": {\"ghost.weight\": \"model-00001-of-00002.safetensors\", ")
        try dir.write("model.safetensors.index.json", text: text)
        expectTQError(.format, mentioning: [dir.path + "/model-00001-of-00002.safetensors", "ghost.weight"]) {
            _ = try LlamaModel(directory: dir.path)
        }
    }

    @Test("a corrupt shard is reported with the shard's path")
    func corruptShard() throws {
        let dir = try STTempDir()
        try TinyLlama().write(to: dir, sharded: true)
        let shard = try dir.write("model-00001-of-00002.safetensors", [1, 2, 3])
        expectTQError(.format, mentioning: [shard, "too short"]) { _ = try LlamaModel(directory: dir.path) }
    }
}
