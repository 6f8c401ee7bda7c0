/// The `tokenizers` BPE model: characters of a word looked up in the vocabulary (with
/// `continuing_subword_prefix` / `end_of_word_suffix`, byte fallback `<0xNN>` and `unk`), then
/// merges applied lowest rank first, ties leftmost first, with a heap over a linked list of
/// symbols — the same procedure and the same stale-entry check as `tokenizers`' `Word::merge_all`,
/// so the result is identical even where merge order matters.
final class BPEModel: @unchecked Sendable {
    let vocab: ByteStringMap
    /// id -> token bytes (nil where the vocabulary has no such id).
    let tokens: [[UInt8]?]
    let merges: PairMap
    /// The merged id of the merge of each rank.
    let rankNewID: [UInt32]
    let unkToken: [UInt8]?
    let continuingSubwordPrefix: [UInt8]?
    let endOfWordSuffix: [UInt8]?
    let fuseUnk: Bool
    let byteFallback: Bool
    let ignoreMerges: Bool
    /// `<0xNN>` ids when byte_fallback is on (nil where the vocabulary lacks one).
    private let byteIDs: [UInt32?]

    /// Words at most this long (bytes) are cached per encode call, as `tokenizers` caches words
    /// shorter than 256 bytes.
    static let cacheMaxLength = 256

    init(json m: TokJSON) throws {
        func opt(_ key: String) throws -> [UInt8]? {
            guard let v = m[key], !v.isNull else { return nil }
            guard let b = v.bytes else { throw TQError(.format, "tokenizer.json: model.\(key) must be a string or null") }
            return b
        }
        func flag(_ key: String) throws -> Bool {
            guard let v = m[key], !v.isNull else { return false }
            guard let b = v.bool else { throw TQError(.format, "tokenizer.json: model.\(key) must be a boolean") }
            return b
        }
        if let d = m["dropout"], !d.isNull {
            guard case .number(let p) = d else { throw TQError(.format, "tokenizer.json: model.dropout must be a number or null") }
            if p != 0 { throw TQError(.unsupported, "tokenizer.json: BPE dropout \(p) is not supported (encoding would be random)") }
        }
        unkToken = try opt("unk_token")
        continuingSubwordPrefix = try opt("continuing_subword_prefix")
        endOfWordSuffix = try opt("end_of_word_suffix")
        fuseUnk = try flag("fuse_unk")
        byteFallback = try flag("byte_fallback")
        ignoreMerges = try flag("ignore_merges")

        guard let vocabMembers = m["vocab"]?.members else {
            throw TQError(.format, "tokenizer.json: model.vocab is missing or not an object")
        }
        var v = ByteStringMap(capacity: vocabMembers.count)
        var maxID = -1
        for (k, val) in vocabMembers {
            guard let id = val.int, id >= 0, id <= Int(UInt32.max) else {
                throw TQError(.format, "tokenizer.json: model.vocab[\(String(decoding: k, as: UTF8.self))] is not a non-negative integer id")
            }
            v.set(k, UInt32(id))
            maxID = max(maxID, id)
        }
        guard maxID < 16_000_000 else { throw TQError(.format, "tokenizer.json: vocabulary id \(maxID) is implausibly large") }
        var t = [[UInt8]?](repeating: nil, count: maxID + 1)
        v.forEach { k, id in t[Int(id)] = k }
        vocab = v
        tokens = t

        let mergeList = m["merges"]?.array ?? []
        if let mv = m["merges"], !mv.isNull, mv.array == nil {
            throw TQError(.format, "tokenizer.json: model.merges must be an array")
        }
        var pm = PairMap(capacity: max(mergeList.count, 1))
        var rn = [UInt32](repeating: 0, count: mergeList.count)
        let prefixLen = continuingSubwordPrefix?.count ?? 0
        for (rank, item) in mergeList.enumerated() {
            let a: [UInt8], b: [UInt8]
            if let s = item.bytes {
                let parts = s.split(separator: 0x20, omittingEmptySubsequences: false)
                guard parts.count == 2 else {
                    throw TQError(.format, "tokenizer.json: merge \(rank + 1) \"\(String(decoding: s, as: UTF8.self))\" is not two space-separated tokens")
                }
                a = Array(parts[0]); b = Array(parts[1])
            } else if let arr = item.array, arr.count == 2, let x = arr[0].bytes, let y = arr[1].bytes {
                a = x; b = y
            } else {
                throw TQError(.format, "tokenizer.json: merge \(rank + 1) is neither \"a b\" nor [\"a\", \"b\"]")
            }
            func id(_ tok: [UInt8]) throws -> UInt32 {
                guard let i = v.get(tok) else {
                    throw TQError(.format, "tokenizer.json: merge \(rank + 1) uses \"\(String(decoding: tok, as: UTF8.self))\", which is not in the vocabulary")
                }
                return i
            }
            let ia = try id(a), ib = try id(b)
            guard b.count >= prefixLen else {
                throw TQError(.format, "tokenizer.json: merge \(rank + 1): \"\(String(decoding: b, as: UTF8.self))\" is shorter than continuing_subword_prefix")
            }
            let merged = try id(a + b[prefixLen...])
            pm.set(ia, ib, rank: UInt32(rank), newID: merged)
            rn[rank] = merged
        }
        merges = pm
        rankNewID = rn

        var bids = [UInt32?](repeating: nil, count: 256)
        if byteFallback {
            let hex = Array("0123456789ABCDEF".utf8)
            for byte in 0..<256 {
                bids[byte] = v.get([0x3C, 0x30, 0x78, hex[byte >> 4], hex[byte & 15], 0x3E])  // <0xNN>
            }
        }
        byteIDs = bids
    }

    var vocabSize: Int { vocab.count }

    func token(_ id: UInt32) -> [UInt8]? {
        Int(id) < tokens.count ? tokens[Int(id)] : nil
    }

    /// Scratch space reused across words of one encode call.
    final class Workspace {
        var c: [UInt32] = []
        var len: [Int32] = []
        var prev: [Int32] = []
        var next: [Int32] = []
        var heap: [UInt64] = []
        var scratch: [UInt8] = []
        var cache: [[UInt8]: [UInt32]] = [:]
    }

    /// Appends the ids of one word (already normalized and pre-tokenized) to `out`.
    func tokenize(_ word: [UInt8], into out: inout [UInt32], _ ws: Workspace) throws {
        if word.isEmpty { return }
        if ignoreMerges, let id = vocab.get(word) {
            out.append(id)
            return
        }
        let cacheable = word.count < BPEModel.cacheMaxLength
        if cacheable, let hit = ws.cache[word] {
            out.append(contentsOf: hit)
            return
        }
        let start = out.count
        try word.withUnsafeBufferPointer { try mergeWord($0, into: &out, ws) }
        if cacheable { ws.cache[word] = Array(out[start...]) }
    }

    private func unkID() throws -> UInt32 {
        guard let u = unkToken else { throw TQError(.internal, "no unk token") }
        guard let id = vocab.get(u) else {
            throw TQError(.format, "tokenizer.json: unk_token \"\(String(decoding: u, as: UTF8.self))\" is not in the vocabulary")
        }
        return id
    }

    private func mergeWord(_ w: UnsafeBufferPointer<UInt8>, into out: inout [UInt32], _ ws: Workspace) throws {
        ws.c.removeAll(keepingCapacity: true)
        ws.len.removeAll(keepingCapacity: true)
        // 1. Characters -> initial symbols.
        var unk: (id: UInt32, len: Int32)? = nil
        var i = 0
        let n = w.count
        while i < n {
            let l = TextUnicode.seqLen(w[i])
            let isFirst = i == 0, isLast = i + l == n
            var id: UInt32?
            if (isFirst || continuingSubwordPrefix == nil) && (!isLast || endOfWordSuffix == nil) {
                id = vocab.get(UnsafeBufferPointer(rebasing: w[i..<(i + l)]))
            } else {
                ws.scratch.removeAll(keepingCapacity: true)
                if !isFirst, let p = continuingSubwordPrefix { ws.scratch.append(contentsOf: p) }
                ws.scratch.append(contentsOf: UnsafeBufferPointer(rebasing: w[i..<(i + l)]))
                if isLast, let s = endOfWordSuffix { ws.scratch.append(contentsOf: s) }
                id = ws.scratch.withUnsafeBufferPointer { vocab.get($0) }
            }
            if let id {
                if let u = unk { ws.c.append(u.id); ws.len.append(u.len); unk = nil }
                ws.c.append(id)
                ws.len.append(Int32(l))
            } else {
                var handled = false
                if byteFallback {
                    // The whole (prefixed/suffixed) string's bytes must all have <0xNN> tokens.
                    let s: [UInt8]
                    if (isFirst || continuingSubwordPrefix == nil) && (!isLast || endOfWordSuffix == nil) {
                        s = Array(w[i..<(i + l)])
                    } else {
                        s = ws.scratch
                    }
                    if s.allSatisfy({ byteIDs[Int($0)] != nil }) {
                        // As in `tokenizers`, a pending unk is not flushed before the byte tokens.
                        for b in s { ws.c.append(byteIDs[Int(b)]!); ws.len.append(1) }
                        handled = true
                    }
                }
                if !handled, unkToken != nil {
                    if let u = unk {
                        if fuseUnk {
                            unk = (u.id, u.len + Int32(l))
                        } else {
                            ws.c.append(u.id); ws.len.append(u.len)
                            unk = (try unkID(), Int32(l))
                        }
                    } else {
                        unk = (try unkID(), Int32(l))
                    }
                }
            }
            i += l
        }
        if let u = unk { ws.c.append(u.id); ws.len.append(u.len) }

        let count = ws.c.count
        if count == 0 { return }
        if count == 1 { out.append(ws.c[0]); return }

        // 2. Merges, exactly as Word::merge_all.
        ws.prev.removeAll(keepingCapacity: true)
        ws.next.removeAll(keepingCapacity: true)
        for k in 0..<count {
            ws.prev.append(Int32(k - 1))
            ws.next.append(k + 1 < count ? Int32(k + 1) : -1)
        }
        ws.heap.removeAll(keepingCapacity: true)
        let merges = self.merges
        let rankNewID = self.rankNewID
        ws.c.withUnsafeMutableBufferPointer { c in
            ws.len.withUnsafeMutableBufferPointer { len in
                ws.prev.withUnsafeMutableBufferPointer { prev in
                    ws.next.withUnsafeMutableBufferPointer { next in
                        var heap = Heap(storage: ws.heap)
                        for k in 0..<(count - 1) {
                            if let m = merges.get(c[k], c[k + 1]) {
                                heap.push((m >> 32) << 32 | UInt64(k))
                            }
                        }
                        while let top = heap.pop() {
                            let pos = Int(top & 0xFFFF_FFFF)
                            let newID = rankNewID[Int(top >> 32)]
                            if len[pos] == 0 { continue }
                            let nx = Int(next[pos])
                            if nx < 0 { continue }
                            guard let m = merges.get(c[pos], c[nx]), UInt32(truncatingIfNeeded: m) == newID else { continue }
                            // Merge pos with nx.
                            c[pos] = newID
                            len[pos] += len[nx]
                            next[pos] = next[nx]
                            len[nx] = 0
                            let nn = Int(next[pos])
                            if nn >= 0 { prev[nn] = Int32(pos) }
                            let pv = Int(prev[pos])
                            if pv >= 0, let m2 = merges.get(c[pv], c[pos]) {
                                heap.push((m2 >> 32) << 32 | UInt64(pv))
                            }
                            if nn >= 0, let m3 = merges.get(c[pos], c[nn]) {
                                heap.push((m3 >> 32) << 32 | UInt64(pos))
                            }
                        }
                        ws.heap = heap.storage
                    }
                }
            }
        }
        var k = 0
        while k >= 0 {
            out.append(ws.c[k])
            k = Int(ws.next[k])
        }
    }

    /// A binary min-heap of (rank << 32 | position); the merged id is `rankNewID[rank]`.
    struct Heap {
        var storage: [UInt64]

        init(storage: [UInt64]) {
            self.storage = storage
            self.storage.removeAll(keepingCapacity: true)
        }

        @inline(__always)
        mutating func push(_ key: UInt64) {
            storage.append(key)
            storage.withUnsafeMutableBufferPointer { h in
                var i = h.count - 1
                while i > 0 {
                    let p = (i - 1) >> 1
                    if h[p] <= key { break }
                    h[i] = h[p]
                    i = p
                }
                h[i] = key
            }
        }

        @inline(__always)
        mutating func pop() -> UInt64? {
            guard let last = storage.popLast() else { return nil }
            if storage.isEmpty { return last }
            return storage.withUnsafeMutableBufferPointer { h -> UInt64 in
                let top = h[0]
                let n = h.count
                var i = 0
                while true {
                    let l = 2 * i + 1
                    if l >= n { break }
                    var m = l
                    if l + 1 < n && h[l + 1] < h[l] { m = l + 1 }
                    if h[m] >= last { break }
                    h[i] = h[m]
                    i = m
                }
                h[i] = last
                return top
            }
        }
    }
}
