/// Unicode helpers shared by the tokenizer components. Text flows through the pipeline as
/// valid UTF-8 bytes; these decode it to scalars with their byte offsets and classify scalars
/// the way Oniguruma (`\s`, `\p{L}`, `\p{N}`) and Rust's `char` methods do.
enum TextUnicode {
    /// Decodes valid UTF-8 into scalars and the byte offset of each (plus a final end offset).
    static func scalars(_ b: UnsafeBufferPointer<UInt8>) -> (scalars: [UInt32], offsets: [Int]) {
        var s: [UInt32] = []
        var o: [Int] = []
        s.reserveCapacity(b.count)
        o.reserveCapacity(b.count + 1)
        var i = 0
        let n = b.count
        while i < n {
            o.append(i)
            let c0 = UInt32(b[i])
            if c0 < 0x80 {
                s.append(c0); i += 1
            } else if c0 < 0xE0 {
                s.append((c0 & 0x1F) << 6 | UInt32(b[i + 1] & 0x3F)); i += 2
            } else if c0 < 0xF0 {
                s.append((c0 & 0x0F) << 12 | UInt32(b[i + 1] & 0x3F) << 6 | UInt32(b[i + 2] & 0x3F)); i += 3
            } else {
                s.append((c0 & 0x07) << 18 | UInt32(b[i + 1] & 0x3F) << 12 | UInt32(b[i + 2] & 0x3F) << 6
                         | UInt32(b[i + 3] & 0x3F)); i += 4
            }
        }
        o.append(n)
        return (s, o)
    }

    /// Byte length of the UTF-8 sequence starting with `b0` (input is valid UTF-8).
    @inline(__always)
    static func seqLen(_ b0: UInt8) -> Int {
        b0 < 0x80 ? 1 : b0 < 0xE0 ? 2 : b0 < 0xF0 ? 3 : 4
    }

    /// The code point of the UTF-8 sequence starting at p[i] (valid UTF-8).
    @inline(__always)
    static func scalar(_ p: UnsafeBufferPointer<UInt8>, at i: Int) -> UInt32 {
        let l = seqLen(p[i])
        if l == 1 { return UInt32(p[i]) }
        var c = UInt32(p[i] & (0xFF >> (l + 1)))
        for k in 1..<l { c = c << 6 | UInt32(p[i + k] & 0x3F) }
        return c
    }

    // Unicode versions: `tokenizers` 0.23.3 (the reference) classifies with Oniguruma's, Rust
    // regex's and the unicode_categories crate's tables, which predate this toolchain's
    // (Unicode 17). The tables below, measured against `tokenizers` on every code point, make the
    // classification identical. Rust `char::is_numeric` and White_Space agree already.
    /// Scalars Oniguruma (in `tokenizers` 0.23.3) does not know as letters or numbers but this
    /// toolchain's Unicode tables do (assigned in a later Unicode version): class `other` there.
    static let onigOther: [(UInt32, UInt32)] = [
        (0x88F, 0x88F), (0xC5C, 0xC5C), (0xCDC, 0xCDC), (0xA7CE, 0xA7CF), (0xA7D2, 0xA7D2), (0xA7D4, 0xA7D4),
        (0xA7F1, 0xA7F1), (0x10940, 0x10959), (0x10EC5, 0x10EC7), (0x11DB0, 0x11DDB), (0x11DE0, 0x11DE9),
        (0x16EA0, 0x16EB8), (0x16EBB, 0x16ED3), (0x16FF2, 0x16FF3), (0x16FF4, 0x16FF6), (0x187F8, 0x187FF),
        (0x18D09, 0x18D1E), (0x18D80, 0x18DF2), (0x1E6C0, 0x1E6DE), (0x1E6E0, 0x1E6E2), (0x1E6E4, 0x1E6E5),
        (0x1E6E7, 0x1E6ED), (0x1E6F0, 0x1E6F4), (0x1E6FE, 0x1E6FF), (0x2B73A, 0x2B73F), (0x2CEA2, 0x2CEAD),
        (0x323B0, 0x33479),
    ]
    /// Scalars Rust's regex `\w` (in `tokenizers` 0.23.3) does not count as word characters but
    /// this toolchain's tables would.
    static let notWord: [(UInt32, UInt32)] = [
        (0x88F, 0x88F), (0xC5C, 0xC5C), (0xCDC, 0xCDC), (0x1ACF, 0x1ADD), (0x1AE0, 0x1AEB), (0xA7CE, 0xA7CF),
        (0xA7D2, 0xA7D2), (0xA7D4, 0xA7D4), (0xA7F1, 0xA7F1), (0x10940, 0x10959), (0x10EC5, 0x10EC7),
        (0x10EFA, 0x10EFB), (0x11B60, 0x11B67), (0x11DB0, 0x11DDB), (0x11DE0, 0x11DE9), (0x16EA0, 0x16EB8),
        (0x16EBB, 0x16ED3), (0x16FF2, 0x16FF6), (0x187F8, 0x187FF), (0x18D09, 0x18D1E), (0x18D80, 0x18DF2),
        (0x1E6C0, 0x1E6DE), (0x1E6E0, 0x1E6F5), (0x1E6FE, 0x1E6FF), (0x2B73A, 0x2B73F), (0x2CEA2, 0x2CEAD),
        (0x323B0, 0x33479),
    ]
    /// Where `tokenizers`' punctuation test (the unicode_categories crate's older tables)
    /// disagrees with this toolchain's general categories: (first, last, is punctuation).
    static let punctuationOverride: [(UInt32, UInt32, Bool)] = [
        (0x61D, 0x61D, false), (0x9FD, 0x9FD, false), (0xA76, 0xA76, false), (0xC77, 0xC77, false),
        (0xC84, 0xC84, false), (0x166D, 0x166D, true), (0x1B4E, 0x1B4F, false), (0x1B7D, 0x1B7F, false),
        (0x2E43, 0x2E4F, false), (0x2E52, 0x2E5D, false), (0x10D6E, 0x10D6E, false), (0x10EAD, 0x10EAD, false),
        (0x10ED0, 0x10ED0, false), (0x10F55, 0x10F59, false), (0x10F86, 0x10F89, false), (0x111C9, 0x111C9, true),
        (0x113D4, 0x113D5, false), (0x113D7, 0x113D8, false), (0x1144B, 0x1144F, false), (0x1145A, 0x1145B, false),
        (0x1145D, 0x1145D, false), (0x11660, 0x1166C, false), (0x116B9, 0x116B9, false), (0x1183B, 0x1183B, false),
        (0x11944, 0x11946, false), (0x119E2, 0x119E2, false), (0x11A3F, 0x11A46, false), (0x11A9A, 0x11A9C, false),
        (0x11A9E, 0x11AA2, false), (0x11B00, 0x11B09, false), (0x11BE1, 0x11BE1, false), (0x11C41, 0x11C45, false),
        (0x11C70, 0x11C71, false), (0x11EF7, 0x11EF8, false), (0x11F43, 0x11F4F, false), (0x11FFF, 0x11FFF, false),
        (0x12FF1, 0x12FF2, false), (0x16D6D, 0x16D6F, false), (0x16E97, 0x16E9A, false), (0x16FE2, 0x16FE2, false),
        (0x1E5FF, 0x1E5FF, false), (0x1E95E, 0x1E95F, false),
    ]

    /// The characters `tokenizers`' StripAccents removes (its older tables' marks), measured.
    static let strippedMarks: [(UInt32, UInt32)] = [
        (0x300, 0x36F), (0x483, 0x489), (0x591, 0x5BD), (0x5BF, 0x5BF), (0x5C1, 0x5C2), (0x5C4, 0x5C5),
        (0x5C7, 0x5C7), (0x610, 0x61A), (0x64B, 0x65F), (0x670, 0x670), (0x6D6, 0x6DC), (0x6DF, 0x6E4),
        (0x6E7, 0x6E8), (0x6EA, 0x6ED), (0x711, 0x711), (0x730, 0x74A), (0x7A6, 0x7B0), (0x7EB, 0x7F3),
        (0x816, 0x819), (0x81B, 0x823), (0x825, 0x827), (0x829, 0x82D), (0x859, 0x85B), (0x8D4, 0x8E1),
        (0x8E3, 0x903), (0x93A, 0x93C), (0x93E, 0x94F), (0x951, 0x957), (0x962, 0x963), (0x981, 0x983),
        (0x9BC, 0x9BC), (0x9BE, 0x9C4), (0x9C7, 0x9C8), (0x9CB, 0x9CD), (0x9D7, 0x9D7), (0x9E2, 0x9E3),
        (0xA01, 0xA03), (0xA3C, 0xA3C), (0xA3E, 0xA42), (0xA47, 0xA48), (0xA4B, 0xA4D), (0xA51, 0xA51),
        (0xA70, 0xA71), (0xA75, 0xA75), (0xA81, 0xA83), (0xABC, 0xABC), (0xABE, 0xAC5), (0xAC7, 0xAC9),
        (0xACB, 0xACD), (0xAE2, 0xAE3), (0xB01, 0xB03), (0xB3C, 0xB3C), (0xB3E, 0xB44), (0xB47, 0xB48),
        (0xB4B, 0xB4D), (0xB56, 0xB57), (0xB62, 0xB63), (0xB82, 0xB82), (0xBBE, 0xBC2), (0xBC6, 0xBC8),
        (0xBCA, 0xBCD), (0xBD7, 0xBD7), (0xC00, 0xC03), (0xC3E, 0xC44), (0xC46, 0xC48), (0xC4A, 0xC4D),
        (0xC55, 0xC56), (0xC62, 0xC63), (0xC81, 0xC83), (0xCBC, 0xCBC), (0xCBE, 0xCC4), (0xCC6, 0xCC8),
        (0xCCA, 0xCCD), (0xCD5, 0xCD6), (0xCE2, 0xCE3), (0xD01, 0xD03), (0xD3E, 0xD44), (0xD46, 0xD48),
        (0xD4A, 0xD4D), (0xD57, 0xD57), (0xD62, 0xD63), (0xD82, 0xD83), (0xDCA, 0xDCA), (0xDCF, 0xDD4),
        (0xDD6, 0xDD6), (0xDD8, 0xDDF), (0xDF2, 0xDF3), (0xE31, 0xE31), (0xE34, 0xE3A), (0xE47, 0xE4E),
        (0xEB1, 0xEB1), (0xEB4, 0xEB9), (0xEBB, 0xEBC), (0xEC8, 0xECD), (0xF18, 0xF19), (0xF35, 0xF35),
        (0xF37, 0xF37), (0xF39, 0xF39), (0xF3E, 0xF3F), (0xF71, 0xF84), (0xF86, 0xF87), (0xF8D, 0xF97),
        (0xF99, 0xFBC), (0xFC6, 0xFC6), (0x102B, 0x103E), (0x1056, 0x1059), (0x105E, 0x1060), (0x1062, 0x1064),
        (0x1067, 0x106D), (0x1071, 0x1074), (0x1082, 0x108D), (0x108F, 0x108F), (0x109A, 0x109D), (0x135D, 0x135F),
        (0x1712, 0x1714), (0x1732, 0x1734), (0x1752, 0x1753), (0x1772, 0x1773), (0x17B4, 0x17D3), (0x17DD, 0x17DD),
        (0x180B, 0x180D), (0x1885, 0x1886), (0x18A9, 0x18A9), (0x1920, 0x192B), (0x1930, 0x193B), (0x1A17, 0x1A1B),
        (0x1A55, 0x1A5E), (0x1A60, 0x1A7C), (0x1A7F, 0x1A7F), (0x1AB0, 0x1ABE), (0x1B00, 0x1B04), (0x1B34, 0x1B44),
        (0x1B6B, 0x1B73), (0x1B80, 0x1B82), (0x1BA1, 0x1BAD), (0x1BE6, 0x1BF3), (0x1C24, 0x1C37), (0x1CD0, 0x1CD2),
        (0x1CD4, 0x1CE8), (0x1CED, 0x1CED), (0x1CF2, 0x1CF4), (0x1CF8, 0x1CF9), (0x1DC0, 0x1DF5), (0x1DFB, 0x1DFF),
        (0x20D0, 0x20F0), (0x2CEF, 0x2CF1), (0x2D7F, 0x2D7F), (0x2DE0, 0x2DFF), (0x302A, 0x302F), (0x3099, 0x309A),
        (0xA66F, 0xA672), (0xA674, 0xA67D), (0xA69E, 0xA69F), (0xA6F0, 0xA6F1), (0xA802, 0xA802), (0xA806, 0xA806),
        (0xA80B, 0xA80B), (0xA823, 0xA827), (0xA880, 0xA881), (0xA8B4, 0xA8C5), (0xA8E0, 0xA8F1), (0xA926, 0xA92D),
        (0xA947, 0xA953), (0xA980, 0xA983), (0xA9B3, 0xA9C0), (0xA9E5, 0xA9E5), (0xAA29, 0xAA36), (0xAA43, 0xAA43),
        (0xAA4C, 0xAA4D), (0xAA7B, 0xAA7D), (0xAAB0, 0xAAB0), (0xAAB2, 0xAAB4), (0xAAB7, 0xAAB8), (0xAABE, 0xAABF),
        (0xAAC1, 0xAAC1), (0xAAEB, 0xAAEF), (0xAAF5, 0xAAF6), (0xABE3, 0xABEA), (0xABEC, 0xABED), (0xFB1E, 0xFB1E),
        (0xFE00, 0xFE0F), (0xFE20, 0xFE2F), (0x101FD, 0x101FD), (0x102E0, 0x102E0), (0x10376, 0x1037A),
        (0x10A01, 0x10A03), (0x10A05, 0x10A06), (0x10A0C, 0x10A0F), (0x10A38, 0x10A3A), (0x10A3F, 0x10A3F),
        (0x10AE5, 0x10AE6), (0x11000, 0x11002), (0x11038, 0x11046), (0x1107F, 0x11082), (0x110B0, 0x110BA),
        (0x11100, 0x11102), (0x11127, 0x11134), (0x11173, 0x11173), (0x11180, 0x11182), (0x111B3, 0x111C0),
        (0x111CA, 0x111CC), (0x1122C, 0x11237), (0x1123E, 0x1123E), (0x112DF, 0x112EA), (0x11300, 0x11303),
        (0x1133C, 0x1133C), (0x1133E, 0x11344), (0x11347, 0x11348), (0x1134B, 0x1134D), (0x11357, 0x11357),
        (0x11362, 0x11363), (0x11366, 0x1136C), (0x11370, 0x11374), (0x11435, 0x11446), (0x114B0, 0x114C3),
        (0x115AF, 0x115B5), (0x115B8, 0x115C0), (0x115DC, 0x115DD), (0x11630, 0x11640), (0x116AB, 0x116B7),
        (0x1171D, 0x1172B), (0x11C2F, 0x11C36), (0x11C38, 0x11C3F), (0x11C92, 0x11CA7), (0x11CA9, 0x11CB6),
        (0x16AF0, 0x16AF4), (0x16B30, 0x16B36), (0x16F51, 0x16F7E), (0x16F8F, 0x16F92), (0x1BC9D, 0x1BC9E),
        (0x1D165, 0x1D169), (0x1D16D, 0x1D172), (0x1D17B, 0x1D182), (0x1D185, 0x1D18B), (0x1D1AA, 0x1D1AD),
        (0x1D242, 0x1D244), (0x1DA00, 0x1DA36), (0x1DA3B, 0x1DA6C), (0x1DA75, 0x1DA75), (0x1DA84, 0x1DA84),
        (0x1DA9B, 0x1DA9F), (0x1DAA1, 0x1DAAF), (0x1E000, 0x1E006), (0x1E008, 0x1E018), (0x1E01B, 0x1E021),
        (0x1E023, 0x1E024), (0x1E026, 0x1E02A), (0x1E8D0, 0x1E8D6), (0x1E944, 0x1E94A), (0xE0100, 0xE01EF),
    ]
    /// Characters `tokenizers`' normalization tables (an older Unicode) leave unchanged but this
    /// toolchain's NFD/NFKD/NFKC would map: kept as they are.
    static let normalizationStable: [(UInt32, UInt32)] = [
        (0x32FF, 0x32FF), (0xA7F2, 0xA7F4), (0xAB69, 0xAB69), (0x10781, 0x10785), (0x10787, 0x107B0),
        (0x107B2, 0x107BA), (0x11938, 0x11938), (0x1E030, 0x1E06D), (0x1F16C, 0x1F16C), (0x1FBF0, 0x1FBF9),
    ]

    @inline(__always)
    static func inRanges(_ c: UInt32, _ r: [(UInt32, UInt32)]) -> Bool {
        var lo = 0, hi = r.count
        while lo < hi {
            let mid = (lo + hi) >> 1
            if r[mid].1 < c { lo = mid + 1 } else { hi = mid }
        }
        return lo < r.count && r[lo].0 <= c
    }

    /// Classes for the GPT-2 pattern: letter, number, whitespace, other.
    enum Class: UInt8 { case letter, number, space, other }

    static let asciiClass: [Class] = (0..<128).map { c -> Class in
        let u = UInt8(c)
        if (u >= 0x41 && u <= 0x5A) || (u >= 0x61 && u <= 0x7A) { return .letter }
        if u >= 0x30 && u <= 0x39 { return .number }
        if u == 0x20 || (u >= 0x09 && u <= 0x0D) { return .space }
        return .other
    }

    @inline(__always)
    static func classify(_ c: UInt32) -> Class {
        if c < 128 { return asciiClass[Int(c)] }
        guard let s = Unicode.Scalar(c) else { return .other }
        let p = s.properties
        if p.isWhitespace { return .space }
        switch p.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            return inRanges(c, onigOther) ? .other : .letter
        case .decimalNumber, .letterNumber, .otherNumber:
            return inRanges(c, onigOther) ? .other : .number
        default: return .other
        }
    }

    /// Rust `char::is_whitespace` (White_Space).
    @inline(__always)
    static func isWhitespace(_ c: UInt32) -> Bool {
        if c < 128 { return c == 0x20 || (c >= 0x09 && c <= 0x0D) }
        return Unicode.Scalar(c)?.properties.isWhitespace ?? false
    }

    /// Rust `char::is_numeric` (general categories Nd, Nl, No).
    @inline(__always)
    static func isNumeric(_ c: UInt32) -> Bool {
        if c < 128 { return c >= 0x30 && c <= 0x39 }
        guard let s = Unicode.Scalar(c) else { return false }
        switch s.properties.generalCategory {
        case .decimalNumber, .letterNumber, .otherNumber: return true
        default: return false
        }
    }

    /// Rust regex's Unicode `\w`: Alphabetic, marks, decimal numbers, connector punctuation, joiners.
    static func isWord(_ c: UInt32) -> Bool {
        if c < 128 {
            return (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x5F
        }
        if c == 0x200C || c == 0x200D { return true }
        if inRanges(c, notWord) { return false }
        guard let s = Unicode.Scalar(c) else { return false }
        if s.properties.isAlphabetic { return true }
        switch s.properties.generalCategory {
        case .nonspacingMark, .spacingMark, .enclosingMark, .decimalNumber, .connectorPunctuation: return true
        default: return false
        }
    }

    /// Rust `char::is_ascii_punctuation() || is_punctuation()` (general categories P*).
    static func isPunctuation(_ c: UInt32) -> Bool {
        if c < 128 {
            return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) || (c >= 0x5B && c <= 0x60) || (c >= 0x7B && c <= 0x7E)
        }
        if let o = punctuationOverride.first(where: { $0.0 <= c && c <= $0.1 }) { return o.2 }
        guard let s = Unicode.Scalar(c) else { return false }
        switch s.properties.generalCategory {
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation, .initialPunctuation,
             .finalPunctuation, .otherPunctuation: return true
        default: return false
        }
    }

    static func utf8(_ c: UInt32) -> [UInt8] {
        var out: [UInt8] = []
        appendUTF8(&out, c)
        return out
    }
}

/// Rust's `String::from_utf8_lossy`: each maximal invalid subpart becomes one U+FFFD.
/// Swift's UTF-8 decoder repairs the same way (Unicode's "maximal subpart" practice).
func lossyString(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }

/// Replaces every non-overlapping occurrence of `pattern` (scanning left to right) in `s`.
func replaceBytes(_ s: [UInt8], _ pattern: [UInt8], _ content: [UInt8]) -> [UInt8] {
    guard !pattern.isEmpty, s.count >= pattern.count, s.contains(pattern[0]) else { return s }
    var out: [UInt8] = []
    out.reserveCapacity(s.count + s.count / 4)
    let n = s.count, m = pattern.count
    let p0 = pattern[0]
    var i = 0
    s.withUnsafeBufferPointer { sb in
        pattern.withUnsafeBufferPointer { pb in
            while i < n {
                if sb[i] == p0 && i + m <= n {
                    var j = 1
                    while j < m && sb[i + j] == pb[j] { j += 1 }
                    if j == m {
                        out.append(contentsOf: content)
                        i += m
                        continue
                    }
                }
                out.append(sb[i])
                i += 1
            }
        }
    }
    return out
}
