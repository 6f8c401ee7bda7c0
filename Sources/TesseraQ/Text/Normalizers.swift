import Foundation

/// tokenizer.json `normalizer`s.
indirect enum TextNormalizer {
    case sequence([TextNormalizer])
    case prepend([UInt8])
    case append([UInt8])
    case replace(TextPattern, [UInt8])
    case nfc, nfd, nfkc, nfkd
    case lowercase
    case strip(left: Bool, right: Bool)
    case stripAccents

    static func parse(_ j: TokJSON, path: String = "normalizer") throws -> TextNormalizer {
        guard let type = j["type"]?.string else { throw TQError(.format, "tokenizer.json: \(path) has no \"type\"") }
        func str(_ key: String) throws -> [UInt8] {
            guard let b = j[key]?.bytes else { throw TQError(.format, "tokenizer.json: \(path) (\(type)).\(key) must be a string") }
            return b
        }
        switch type {
        case "Sequence":
            guard let items = j["normalizers"]?.array else {
                throw TQError(.format, "tokenizer.json: \(path) (Sequence).normalizers must be an array")
            }
            return .sequence(try items.enumerated().map { try parse($0.element, path: "\(path).normalizers[\($0.offset)]") })
        case "Prepend": return .prepend(try str("prepend"))
        case "Append": return .append(try str("append"))
        case "Replace": return .replace(try TextPattern(json: j["pattern"], what: "\(path) (Replace)"), try str("content"))
        case "NFC": return .nfc
        case "NFD": return .nfd
        case "NFKC": return .nfkc
        case "NFKD": return .nfkd
        case "Lowercase": return .lowercase
        case "Strip": return .strip(left: j["strip_left"]?.bool ?? true, right: j["strip_right"]?.bool ?? true)
        case "StripAccents": return .stripAccents
        default:
            throw TQError(.unsupported, "tokenizer.json: the \(type) normalizer (\(path)) is not supported "
                          + "(supported: Sequence, Prepend, Append, Replace, NFC, NFD, NFKC, NFKD, Lowercase, Strip, StripAccents)")
        }
    }

    func apply(_ s: [UInt8]) -> [UInt8] {
        switch self {
        case .sequence(let ns):
            var x = s
            for n in ns { x = n.apply(x) }
            return x
        case .prepend(let p): return s.isEmpty ? s : p + s
        case .append(let p): return s.isEmpty ? s : s + p
        case .replace(let pattern, let content): return pattern.replace(s, with: content)
        case .nfc: return TextNormalizer.normalize(s) { $0.precomposedStringWithCanonicalMapping }
        case .nfd: return TextNormalizer.normalize(s) { $0.decomposedStringWithCanonicalMapping }
        case .nfkc: return TextNormalizer.normalize(s) { $0.precomposedStringWithCompatibilityMapping }
        case .nfkd: return TextNormalizer.normalize(s) { $0.decomposedStringWithCompatibilityMapping }
        case .lowercase: return Array(String(decoding: s, as: UTF8.self).lowercased().utf8)
        case .strip(let left, let right):
            let (sc, off) = s.withUnsafeBufferPointer { TextUnicode.scalars($0) }
            var a = 0, b = sc.count
            if left { while a < b && TextUnicode.isWhitespace(sc[a]) { a += 1 } }
            if right { while b > a && TextUnicode.isWhitespace(sc[b - 1]) { b -= 1 } }
            return Array(s[off[a]..<off[b]])
        case .stripAccents:
            var out: [UInt8] = []
            for u in String(decoding: s, as: UTF8.self).unicodeScalars
            where !TextUnicode.inRanges(u.value, TextUnicode.strippedMarks) {
                appendUTF8(&out, u.value)
            }
            return out
        }
    }

    /// Unicode normalization of `s`, leaving alone the characters `tokenizers`' (older)
    /// tables do not map: the text is normalized piecewise around them.
    static func normalize(_ s: [UInt8], _ f: (String) -> String) -> [UInt8] {
        let str = String(decoding: s, as: UTF8.self)
        if s.allSatisfy({ $0 < 0x80 }) { return Array(f(str).utf8) }
        var out: [UInt8] = []
        var segment = ""
        for u in str.unicodeScalars {
            if TextUnicode.inRanges(u.value, TextUnicode.normalizationStable) {
                out += Array(f(segment).utf8)
                segment = ""
                appendUTF8(&out, u.value)
            } else {
                segment.unicodeScalars.append(u)
            }
        }
        out += Array(f(segment).utf8)
        return out
    }
}
