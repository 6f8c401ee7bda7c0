/// Typed access to config.json fields. Every accessor distinguishes "absent" (null counts as
/// absent, as Hugging Face treats it) from "present with the wrong type": the latter is an error
/// naming the field, never a silent fallback to the default.
struct ConfigFields {
    let json: JSONValue
    let path: String
    /// Prefix of field names in messages ("rope_parameters." for a nested object).
    var scope = ""

    func value(_ key: String) -> JSONValue? {
        guard let v = json[key], !v.isNull else { return nil }
        return v
    }

    func has(_ key: String) -> Bool { value(key) != nil }

    func name(_ key: String) -> String { scope + key }

    func positiveInt(_ key: String, default def: Int? = nil) throws -> Int {
        guard let v = value(key) else {
            if let def { return def }
            throw TQError.format("\(path): missing \(name(key))")
        }
        guard let i = v.int, i > 0 else { throw TQError.format("\(path): \(name(key)) must be a positive integer") }
        // Bounded so products of dimensions (heads * head_dim, ...) cannot overflow Int.
        guard i <= Int(Int32.max) else { throw TQError.format("\(path): \(name(key)) \(i) is too large") }
        return i
    }

    /// A finite number; without a default, absence is an error.
    func number(_ key: String, default def: Double? = nil) throws -> Double {
        guard let v = value(key) else {
            if let def { return def }
            throw TQError.format("\(path): missing \(name(key))")
        }
        guard let d = v.double, d.isFinite else { throw TQError.format("\(path): \(name(key)) must be a number") }
        return d
    }

    /// A positive finite number, or the default when absent.
    func positiveNumber(_ key: String, default def: Double) throws -> Double {
        guard has(key) else { return def }
        let v = try number(key)
        guard v > 0 else { throw TQError.format("\(path): \(name(key)) must be positive") }
        return v
    }

    /// A positive number; nil when the field is null, `def` when it is missing (a null is how
    /// transformers switches off a setting whose default is on, e.g. Gemma 2's soft-capping).
    func optionalPositiveNumber(_ key: String, default def: Double?) throws -> Double? {
        guard let v = json[key] else { return def }
        if v.isNull { return nil }
        return try positiveNumber(key, default: 0)
    }

    func flag(_ key: String, default def: Bool) throws -> Bool {
        guard let v = value(key) else { return def }
        guard let b = v.bool else { throw TQError.format("\(path): \(name(key)) must be true or false") }
        return b
    }

    func string(_ key: String, default def: String) throws -> String {
        guard let v = value(key) else { return def }
        guard let s = v.string else { throw TQError.format("\(path): \(name(key)) must be a string") }
        return s
    }

    /// A nested object's fields, or nil when absent.
    func object(_ key: String) throws -> ConfigFields? {
        guard let v = value(key) else { return nil }
        guard v.object != nil else { throw TQError.format("\(path): \(name(key)) is not an object") }
        return ConfigFields(json: v, path: path, scope: name(key) + ".")
    }

    /// Refuses a field whose presence changes the computation in a way we do not implement,
    /// unless it holds the value that means "off" (`neutral`, e.g. 1.0 or false).
    func refuse(_ key: String, unless neutral: JSONValue? = nil, because why: String) throws {
        guard let v = value(key) else { return }
        if let neutral, v == neutral || (v.double != nil && v.double == neutral.double) { return }
        throw TQError.unsupported("\(path): \(name(key)) \(v.description) is not supported (\(why))")
    }
}

extension JSONValue: CustomStringConvertible {
    /// Compact JSON-like text, for error messages.
    public var description: String {
        switch self {
        case .null: "null"
        case .bool(let b): "\(b)"
        case .int(let i): "\(i)"
        case .double(let d): "\(d)"
        case .string(let s): "\"\(s)\""
        case .array(let a): "[" + a.map(\.description).joined(separator: ", ") + "]"
        case .object(let o): "{" + o.keys.sorted().map { "\"\($0)\": \(o[$0]!.description)" }.joined(separator: ", ") + "}"
        }
    }
}
