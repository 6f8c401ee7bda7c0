/// tokenizer.json `added_tokens`, split out of the text before the model sees it, as
/// `tokenizers`' AddedVocabulary does by default (special tokens included, i.e.
/// `encode_special_tokens = False`): leftmost-longest matches, with `single_word`, `lstrip`
/// and `rstrip`; tokens with `normalized: false` are matched on the raw text, the others on
/// each normalized piece.
struct AddedToken {
    var id: UInt32
    var content: [UInt8]
    var singleWord: Bool
    var lstrip: Bool
    var rstrip: Bool
    var normalized: Bool
    var special: Bool
}

/// A byte trie over added-token contents, matching leftmost-longest.
struct AddedTokenTrie {
    private var root = [Int32](repeating: -1, count: 256)
    private var edges: [[(UInt8, Int32)]] = [[]]   // node 0 is the root (edges kept in `root`)
    private var terminal: [Int32] = [-1]           // token index ending at this node
    var isEmpty: Bool { terminalCount == 0 }
    private var terminalCount = 0

    mutating func insert(_ key: [UInt8], _ index: Int) {
        guard !key.isEmpty else { return }
        var node = 0
        for (d, b) in key.enumerated() {
            var child: Int32 = -1
            if d == 0 {
                child = root[Int(b)]
            } else if let e = edges[node].first(where: { $0.0 == b }) {
                child = e.1
            }
            if child < 0 {
                child = Int32(terminal.count)
                terminal.append(-1)
                edges.append([])
                if d == 0 { root[Int(b)] = child } else { edges[node].append((b, child)) }
            }
            node = Int(child)
        }
        if terminal[node] < 0 { terminal[node] = Int32(index); terminalCount += 1 }  // first insertion wins
    }

    /// The longest match starting exactly at `i`: (end, token index).
    @inline(__always)
    func longest(_ s: UnsafeBufferPointer<UInt8>, at i: Int) -> (end: Int, index: Int)? {
        var node = Int(root[Int(s[i])])
        if node < 0 { return nil }
        var best: (Int, Int)? = nil
        var k = i + 1
        while true {
            if terminal[node] >= 0 { best = (k, Int(terminal[node])) }
            if k >= s.count { break }
            let b = s[k]
            guard let e = edges[node].first(where: { $0.0 == b }) else { break }
            node = Int(e.1)
            k += 1
        }
        return best
    }
}

struct AddedVocabulary {
    var tokens: [AddedToken] = []
    var byID: [UInt32: Int] = [:]
    var specialContents: Set<[UInt8]> = []
    private var rawTrie = AddedTokenTrie()
    private var normalizedTrie = AddedTokenTrie()

    /// Ids are assigned as `tokenizers` does when it loads the file (the "id" fields are only
    /// checked there, with a warning): a token already in the model's vocabulary takes the
    /// model's id; any other takes the next id after the vocabulary (or after the largest added
    /// id at or above it), in file order.
    init(json: TokJSON?, model: BPEModel, normalizer: TextNormalizer?) throws {
        guard let list = json, !list.isNull else { return }
        guard let items = list.array else { throw TQError(.format, "tokenizer.json: added_tokens must be an array") }
        let vocabCount = UInt32(model.vocab.count)
        var maxID: UInt32? = nil
        var byContent: [[UInt8]: Int] = [:]
        for (n, item) in items.enumerated() {
            guard let content = item["content"]?.bytes, let fileID = item["id"]?.int, fileID >= 0 else {
                throw TQError(.format, "tokenizer.json: added_tokens[\(n)] needs a string content and a non-negative integer id")
            }
            if content.isEmpty { continue }
            func flag(_ k: String, _ d: Bool) -> Bool { item[k]?.bool ?? d }
            let special = flag("special", false)
            var tok = AddedToken(id: 0, content: content, singleWord: flag("single_word", false), lstrip: flag("lstrip", false),
                                 rstrip: flag("rstrip", false), normalized: flag("normalized", !special), special: special)
            if special { specialContents.insert(content) }
            if let index = byContent[content] {
                // The same content again: it keeps its id, the later options win.
                tok.id = tokens[index].id
                tok.normalized = tokens[index].normalized
                tokens[index] = tok
                continue
            }
            if let id = model.vocab.get(content) {
                tok.id = id
            } else if let m = maxID {
                tok.id = (m >= vocabCount || vocabCount == 0) ? m + 1 : vocabCount
            } else {
                tok.id = vocabCount
            }
            maxID = max(maxID ?? 0, tok.id)
            let index = tokens.count
            tokens.append(tok)
            byContent[content] = index
            if byID[tok.id] == nil { byID[tok.id] = index }
            if tok.normalized {
                normalizedTrie.insert(normalizer?.apply(content) ?? content, index)
            } else {
                rawTrie.insert(content, index)
            }
        }
    }

    func token(_ id: UInt32) -> AddedToken? { byID[id].map { tokens[$0] } }

    /// Splits `s` into pieces: (range, added-token id or nil), covering `s`.
    func split(_ s: [UInt8], normalized: Bool) -> [(Range<Int>, UInt32?)] {
        let trie = normalized ? normalizedTrie : rawTrie
        if trie.isEmpty || s.isEmpty { return [(0..<s.count, nil)] }
        var out: [(Range<Int>, UInt32?)] = []
        var startOffset = 0
        s.withUnsafeBufferPointer { p in
            var i = 0
            while i < p.count {
                guard let m = trie.longest(p, at: i) else { i += 1; continue }
                let tok = tokens[m.index]
                var start = i, stop = m.end
                i = m.end  // the search resumes after the match, as aho-corasick's find_iter does
                if tok.singleWord {
                    let startSpace = start == 0 || !AddedVocabulary.endsWithWord(p, start)
                    let stopSpace = stop == p.count || !AddedVocabulary.startsWithWord(p, stop)
                    if !startSpace || !stopSpace { continue }
                }
                if tok.lstrip {
                    start = max(AddedVocabulary.trailingSpaceStart(p, start), startOffset)
                }
                if tok.rstrip {
                    stop = AddedVocabulary.leadingSpaceEnd(p, stop)
                }
                if startOffset < start { out.append((startOffset..<start, nil)) }
                out.append((start..<stop, tok.id))
                startOffset = stop
            }
        }
        if startOffset != s.count { out.append((startOffset..<s.count, nil)) }
        return out
    }

    private static func scalarBefore(_ p: UnsafeBufferPointer<UInt8>, _ end: Int) -> UInt32 {
        var i = end - 1
        while i > 0 && p[i] & 0xC0 == 0x80 { i -= 1 }
        return TextUnicode.scalar(p, at: i)
    }

    static func endsWithWord(_ p: UnsafeBufferPointer<UInt8>, _ end: Int) -> Bool {
        end > 0 && TextUnicode.isWord(scalarBefore(p, end))
    }

    static func startsWithWord(_ p: UnsafeBufferPointer<UInt8>, _ start: Int) -> Bool {
        start < p.count && TextUnicode.isWord(TextUnicode.scalar(p, at: start))
    }

    /// Start of the whitespace run ending at `end`.
    static func trailingSpaceStart(_ p: UnsafeBufferPointer<UInt8>, _ end: Int) -> Int {
        var e = end
        while e > 0 {
            var i = e - 1
            while i > 0 && p[i] & 0xC0 == 0x80 { i -= 1 }
            if !TextUnicode.isWhitespace(TextUnicode.scalar(p, at: i)) { break }
            e = i
        }
        return e
    }

    /// End of the whitespace run starting at `start`.
    static func leadingSpaceEnd(_ p: UnsafeBufferPointer<UInt8>, _ start: Int) -> Int {
        var s = start
        while s < p.count {
            if !TextUnicode.isWhitespace(TextUnicode.scalar(p, at: s)) { break }
            s += TextUnicode.seqLen(p[s])
        }
        return s
    }
}
