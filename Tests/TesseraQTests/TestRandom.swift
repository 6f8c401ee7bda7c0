import TesseraQ

/// The tests' random numbers: the library's seeded SplitMix64 with float and int helpers, so
/// every failure reproduces.
struct TestRNG {
    var base: SeededGenerator
    init(_ seed: UInt64) { base = SeededGenerator(seed: seed) }
    mutating func next() -> UInt64 { base.next() }
    /// Uniform in [lo, hi).
    mutating func float(_ lo: Float = -1, _ hi: Float = 1) -> Float {
        lo + (hi - lo) * Float(next() >> 40) / Float(1 << 24)
    }
    mutating func floats(_ n: Int, _ lo: Float = -1, _ hi: Float = 1) -> [Float] {
        (0..<n).map { _ in float(lo, hi) }
    }
    mutating func int(_ n: Int) -> Int { Int(next() % UInt64(n)) }
}
