import Foundation

/// A Hugging Face `tokenizer.json` tokenizer (BPE model), giving the same ids as the
/// `tokenizers` package with its defaults: `Tokenizer.from_file(path).encode(text).ids`
/// (added and special tokens in the text are matched, the post-processor adds its special
/// tokens) and `decode(ids)` (skip_special_tokens=True).
///
/// Supported: normalizers Sequence, Prepend, Append, Replace, NFC/NFD/NFKC/NFKD, Lowercase,
/// Strip, StripAccents; pre-tokenizers Sequence, ByteLevel, Digits, Metaspace, Split,
/// Whitespace, WhitespaceSplit, Punctuation, BertPreTokenizer, CharDelimiterSplit; the BPE model
/// (merges as "a b" or ["a", "b"], byte_fallback, unk/fuse_unk, ignore_merges,
/// continuing_subword_prefix, end_of_word_suffix); post-processors TemplateProcessing,
/// ByteLevel, RobertaProcessing, BertProcessing, Sequence; decoders ByteLevel, Sequence,
/// Replace, ByteFallback, Fuse, Strip, Metaspace, BPEDecoder, WordPiece. Anything else is
/// refused with TQError(.unsupported) naming the component.
///
/// Immutable once built, so one instance may be used from several threads.
public final class Tokenizer: @unchecked Sendable {
    let model: BPEModel
    let added: AddedVocabulary
    let normalizer: TextNormalizer?
    let preTokenizer: TextPreTokenizer?
    let postProcessor: TextPostProcessor?
    let decoder: TextDecoder?
    /// id -> token bytes for decoding (added tokens override the model's), and whether
    /// decode's skipSpecialTokens drops the id (its string is a special added token).
    let decodeTable: [[UInt8]?]
    let specialID: [Bool]
    /// Where the tokenizer came from (for messages).
    public let path: String

    /// Opens `path`: a tokenizer.json file, or a directory containing one.
    public convenience init(path: String) throws {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw TQError.io("\(path): no such file or directory")
        }
        let file = isDir.boolValue ? (path as NSString).appendingPathComponent("tokenizer.json") : path
        guard let data = readWholeFile(file) else {
            throw TQError.io(isDir.boolValue ? "\(path): the directory has no readable tokenizer.json"
                                             : "\(file): cannot read (missing or unreadable)")
        }
        try self.init(json: data, path: file)
    }

    /// Builds a tokenizer from the bytes of a tokenizer.json; `path` names it in messages.
    public init(json data: Data, path: String = "tokenizer.json") throws {
        self.path = path
        let root = try data.withUnsafeBytes { raw in
            try TokJSON.parse(raw.bindMemory(to: UInt8.self), what: path)
        }
        do {
            guard root.members != nil else { throw TQError(.format, "tokenizer.json: the top level is not an object") }
            for key in ["truncation", "padding"] {
                if let v = root[key], !v.isNull {
                    throw TQError(.unsupported, "tokenizer.json: \(key) is set; tokenizers with \(key) are not supported")
                }
            }
            guard let m = root["model"], m.members != nil else { throw TQError(.format, "tokenizer.json: no \"model\" object") }
            let type = m["type"]?.string ?? (m["merges"] != nil ? "BPE" : "?")
            guard type == "BPE" else {
                throw TQError(.unsupported, "tokenizer.json: the \(type) model is not supported (only BPE)")
            }
            func optional<T>(_ key: String, _ parse: (TokJSON) throws -> T) throws -> T? {
                guard let v = root[key], !v.isNull else { return nil }
                return try parse(v)
            }
            let n = try optional("normalizer") { try TextNormalizer.parse($0) }
            normalizer = n
            preTokenizer = try optional("pre_tokenizer") { try TextPreTokenizer.parse($0) }
            postProcessor = try optional("post_processor") { try TextPostProcessor.parse($0) }
            decoder = try optional("decoder") { try TextDecoder.parse($0) }
            model = try BPEModel(json: m)
            let av = try AddedVocabulary(json: root["added_tokens"], model: model, normalizer: n)
            added = av
            let size = max(model.tokens.count, (av.tokens.map { Int($0.id) }.max() ?? -1) + 1)
            var table = [[UInt8]?](repeating: nil, count: size)
            for (i, t) in model.tokens.enumerated() { table[i] = t }
            // As `tokenizers` 0.23 does, a normalized added token decodes to its normalized
            // content, and is skipped as special only if that string is a special token's content.
            for t in av.tokens where av.token(t.id)?.content == t.content {
                table[Int(t.id)] = t.normalized ? (n?.apply(t.content) ?? t.content) : t.content
            }
            decodeTable = table
            specialID = table.map { $0.map { av.specialContents.contains($0) } ?? false }
        } catch let e as TQError {
            throw TQError(e.kind, e.message.replacingOccurrences(of: "tokenizer.json:", with: "\(path):"))
        }
    }

    /// The number of distinct tokens: the model's vocabulary plus added tokens it lacks
    /// (`tokenizers`' get_vocab_size(with_added_tokens=True)).
    public var vocabSize: Int {
        model.vocabSize + added.tokens.filter { model.vocab.get($0.content) == nil }.count
    }

    /// The id of a token string (added tokens first, then the model's vocabulary).
    public func tokenID(_ token: String) -> UInt32? {
        let b = Array(token.utf8)
        if let t = added.tokens.first(where: { $0.content == b }) { return t.id }
        return model.vocab.get(b)
    }

    /// The string of a token id (added tokens first), or nil.
    public func token(_ id: UInt32) -> String? {
        if let t = added.token(id) { return String(decoding: t.content, as: UTF8.self) }
        return model.token(id).map { String(decoding: $0, as: UTF8.self) }
    }

    /// Whether `id` is a special added token (dropped by decode's skipSpecialTokens).
    public func isSpecial(_ id: UInt32) -> Bool { added.token(id)?.special ?? false }

    /// Encodes `text` as one sequence.
    public func encode(_ text: String, addSpecialTokens: Bool = true) throws -> [UInt32] {
        var s = text
        return try s.withUTF8 { try encode(utf8: $0, addSpecialTokens: addSpecialTokens) }
    }

    /// Encodes UTF-8 bytes as one sequence; invalid UTF-8 is an error (.invalidArgument).
    public func encode(utf8 bytes: UnsafeBufferPointer<UInt8>, addSpecialTokens: Bool = true) throws -> [UInt32] {
        if let bad = firstInvalidUTF8(bytes) {
            throw TQError(.invalidArgument, "the text is not valid UTF-8 (at byte \(bad))")
        }
        let ws = BPEModel.Workspace()
        var ids: [UInt32] = []
        ids.reserveCapacity(bytes.count / 3 + 16)
        let text = Array(bytes)
        for (r, id) in added.split(text, normalized: false) {
            if let id { ids.append(id); continue }
            let raw = Array(text[r])
            let norm = normalizer?.apply(raw) ?? raw
            for (r2, id2) in added.split(norm, normalized: true) {
                if let id2 { ids.append(id2); continue }
                if r2.isEmpty { continue }
                let piece = TextPiece(bytes: Array(norm[r2]), atStart: r.lowerBound == 0 && r2.lowerBound == 0)
                let words = preTokenizer?.apply([piece]) ?? [piece]
                for w in words { try model.tokenize(w.bytes, into: &ids, ws) }
            }
        }
        if addSpecialTokens, let p = postProcessor { ids = p.apply(ids) }
        return ids
    }

    /// Encodes a whole UTF-8 text file as one string (its bytes as they are: no newline
    /// translation, a byte-order mark is kept).
    public func encode(file path: String, addSpecialTokens: Bool = true) throws -> [UInt32] {
        guard let data = readWholeFile(path) else {
            throw TQError.io("\(path): cannot read (missing or unreadable)")
        }
        do {
            return try data.withUnsafeBytes { try encode(utf8: $0.bindMemory(to: UInt8.self), addSpecialTokens: addSpecialTokens) }
        } catch let e as TQError where e.kind == .invalidArgument {
            throw TQError(.format, "\(path): \(e.message)")
        }
    }

    /// Whether `id` decodes as one byte of a ByteFallback run (a `<0xNN>` token under a decoder with
    /// ByteFallback): consecutive such bytes are decoded together, a run that is not valid UTF-8
    /// becoming one U+FFFD per byte, so the text of a run is final only once an id of another kind
    /// follows. nil for the ids decode skips (unknown ones, special ones), which do not end a run.
    public func isFallbackByte(_ id: UInt32) -> Bool? {
        let i = Int(id)
        guard i < decodeTable.count, let t = decodeTable[i], !specialID[i] else { return nil }
        return decoder?.hasByteFallback == true && TextDecoder.byteToken(t) != nil
    }

    /// Decodes ids to text as `tokenizers`' decode: unknown ids are skipped, special added
    /// tokens too when `skipSpecialTokens`, the rest goes through the decoder (or is joined
    /// with spaces when there is none).
    public func decode(_ ids: [UInt32], skipSpecialTokens: Bool = true) -> String {
        var tokens: [[UInt8]] = []
        tokens.reserveCapacity(ids.count)
        let n = decodeTable.count
        for id in ids {
            let i = Int(id)
            guard i < n, let t = decodeTable[i] else { continue }
            if skipSpecialTokens && specialID[i] { continue }
            tokens.append(t)
        }
        let out: [UInt8]
        if let d = decoder {
            out = d.decodeChain(tokens).flatMap { $0 }
        } else {
            out = Array(tokens.map { String(decoding: $0, as: UTF8.self) }.joined(separator: " ").utf8)
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// The byte offset of the first invalid UTF-8 sequence, or nil.
func firstInvalidUTF8(_ b: UnsafeBufferPointer<UInt8>) -> Int? {
    var i = 0
    let n = b.count
    while i < n {
        let c = b[i]
        if c < 0x80 { i += 1; continue }
        let l: Int
        var lo: UInt8 = 0x80, hi: UInt8 = 0xBF
        switch c {
        case 0xC2...0xDF: l = 2
        case 0xE0: l = 3; lo = 0xA0
        case 0xE1...0xEC, 0xEE...0xEF: l = 3
        case 0xED: l = 3; hi = 0x9F
        case 0xF0: l = 4; lo = 0x90
        case 0xF1...0xF3: l = 4
        case 0xF4: l = 4; hi = 0x8F
        default: return i
        }
        guard i + l <= n else { return i }
        guard b[i + 1] >= lo && b[i + 1] <= hi else { return i }
        for k in 2..<l where b[i + k] & 0xC0 != 0x80 { return i }
        i += l
    }
    return nil
}
