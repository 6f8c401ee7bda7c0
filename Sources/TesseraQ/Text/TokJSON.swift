/// A small JSON reader for tokenizer.json files.
///
/// Foundation's decoders turn object keys into Swift `String`s, and Swift compares strings by
/// canonical equivalence: a vocabulary holding both "é" (U+00E9) and "e\u{301}" would lose one of
/// them (or trap on the duplicate key). Tokenizers compare bytes, so this reader keeps every
/// string as its exact UTF-8 bytes and every object as an ordered list of members.
indirect enum TokJSON {
    case null
    case bool(Bool)
    case number(Double)
    case string([UInt8])
    case array([TokJSON])
    case object([(key: [UInt8], value: TokJSON)])

    static let maxDepth = 128

    static func parse(_ bytes: UnsafeBufferPointer<UInt8>, what: String) throws -> TokJSON {
        guard validUTF8(bytes) else { throw TQError(.format, "\(what): not valid UTF-8") }
        var p = TokJSONParser(bytes: bytes, what: what)
        p.skipSpace()
        let v = try p.value(depth: 0)
        p.skipSpace()
        guard p.pos == bytes.count else { throw p.error("unexpected data after the JSON value") }
        return v
    }

    subscript(key: String) -> TokJSON? {
        guard case .object(let members) = self else { return nil }
        let k = Array(key.utf8)
        // Later duplicates win, as in serde_json's maps.
        return members.last(where: { $0.key == k })?.value
    }

    var isNull: Bool { if case .null = self { return true }; return false }
    var bytes: [UInt8]? { if case .string(let s) = self { return s }; return nil }
    var string: String? { bytes.map { String(decoding: $0, as: UTF8.self) } }
    var bool: Bool? { if case .bool(let b) = self { return b }; return nil }
    var array: [TokJSON]? { if case .array(let a) = self { return a }; return nil }
    var members: [(key: [UInt8], value: TokJSON)]? { if case .object(let o) = self { return o }; return nil }
    var int: Int? {
        if case .number(let d) = self, d.rounded() == d, abs(d) < 9e15 { return Int(d) }
        return nil
    }
}

struct TokJSONParser {
    let bytes: UnsafeBufferPointer<UInt8>
    let what: String
    var pos = 0

    init(bytes: UnsafeBufferPointer<UInt8>, what: String) {
        self.bytes = bytes
        self.what = what
    }

    func error(_ m: String) -> TQError { TQError(.format, "\(what): malformed JSON at byte \(pos): \(m)") }

    mutating func skipSpace() {
        while pos < bytes.count {
            let b = bytes[pos]
            if b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09 { pos += 1 } else { break }
        }
    }

    mutating func literal(_ s: StaticString, _ v: TokJSON) throws -> TokJSON {
        let n = s.utf8CodeUnitCount
        guard pos + n <= bytes.count else { throw error("truncated literal") }
        let p = s.utf8Start
        for i in 0..<n where bytes[pos + i] != p[i] { throw error("invalid literal") }
        pos += n
        return v
    }

    mutating func value(depth: Int) throws -> TokJSON {
        guard depth < TokJSON.maxDepth else { throw error("nested deeper than \(TokJSON.maxDepth) levels") }
        guard pos < bytes.count else { throw error("unexpected end of data") }
        switch bytes[pos] {
        case UInt8(ascii: "{"):
            pos += 1
            var members: [(key: [UInt8], value: TokJSON)] = []
            skipSpace()
            if pos < bytes.count, bytes[pos] == UInt8(ascii: "}") { pos += 1; return .object(members) }
            while true {
                skipSpace()
                guard pos < bytes.count, bytes[pos] == UInt8(ascii: "\"") else { throw error("expected a string key") }
                let k = try string()
                skipSpace()
                guard pos < bytes.count, bytes[pos] == UInt8(ascii: ":") else { throw error("expected ':'") }
                pos += 1
                skipSpace()
                members.append((k, try value(depth: depth + 1)))
                skipSpace()
                guard pos < bytes.count else { throw error("unterminated object") }
                if bytes[pos] == UInt8(ascii: ",") { pos += 1; continue }
                if bytes[pos] == UInt8(ascii: "}") { pos += 1; return .object(members) }
                throw error("expected ',' or '}'")
            }
        case UInt8(ascii: "["):
            pos += 1
            var items: [TokJSON] = []
            skipSpace()
            if pos < bytes.count, bytes[pos] == UInt8(ascii: "]") { pos += 1; return .array(items) }
            while true {
                skipSpace()
                items.append(try value(depth: depth + 1))
                skipSpace()
                guard pos < bytes.count else { throw error("unterminated array") }
                if bytes[pos] == UInt8(ascii: ",") { pos += 1; continue }
                if bytes[pos] == UInt8(ascii: "]") { pos += 1; return .array(items) }
                throw error("expected ',' or ']'")
            }
        case UInt8(ascii: "\""):
            return .string(try string())
        case UInt8(ascii: "t"): return try literal("true", .bool(true))
        case UInt8(ascii: "f"): return try literal("false", .bool(false))
        case UInt8(ascii: "n"): return try literal("null", .null)
        default:
            return try number()
        }
    }

    mutating func number() throws -> TokJSON {
        let start = pos
        func isNumberByte(_ b: UInt8) -> Bool {
            (b >= 0x30 && b <= 0x39) || b == UInt8(ascii: "-") || b == UInt8(ascii: "+") || b == UInt8(ascii: ".")
                || b == UInt8(ascii: "e") || b == UInt8(ascii: "E")
        }
        while pos < bytes.count, isNumberByte(bytes[pos]) { pos += 1 }
        guard pos > start, let d = Double(String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<pos]), as: UTF8.self))
        else { pos = start; throw error("invalid value") }
        return .number(d)
    }

    mutating func hex4() throws -> UInt32 {
        guard pos + 4 <= bytes.count else { throw error("truncated \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let b = bytes[pos]
            let d: UInt8
            switch b {
            case 0x30...0x39: d = b - 0x30
            case 0x41...0x46: d = b - 0x41 + 10
            case 0x61...0x66: d = b - 0x61 + 10
            default: throw error("invalid \\u escape")
            }
            v = v << 4 | UInt32(d)
            pos += 1
        }
        return v
    }

    /// Parses a string starting at the opening quote; returns its UTF-8 bytes.
    mutating func string() throws -> [UInt8] {
        pos += 1
        var out: [UInt8] = []
        var runStart = pos
        while true {
            guard pos < bytes.count else { throw error("unterminated string") }
            let b = bytes[pos]
            if b == UInt8(ascii: "\"") {
                out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<pos]))
                pos += 1
                break
            }
            if b < 0x20 { throw error("control character in a string") }
            if b != UInt8(ascii: "\\") { pos += 1; continue }
            out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<pos]))
            pos += 1
            guard pos < bytes.count else { throw error("unterminated escape") }
            let e = bytes[pos]
            pos += 1
            switch e {
            case UInt8(ascii: "\""): out.append(0x22)
            case UInt8(ascii: "\\"): out.append(0x5C)
            case UInt8(ascii: "/"): out.append(0x2F)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var c = try hex4()
                if c >= 0xD800 && c < 0xDC00 {
                    guard pos + 2 <= bytes.count, bytes[pos] == UInt8(ascii: "\\"), bytes[pos + 1] == UInt8(ascii: "u")
                    else { throw error("lone surrogate in a \\u escape") }
                    pos += 2
                    let lo = try hex4()
                    guard lo >= 0xDC00 && lo < 0xE000 else { throw error("invalid surrogate pair") }
                    c = 0x10000 + ((c - 0xD800) << 10) + (lo - 0xDC00)
                } else if c >= 0xDC00 && c < 0xE000 {
                    throw error("lone surrogate in a \\u escape")
                }
                appendUTF8(&out, c)
            default: throw error("invalid escape")
            }
            runStart = pos
        }
        return out
    }
}

@inline(__always)
func appendUTF8(_ out: inout [UInt8], _ c: UInt32) {
    if c < 0x80 {
        out.append(UInt8(c))
    } else if c < 0x800 {
        out.append(UInt8(0xC0 | (c >> 6)))
        out.append(UInt8(0x80 | (c & 0x3F)))
    } else if c < 0x10000 {
        out.append(UInt8(0xE0 | (c >> 12)))
        out.append(UInt8(0x80 | ((c >> 6) & 0x3F)))
        out.append(UInt8(0x80 | (c & 0x3F)))
    } else {
        out.append(UInt8(0xF0 | (c >> 18)))
        out.append(UInt8(0x80 | ((c >> 12) & 0x3F)))
        out.append(UInt8(0x80 | ((c >> 6) & 0x3F)))
        out.append(UInt8(0x80 | (c & 0x3F)))
    }
}

func validUTF8<C: Collection>(_ bytes: C) -> Bool where C.Element == UInt8 {
    var it = bytes.makeIterator()
    var decoder = UTF8()
    while true {
        switch decoder.decode(&it) {
        case .scalarValue: continue
        case .emptyInput: return true
        case .error: return false
        }
    }
}
