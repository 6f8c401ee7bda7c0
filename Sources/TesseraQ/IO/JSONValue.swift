import Foundation

/// A parsed JSON document that keeps booleans, integers and reals apart, so validation can
/// say exactly which key has the wrong type.
public enum JSONValue: Decodable, Equatable, Sendable {
    case null
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let i = try? c.decode(Int.self) { self = .int(i) }
        else if let d = try? c.decode(Double.self) { self = .double(d) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }

    /// Deeper documents are refused before decoding: the Decodable fallbacks in `init(from:)`
    /// cost time quadratic in the depth (a 1 KB header nested 500 deep took seconds).
    /// safetensors headers and config files need a handful of levels.
    public static let maxDepth = 64

    /// Parses `data`; `what` names the source in the error message.
    public static func parse(_ data: Data, what: String) throws -> JSONValue {
        let tooDeep = data.withUnsafeBytes { (bytes: UnsafeRawBufferPointer) -> Bool in
            var depth = 0, inString = false, escaped = false
            for b in bytes {
                if inString {
                    if escaped { escaped = false } else if b == 0x5C { escaped = true } else if b == 0x22 { inString = false }
                } else if b == 0x22 {
                    inString = true
                } else if b == 0x5B || b == 0x7B {
                    depth += 1
                    if depth > maxDepth { return true }
                } else if b == 0x5D || b == 0x7D {
                    depth -= 1
                }
            }
            return false
        }
        if tooDeep { throw TQError.format("\(what): malformed JSON (nested deeper than \(maxDepth) levels)") }
        do { return try JSONDecoder().decode(JSONValue.self, from: data) } catch {
            throw TQError.format("\(what): malformed JSON")
        }
    }

    public static func parseFile(_ path: String) throws -> JSONValue {
        guard let data = readWholeFile(path) else {
            throw TQError.io("\(path): cannot read (missing or unreadable)")
        }
        return try parse(data, what: path)
    }

    public subscript(key: String) -> JSONValue? {
        if case .object(let o) = self { return o[key] }
        return nil
    }

    public var object: [String: JSONValue]? { if case .object(let o) = self { return o }; return nil }
    public var array: [JSONValue]? { if case .array(let a) = self { return a }; return nil }
    public var string: String? { if case .string(let s) = self { return s }; return nil }
    public var bool: Bool? { if case .bool(let b) = self { return b }; return nil }
    public var int: Int? {
        switch self {
        case .int(let i): return i
        case .double(let d) where d.rounded() == d && abs(d) < 9e15: return Int(d)
        default: return nil
        }
    }
    public var double: Double? {
        switch self {
        case .int(let i): return Double(i)
        case .double(let d): return d
        default: return nil
        }
    }
    public var isNull: Bool { self == .null }
}
