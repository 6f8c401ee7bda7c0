/// tokenizer.json `pre_tokenizer`s.
indirect enum TextPreTokenizer {
    case sequence([TextPreTokenizer])
    case byteLevel(addPrefixSpace: Bool, useRegex: Bool)
    case digits(individual: Bool)
    case metaspace(replacement: UInt32, prepend: PrependScheme, split: Bool)
    case split(TextPattern, SplitBehavior, invert: Bool)
    case whitespace
    case whitespaceSplit
    case punctuation(SplitBehavior)
    case bert
    case charDelimiterSplit(UInt32)

    enum PrependScheme: String { case always, never, first }

    static func parse(_ j: TokJSON, path: String = "pre_tokenizer") throws -> TextPreTokenizer {
        guard let type = j["type"]?.string else { throw TQError(.format, "tokenizer.json: \(path) has no \"type\"") }
        func flag(_ key: String, _ def: Bool) throws -> Bool {
            guard let v = j[key], !v.isNull else { return def }
            guard let b = v.bool else { throw TQError(.format, "tokenizer.json: \(path) (\(type)).\(key) must be a boolean") }
            return b
        }
        func char(_ key: String) throws -> UInt32 {
            guard let s = j[key]?.string, s.unicodeScalars.count == 1 else {
                throw TQError(.format, "tokenizer.json: \(path) (\(type)).\(key) must be a one-character string")
            }
            return s.unicodeScalars.first!.value
        }
        switch type {
        case "Sequence":
            guard let items = j["pretokenizers"]?.array else {
                throw TQError(.format, "tokenizer.json: \(path) (Sequence).pretokenizers must be an array")
            }
            return .sequence(try items.enumerated().map { try parse($0.element, path: "\(path).pretokenizers[\($0.offset)]") })
        case "ByteLevel":
            return .byteLevel(addPrefixSpace: try flag("add_prefix_space", true), useRegex: try flag("use_regex", true))
        case "Digits":
            return .digits(individual: try flag("individual_digits", false))
        case "Metaspace":
            var scheme = PrependScheme.always
            if let s = j["prepend_scheme"], !s.isNull {
                guard let v = s.string, let p = PrependScheme(rawValue: v) else {
                    throw TQError(.unsupported, "tokenizer.json: \(path) (Metaspace) prepend_scheme \(s.string ?? "?") is not supported")
                }
                scheme = p
            }
            if let a = j["add_prefix_space"]?.bool, !a {
                guard j["prepend_scheme"] == nil || scheme == .never else {
                    throw TQError(.format, "tokenizer.json: \(path) (Metaspace): add_prefix_space does not match declared prepend_scheme")
                }
                scheme = .never
            }
            return .metaspace(replacement: try char("replacement"), prepend: scheme, split: try flag("split", true))
        case "Split":
            return .split(try TextPattern(json: j["pattern"], what: "\(path) (Split)"),
                          try SplitBehavior.parse(j["behavior"], "\(path) (Split)"), invert: try flag("invert", false))
        case "Whitespace": return .whitespace
        case "WhitespaceSplit": return .whitespaceSplit
        case "Punctuation":
            return .punctuation(j["behavior"] == nil ? .isolated : try SplitBehavior.parse(j["behavior"], "\(path) (Punctuation)"))
        case "BertPreTokenizer": return .bert
        case "CharDelimiterSplit": return .charDelimiterSplit(try char("delimiter"))
        default:
            throw TQError(.unsupported, "tokenizer.json: the \(type) pre-tokenizer (\(path)) is not supported "
                          + "(supported: Sequence, ByteLevel, Digits, Metaspace, Split, Whitespace, WhitespaceSplit, "
                          + "Punctuation, BertPreTokenizer, CharDelimiterSplit)")
        }
    }

    /// True when this pre-tokenizer maps bytes to the GPT-2 byte alphabet.
    var usesByteLevel: Bool {
        switch self {
        case .byteLevel: return true
        case .sequence(let ps): return ps.contains { $0.usesByteLevel }
        default: return false
        }
    }

    func apply(_ pieces: [TextPiece]) -> [TextPiece] {
        switch self {
        case .sequence(let ps):
            var x = pieces
            for p in ps { x = p.apply(x) }
            return x
        case .byteLevel(let addPrefixSpace, let useRegex):
            var out: [TextPiece] = []
            out.reserveCapacity(pieces.count)
            for var p in pieces {
                if addPrefixSpace && p.bytes.first != 0x20 { p.bytes.insert(0x20, at: 0) }
                if useRegex {
                    for r in GPT2Pattern.split(p.bytes) {
                        out.append(TextPiece(bytes: ByteLevelAlphabet.encode(p.bytes[r]), atStart: p.atStart && r.lowerBound == 0))
                    }
                } else if !p.bytes.isEmpty {
                    out.append(TextPiece(bytes: ByteLevelAlphabet.encode(p.bytes[...]), atStart: p.atStart))
                }
            }
            return out
        case .digits(let individual):
            return splitEach(pieces, individual ? .isolated : .contiguous) { predicateMatches($0, TextUnicode.isNumeric) }
        case .metaspace(let replacement, let prepend, let split):
            let rep = TextUnicode.utf8(replacement)
            var out: [TextPiece] = []
            for p in pieces {
                var b = replaceBytes(p.bytes, [0x20], rep)
                let doPrepend: Bool
                switch prepend {
                case .always: doPrepend = true
                case .never: doPrepend = false
                case .first: doPrepend = p.atStart
                }
                if doPrepend && !b.starts(with: rep) { b = rep + b }
                if split {
                    let ranges = SplitBehavior.mergedWithNext.apply(predicateMatches(b) { $0 == replacement })
                    for r in ranges { out.append(TextPiece(bytes: Array(b[r]), atStart: p.atStart && r.lowerBound == 0)) }
                } else if !b.isEmpty {
                    out.append(TextPiece(bytes: b, atStart: p.atStart))
                }
            }
            return out
        case .split(let pattern, let behavior, let invert):
            return splitEach(pieces, behavior) { b in
                let m = coverMatches(pattern.find(b), count: b.count)
                return invert ? m.map { ($0.0, !$0.1) } : m
            }
        case .whitespace:
            // \w+|[^\w\s]+, matches kept, gaps (whitespace) removed.
            return splitEach(pieces, .removed) { b in coverMatches(WordPattern.split(b), count: b.count).map { ($0.0, !$0.1) } }
        case .whitespaceSplit:
            return splitEach(pieces, .removed) { predicateMatches($0, TextUnicode.isWhitespace) }
        case .punctuation(let behavior):
            return splitEach(pieces, behavior) { predicateMatches($0, TextUnicode.isPunctuation) }
        case .bert:
            let ws = splitEach(pieces, .removed) { predicateMatches($0, TextUnicode.isWhitespace) }
            return splitEach(ws, .isolated) { predicateMatches($0, TextUnicode.isPunctuation) }
        case .charDelimiterSplit(let c):
            return splitEach(pieces, .removed) { predicateMatches($0) { $0 == c } }
        }
    }

    private func splitEach(_ pieces: [TextPiece], _ behavior: SplitBehavior,
                           _ matches: ([UInt8]) -> [(Range<Int>, Bool)]) -> [TextPiece] {
        var out: [TextPiece] = []
        out.reserveCapacity(pieces.count)
        for p in pieces {
            for r in behavior.apply(matches(p.bytes)) {
                out.append(TextPiece(bytes: Array(p.bytes[r]), atStart: p.atStart && r.lowerBound == 0))
            }
        }
        return out
    }
}

/// GPT-2's byte-to-unicode alphabet (bytes_char in `tokenizers`).
enum ByteLevelAlphabet {
    static let byteToChar: [UInt32] = {
        var bs: [Int] = Array(0x21...0x7E) + Array(0xA1...0xAC) + Array(0xAE...0xFF)
        var cs: [UInt32] = bs.map { UInt32($0) }
        var n: UInt32 = 0
        for b in 0..<256 where !bs.contains(b) {
            bs.append(b)
            cs.append(256 + n)
            n += 1
        }
        var table = [UInt32](repeating: 0, count: 256)
        for (b, c) in zip(bs, cs) { table[b] = c }
        return table
    }()

    static let byteToUTF8: [[UInt8]] = byteToChar.map { TextUnicode.utf8($0) }

    /// Scalar -> byte, -1 outside the alphabet (every alphabet character is below U+0144).
    static let charToByteTable: [Int16] = {
        var t = [Int16](repeating: -1, count: 0x144)
        for (b, c) in byteToChar.enumerated() { t[Int(c)] = Int16(b) }
        return t
    }()

    static func encode(_ s: ArraySlice<UInt8>) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(s.count * 2)
        for b in s { out.append(contentsOf: byteToUTF8[Int(b)]) }
        return out
    }
}

/// The GPT-2 pattern, hand-written (no regex engine), with Oniguruma's semantics:
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
/// Alternatives are tried in order at each position (leftmost-first, not longest), and
/// `\s+(?!\S)` backtracks so a run of whitespace followed by a non-space leaves its last
/// character to the next token (" world" keeps its space).
enum GPT2Pattern {
    static func split(_ b: [UInt8]) -> [Range<Int>] {
        if b.isEmpty { return [] }
        let (s, off) = b.withUnsafeBufferPointer { TextUnicode.scalars($0) }
        let n = s.count
        var cls = [TextUnicode.Class](repeating: .other, count: n)
        for i in 0..<n { cls[i] = TextUnicode.classify(s[i]) }
        var out: [Range<Int>] = []
        out.reserveCapacity(n / 3 + 1)
        var i = 0
        while i < n {
            let e = matchAt(i, s, cls)
            out.append(off[i]..<off[e])
            i = e
        }
        return out
    }

    /// End (exclusive, in scalars) of the match starting at i; always > i.
    @inline(__always)
    static func matchAt(_ i: Int, _ s: [UInt32], _ cls: [TextUnicode.Class]) -> Int {
        let n = s.count
        // Contractions (case-sensitive).
        if s[i] == 0x27, i + 1 < n {
            let c1 = s[i + 1]
            if c1 == 0x73 || c1 == 0x74 || c1 == 0x6D || c1 == 0x64 { return i + 2 }  // 's 't 'm 'd
            if i + 2 < n {
                let c2 = s[i + 2]
                if (c1 == 0x72 && c2 == 0x65) || (c1 == 0x76 && c2 == 0x65) || (c1 == 0x6C && c2 == 0x6C) { return i + 3 }  // 're 've 'll
            }
        }
        let j = s[i] == 0x20 ? i + 1 : i
        if j < n {
            let c = cls[j]
            if c == .letter || c == .number || c == .other {
                var k = j + 1
                while k < n && cls[k] == c { k += 1 }
                return k
            }
        }
        // \s+(?!\S) then \s+ (s[i] is whitespace here).
        var k = i
        while k < n && cls[k] == .space { k += 1 }
        if k == n { return k }
        if k - 1 > i { return k - 1 }
        return k
    }
}

/// `\w+|[^\w\s]+` (the Whitespace pre-tokenizer), Rust regex semantics.
enum WordPattern {
    static func split(_ b: [UInt8]) -> [Range<Int>] {
        let (s, off) = b.withUnsafeBufferPointer { TextUnicode.scalars($0) }
        var out: [Range<Int>] = []
        var i = 0
        let n = s.count
        while i < n {
            if TextUnicode.isWord(s[i]) {
                var k = i + 1
                while k < n && TextUnicode.isWord(s[k]) { k += 1 }
                out.append(off[i]..<off[k]); i = k
            } else if !TextUnicode.isWhitespace(s[i]) {
                var k = i + 1
                while k < n && !TextUnicode.isWord(s[k]) && !TextUnicode.isWhitespace(s[k]) { k += 1 }
                out.append(off[i]..<off[k]); i = k
            } else {
                i += 1
            }
        }
        return out
    }
}
