/// An open-addressing hash map from byte strings to UInt32, looked up without allocating.
/// Keys compare byte for byte (never by Unicode canonical equivalence).
struct ByteStringMap {
    private var keyBytes: [UInt8] = []
    private var keyStart: [Int] = []
    private var keyLen: [Int32] = []
    private var values: [UInt32] = []
    private var slots: [Int32]
    private var mask: Int

    init(capacity: Int = 16) {
        var n = 16
        while n < capacity * 2 { n <<= 1 }
        slots = Array(repeating: -1, count: n)
        mask = n - 1
    }

    var count: Int { values.count }

    @inline(__always)
    static func hash(_ p: UnsafeBufferPointer<UInt8>) -> UInt64 {
        // FNV-1a, then a final mix so the low bits are usable as a slot index.
        var h: UInt64 = 0xcbf29ce484222325
        for b in p { h = (h ^ UInt64(b)) &* 0x100000001b3 }
        h ^= h >> 29
        h = h &* 0xbf58476d1ce4e5b9
        h ^= h >> 32
        return h
    }

    private func equal(_ e: Int, _ p: UnsafeBufferPointer<UInt8>) -> Bool {
        let len = Int(keyLen[e])
        guard len == p.count else { return false }
        let s = keyStart[e]
        return keyBytes.withUnsafeBufferPointer { kb in
            for i in 0..<len where kb[s + i] != p[i] { return false }
            return true
        }
    }

    func get(_ p: UnsafeBufferPointer<UInt8>) -> UInt32? {
        var i = Int(truncatingIfNeeded: ByteStringMap.hash(p)) & mask
        return slots.withUnsafeBufferPointer { sl in
            while true {
                let e = Int(sl[i])
                if e < 0 { return nil }
                if equal(e, p) { return values[e] }
                i = (i + 1) & mask
            }
        }
    }

    func get(_ key: [UInt8]) -> UInt32? { key.withUnsafeBufferPointer { get($0) } }

    /// Inserts or replaces `key`.
    mutating func set(_ key: [UInt8], _ value: UInt32) {
        if (values.count + 1) * 2 > slots.count { grow() }
        key.withUnsafeBufferPointer { p in
            var i = Int(truncatingIfNeeded: ByteStringMap.hash(p)) & mask
            while true {
                let e = Int(slots[i])
                if e < 0 { break }
                if equal(e, p) { values[e] = value; return }
                i = (i + 1) & mask
            }
            slots[i] = Int32(values.count)
            keyStart.append(keyBytes.count)
            keyLen.append(Int32(p.count))
            keyBytes.append(contentsOf: p)
            values.append(value)
        }
    }

    private mutating func grow() {
        let n = slots.count * 2
        slots = Array(repeating: -1, count: n)
        mask = n - 1
        keyBytes.withUnsafeBufferPointer { kb in
            for e in 0..<values.count {
                let p = UnsafeBufferPointer(rebasing: kb[keyStart[e]..<(keyStart[e] + Int(keyLen[e]))])
                var i = Int(truncatingIfNeeded: ByteStringMap.hash(p)) & mask
                while slots[i] >= 0 { i = (i + 1) & mask }
                slots[i] = Int32(e)
            }
        }
    }

    /// Every (key, value), in insertion order.
    func forEach(_ body: ([UInt8], UInt32) -> Void) {
        for e in 0..<values.count {
            body(Array(keyBytes[keyStart[e]..<(keyStart[e] + Int(keyLen[e]))]), values[e])
        }
    }
}

/// BPE merges: (left id, right id) -> (rank, merged id), open addressing on the packed pair.
struct PairMap {
    private var keys: [UInt64]
    private var vals: [UInt64]
    private var used: [Bool]
    private var mask: Int
    private(set) var count = 0

    init(capacity: Int) {
        var n = 16
        while n < capacity * 2 { n <<= 1 }
        keys = Array(repeating: 0, count: n)
        vals = Array(repeating: 0, count: n)
        used = Array(repeating: false, count: n)
        mask = n - 1
    }

    @inline(__always)
    static func slot(_ k: UInt64) -> Int {
        var h = k &* 0x9E3779B97F4A7C15
        h ^= h >> 31
        return Int(truncatingIfNeeded: h)
    }

    /// Inserts or replaces (a later merge of the same pair wins, as in `tokenizers`' HashMap).
    mutating func set(_ a: UInt32, _ b: UInt32, rank: UInt32, newID: UInt32) {
        let k = UInt64(a) << 32 | UInt64(b)
        var i = PairMap.slot(k) & mask
        while used[i] {
            if keys[i] == k { vals[i] = UInt64(rank) << 32 | UInt64(newID); return }
            i = (i + 1) & mask
        }
        used[i] = true
        keys[i] = k
        vals[i] = UInt64(rank) << 32 | UInt64(newID)
        count += 1
    }

    /// (rank << 32 | new id), or nil.
    @inline(__always)
    func get(_ a: UInt32, _ b: UInt32) -> UInt64? {
        let k = UInt64(a) << 32 | UInt64(b)
        var i = PairMap.slot(k) & mask
        while used[i] {
            if keys[i] == k { return vals[i] }
            i = (i + 1) & mask
        }
        return nil
    }
}
