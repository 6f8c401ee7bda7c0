import Foundation

/// One piece of text moving through the pipeline: valid UTF-8 bytes, and whether it begins at
/// offset 0 of the original input (Metaspace's `prepend_scheme: first` needs that).
struct TextPiece {
    var bytes: [UInt8]
    var atStart: Bool
}

/// `tokenizers`' SplitDelimiterBehavior.
enum SplitBehavior: String {
    case removed = "Removed", isolated = "Isolated", mergedWithPrevious = "MergedWithPrevious",
         mergedWithNext = "MergedWithNext", contiguous = "Contiguous"

    static func parse(_ v: TokJSON?, _ what: String) throws -> SplitBehavior {
        guard let s = v?.string else { throw TQError(.format, "tokenizer.json: \(what).behavior is missing") }
        guard let b = SplitBehavior(rawValue: s) else {
            throw TQError(.unsupported, "tokenizer.json: \(what) behavior \"\(s)\" is not supported")
        }
        return b
    }

    /// Applies the behavior to `matches` (byte ranges covering the text, flagged when matched),
    /// as NormalizedString::split does; returns the non-empty pieces.
    func apply(_ matches: [(Range<Int>, Bool)]) -> [Range<Int>] {
        var acc: [(Range<Int>, Bool)] = []  // (range, remove)
        acc.reserveCapacity(matches.count)
        switch self {
        case .isolated:
            acc = matches.map { ($0.0, false) }
        case .removed:
            acc = matches
        case .contiguous:
            var previous = false
            for (r, m) in matches {
                if m == previous, let last = acc.last {
                    acc[acc.count - 1] = (last.0.lowerBound..<r.upperBound, false)
                } else {
                    acc.append((r, false))
                }
                previous = m
            }
        case .mergedWithPrevious:
            var previous = false
            for (r, m) in matches {
                if m && !previous, let last = acc.last {
                    acc[acc.count - 1] = (last.0.lowerBound..<r.upperBound, false)
                } else {
                    acc.append((r, false))
                }
                previous = m
            }
        case .mergedWithNext:
            var previous = false
            for (r, m) in matches.reversed() {
                if m && !previous, let last = acc.last {
                    acc[acc.count - 1] = (r.lowerBound..<last.0.upperBound, false)
                } else {
                    acc.append((r, false))
                }
                previous = m
            }
            acc.reverse()
        }
        return acc.compactMap { $0.1 || $0.0.isEmpty ? nil : $0.0 }
    }
}

/// Matches of a char predicate: every matching scalar is its own match (tokenizers' `Fn(char)`
/// pattern); the gaps are non-matches.
func predicateMatches(_ b: [UInt8], _ pred: (UInt32) -> Bool) -> [(Range<Int>, Bool)] {
    if b.isEmpty { return [(0..<0, false)] }
    var out: [(Range<Int>, Bool)] = []
    var last = 0
    b.withUnsafeBufferPointer { p in
        var i = 0
        while i < p.count {
            let l = TextUnicode.seqLen(p[i])
            let c = TextUnicode.scalar(p, at: i)
            if pred(c) {
                if last < i { out.append((last..<i, false)) }
                out.append((i..<(i + l), true))
                last = i + l
            }
            i += l
        }
    }
    if last < b.count { out.append((last..<b.count, false)) }
    return out
}

/// Covers `b` with match ranges and the gaps between them.
func coverMatches(_ ranges: [Range<Int>], count: Int) -> [(Range<Int>, Bool)] {
    if count == 0 { return [(0..<0, false)] }
    var out: [(Range<Int>, Bool)] = []
    var prev = 0
    for r in ranges {
        if prev != r.lowerBound { out.append((prev..<r.lowerBound, false)) }
        out.append((r, true))
        prev = r.upperBound
    }
    if prev != count { out.append((prev..<count, false)) }
    return out
}

/// A `{"String": ...}` or `{"Regex": ...}` pattern, as Split, Replace and the Replace decoder use.
enum TextPattern {
    case literal([UInt8])
    case regex(TokRegex)

    init(json: TokJSON?, what: String) throws {
        guard let j = json else { throw TQError(.format, "tokenizer.json: \(what).pattern is missing") }
        if let s = j["String"]?.bytes {
            self = .literal(s)
        } else if let r = j["Regex"]?.string {
            self = .regex(try TokRegex(r, what: what))
        } else {
            throw TQError(.format, "tokenizer.json: \(what).pattern must be {\"String\": ...} or {\"Regex\": ...}")
        }
    }

    /// Non-overlapping matches, leftmost first, as byte ranges.
    func find(_ b: [UInt8]) -> [Range<Int>] {
        switch self {
        case .literal(let p):
            guard !p.isEmpty, b.count >= p.count else { return [] }
            var out: [Range<Int>] = []
            var i = 0
            let n = b.count, m = p.count
            while i + m <= n {
                if b[i] == p[0] && b[i..<(i + m)].elementsEqual(p) {
                    out.append(i..<(i + m))
                    i += m
                } else {
                    i += 1
                }
            }
            return out
        case .regex(let r):
            return r.find(b)
        }
    }

    func replace(_ b: [UInt8], with content: [UInt8]) -> [UInt8] {
        if case .literal(let p) = self { return replaceBytes(b, p, content) }
        let ms = find(b)
        if ms.isEmpty { return b }
        var out: [UInt8] = []
        var prev = 0
        for r in ms {
            out.append(contentsOf: b[prev..<r.lowerBound])
            out.append(contentsOf: content)
            prev = r.upperBound
        }
        out.append(contentsOf: b[prev...])
        return out
    }
}

/// A user regex (Split pre-tokenizer, Replace normalizer/decoder) run with ICU through
/// NSRegularExpression. `tokenizers` uses Oniguruma; both are Perl-style backtracking engines
/// and agree on the constructs tokenizer files use (\p{L}, \p{N}, \s, (?i:), (?!), classes).
/// The GPT-2 pattern of the ByteLevel pre-tokenizer does not come here: it is hand-written.
final class TokRegex: @unchecked Sendable {
    let re: NSRegularExpression
    let pattern: String

    init(_ pattern: String, what: String) throws {
        self.pattern = pattern
        do {
            re = try NSRegularExpression(pattern: pattern, options: [])
        } catch {
            throw TQError(.unsupported, "tokenizer.json: \(what) regex \(pattern) is not supported: \(error)")
        }
    }

    func find(_ b: [UInt8]) -> [Range<Int>] {
        if b.isEmpty { return [] }
        let s = String(decoding: b, as: UTF8.self)
        // UTF-16 offset -> byte offset.
        var map: [Int] = []
        map.reserveCapacity(b.count + 1)
        var byte = 0
        for u in s.unicodeScalars {
            let l = u.value < 0x80 ? 1 : u.value < 0x800 ? 2 : u.value < 0x10000 ? 3 : 4
            map.append(byte)
            if u.value >= 0x10000 { map.append(byte) }
            byte += l
        }
        map.append(byte)
        let ns = s as NSString
        var out: [Range<Int>] = []
        for m in re.matches(in: s, options: [], range: NSRange(location: 0, length: ns.length)) {
            let r = m.range
            if r.location == NSNotFound { continue }
            out.append(map[r.location]..<map[r.location + r.length])
        }
        return out
    }
}
