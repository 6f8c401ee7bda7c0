/// A small, fast, seedable generator (SplitMix64), so calibration windows and batches are the
/// same on every machine for a given seed.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A generator for a sub-task (block, round) that does not depend on what ran before,
    /// so a resumed run draws exactly what an uninterrupted one did.
    public static func derived(_ seed: UInt64, _ parts: Int...) -> SeededGenerator {
        var g = SeededGenerator(seed: seed)
        for p in parts { g = SeededGenerator(seed: g.next() ^ UInt64(truncatingIfNeeded: p &* 0x51_7CC1_B727_220A)) }
        return g
    }
}

/// How calibration windows are taken from the tokens (config key `calib_windows`).
public enum CalibrationWindowOrder: String, Sendable {
    /// `n` windows at seeded random offsets (the default).
    case random
    /// The first `n` consecutive windows: tokens[0..<L], tokens[L..<2L], ...; for windows cut
    /// elsewhere, e.g. the same windows fed to another quantizer.
    case sequential
}

/// `n` windows of `length` tokens, concatenated: at random offsets of `tokens` (as the
/// reference's `random.randint(0, len - length - 1)`), or the first `n` consecutive ones.
public func calibrationWindows(_ tokens: [UInt32], samples n: Int, length: Int, seed: UInt64,
                               order: CalibrationWindowOrder = .random) throws -> [UInt32] {
    if order == .sequential {
        guard tokens.count >= n * length else {
            throw TQError.invalid("calib_windows \"sequential\" needs n_samples x seq_len = \(n * length) tokens (got \(tokens.count))")
        }
        return Array(tokens[0..<(n * length)])
    }
    guard tokens.count > length else {
        throw TQError.invalid("calibration needs more than seq_len = \(length) tokens (got \(tokens.count))")
    }
    var rng = SeededGenerator(seed: seed)
    var out: [UInt32] = []
    out.reserveCapacity(n * length)
    for _ in 0..<n {
        let start = Int.random(in: 0..<(tokens.count - length), using: &rng)
        out.append(contentsOf: tokens[start..<(start + length)])
    }
    return out
}
