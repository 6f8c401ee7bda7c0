/// tokenizer.json `decoder`s. Tokens are byte strings; each decoder maps the token list to a
/// new list (`decode_chain`), and the final list is concatenated.
indirect enum TextDecoder {
    case sequence([TextDecoder])
    case byteLevel
    case replace(TextPattern, [UInt8])
    case byteFallback
    case fuse
    case strip(content: UInt32, start: Int, stop: Int)
    case metaspace(replacement: UInt32, prependScheme: TextPreTokenizer.PrependScheme)
    case bpe(suffix: [UInt8])
    case wordPiece(prefix: [UInt8], cleanup: Bool)

    static func parse(_ j: TokJSON, path: String = "decoder") throws -> TextDecoder {
        guard let type = j["type"]?.string else { throw TQError(.format, "tokenizer.json: \(path) has no \"type\"") }
        switch type {
        case "Sequence":
            guard let items = j["decoders"]?.array else {
                throw TQError(.format, "tokenizer.json: \(path) (Sequence).decoders must be an array")
            }
            return .sequence(try items.enumerated().map { try parse($0.element, path: "\(path).decoders[\($0.offset)]") })
        case "ByteLevel": return .byteLevel
        case "Replace":
            guard let content = j["content"]?.bytes else { throw TQError(.format, "tokenizer.json: \(path) (Replace).content must be a string") }
            return .replace(try TextPattern(json: j["pattern"], what: "\(path) (Replace)"), content)
        case "ByteFallback": return .byteFallback
        case "Fuse": return .fuse
        case "Strip":
            guard let c = j["content"]?.string, c.unicodeScalars.count == 1,
                  let start = j["start"]?.int, let stop = j["stop"]?.int, start >= 0, stop >= 0 else {
                throw TQError(.format, "tokenizer.json: \(path) (Strip) needs a one-character content and non-negative start/stop")
            }
            return .strip(content: c.unicodeScalars.first!.value, start: start, stop: stop)
        case "Metaspace":
            // Same parsing as the pre-tokenizer of that name.
            guard case .metaspace(let r, let p, _) = try TextPreTokenizer.parse(j, path: path) else {
                throw TQError(.internal, "Metaspace decoder")
            }
            return .metaspace(replacement: r, prependScheme: p)
        case "BPEDecoder":
            return .bpe(suffix: j["suffix"]?.bytes ?? Array("</w>".utf8))
        case "WordPiece":
            return .wordPiece(prefix: j["prefix"]?.bytes ?? Array("##".utf8), cleanup: j["cleanup"]?.bool ?? true)
        default:
            throw TQError(.unsupported, "tokenizer.json: the \(type) decoder (\(path)) is not supported "
                          + "(supported: Sequence, ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, BPEDecoder, WordPiece)")
        }
    }

    /// Whether ByteFallback is one of the steps.
    var hasByteFallback: Bool {
        switch self {
        case .sequence(let ds): ds.contains { $0.hasByteFallback }
        case .byteFallback: true
        default: false
        }
    }

    func decodeChain(_ tokens: [[UInt8]]) -> [[UInt8]] {
        switch self {
        case .sequence(let ds):
            var t = tokens
            for d in ds { t = d.decodeChain(t) }
            return t
        case .byteLevel:
            var bytes: [UInt8] = []
            bytes.reserveCapacity(tokens.reduce(0) { $0 + $1.count })
            let table = ByteLevelAlphabet.charToByteTable
            for t in tokens {
                let start = bytes.count
                var ok = true
                t.withUnsafeBufferPointer { p in
                    var i = 0
                    while i < p.count {
                        let l = TextUnicode.seqLen(p[i])
                        let c = TextUnicode.scalar(p, at: i)
                        guard c < table.count, table[Int(c)] >= 0 else { ok = false; return }
                        bytes.append(UInt8(table[Int(c)]))
                        i += l
                    }
                }
                if !ok {
                    bytes.removeSubrange(start...)
                    bytes.append(contentsOf: t)
                }
            }
            // from_utf8_lossy
            if validUTF8(bytes) { return [bytes] }
            return [Array(lossyString(bytes).utf8)]
        case .replace(let pattern, let content):
            return tokens.map { pattern.replace($0, with: content) }
        case .byteFallback:
            var out: [[UInt8]] = []
            var pending: [UInt8] = []
            func flush() {
                if pending.isEmpty { return }
                if validUTF8(pending) {
                    out.append(pending)
                } else {
                    for _ in pending { out.append([0xEF, 0xBF, 0xBD]) }
                }
                pending.removeAll()
            }
            for t in tokens {
                if let b = TextDecoder.byteToken(t) {
                    pending.append(b)
                } else {
                    flush()
                    out.append(t)
                }
            }
            flush()
            return out
        case .fuse:
            return [tokens.flatMap { $0 }]
        case .strip(let content, let start, let stop):
            let c = TextUnicode.utf8(content)
            return tokens.map { t in
                // Drop up to `start` leading and `stop` trailing `content` characters (never
                // more than the token holds).
                var a = 0, n = 0
                while n < start && a + c.count <= t.count && t[a..<(a + c.count)].elementsEqual(c) { a += c.count; n += 1 }
                var b = t.count
                n = 0
                while n < stop && b - c.count >= a && t[(b - c.count)..<b].elementsEqual(c) { b -= c.count; n += 1 }
                return a == 0 && b == t.count ? t : Array(t[a..<b])
            }
        case .metaspace(let replacement, let scheme):
            return tokens.enumerated().map { (i, t) in
                var out: [UInt8] = []
                for c in String(decoding: t, as: UTF8.self).unicodeScalars {
                    if c.value == replacement {
                        if !(i == 0 && scheme != .never) { out.append(0x20) }
                    } else {
                        appendUTF8(&out, c.value)
                    }
                }
                return out
            }
        case .bpe(let suffix):
            let n = tokens.count
            return tokens.enumerated().map { (i, t) in replaceBytes(t, suffix, i == n - 1 ? [] : [0x20]) }
        case .wordPiece(let prefix, let cleanup):
            return tokens.enumerated().map { (i, t) in
                var s = t
                if i != 0 {
                    if s.starts(with: prefix) { s.removeFirst(prefix.count) } else { s.insert(0x20, at: 0) }
                }
                if cleanup { s = TextDecoder.cleanup(s) }
                return s
            }
        }
    }

    /// `<0xNN>` -> NN, with Rust's `u8::from_str_radix(&token[3..5], 16)` (which also takes "+N").
    static func byteToken(_ t: [UInt8]) -> UInt8? {
        guard t.count == 6, t[0] == 0x3C, t[1] == 0x30, t[2] == 0x78, t[5] == 0x3E else { return nil }
        func hex(_ b: UInt8) -> UInt8? {
            switch b {
            case 0x30...0x39: return b - 0x30
            case 0x41...0x46: return b - 0x41 + 10
            case 0x61...0x66: return b - 0x61 + 10
            default: return nil
            }
        }
        if t[3] == 0x2B { return hex(t[4]) }
        guard let h = hex(t[3]), let l = hex(t[4]) else { return nil }
        return h << 4 | l
    }

    /// WordPiece's cleanup of tokenization spaces.
    static func cleanup(_ s: [UInt8]) -> [UInt8] {
        var x = s
        for (a, b) in [(" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
                       (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")] {
            x = replaceBytes(x, Array(a.utf8), Array(b.utf8))
        }
        return x
    }
}
