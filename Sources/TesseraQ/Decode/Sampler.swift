import Foundation

/// Picks the next token from a logits row. In order: the repetition penalty over the tokens
/// accepted so far (CTRL / llama.cpp rule: a positive logit divided by the penalty, a negative one
/// multiplied), then greedy argmax when temperature <= 0 (lowest id on ties); otherwise logits /
/// temperature, top-k (the k largest; <= 0 off), softmax in double, top-p (the smallest set of most
/// likely tokens whose probability reaches p; >= 1 off), and one draw from a SplitMix64 generator.
/// Ties in the ordering go to the lower id, so the same seed and the same logits give the same
/// tokens. Not thread-safe: a sampler per thread.
public final class Sampler: @unchecked Sendable {
    public let temperature: Float
    public let topK: Int
    public let topP: Float
    public let repetitionPenalty: Float
    public let seed: UInt64
    private var state: UInt64
    /// Tokens accepted so far (the penalty applies once per distinct token).
    public private(set) var history = Set<UInt32>()

    public init(temperature: Float = 0, topK: Int = 0, topP: Float = 1, repetitionPenalty: Float = 1, seed: UInt64 = 0) throws {
        guard temperature.isFinite else { throw TQError.invalid("temperature must be finite (got \(temperature))") }
        guard topP.isFinite, topP > 0 else { throw TQError.invalid("top_p must be in (0, 1] (got \(topP); >= 1 is off)") }
        guard repetitionPenalty.isFinite, repetitionPenalty > 0 else {
            throw TQError.invalid("repetition_penalty must be positive (got \(repetitionPenalty); 1 is off)")
        }
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.repetitionPenalty = repetitionPenalty
        self.seed = seed
        state = seed
    }

    /// Adds a token to the history the repetition penalty reads (prompt tokens, or tokens chosen elsewhere).
    public func accept(_ token: UInt32) { history.insert(token) }

    /// Clears the history and restarts the generator from the seed.
    public func reset() {
        history.removeAll()
        state = seed
    }

    /// SplitMix64 (Steele, Lea, Flood 2014): the next 64 random bits.
    func nextRandom() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Picks a token from `logits` (vocab floats) and accepts it.
    public func sample(_ logits: UnsafeBufferPointer<Float>) throws -> UInt32 {
        guard !logits.isEmpty else { throw TQError.invalid("vocab must be positive") }
        if let bad = logits.firstIndex(where: { $0.isNaN }) { throw TQError(.numeric, "logits[\(bad)] is NaN") }
        var l = Array(logits)
        if repetitionPenalty != 1 {
            for t in history where Int(t) < l.count {
                l[Int(t)] = l[Int(t)] > 0 ? l[Int(t)] / repetitionPenalty : l[Int(t)] * repetitionPenalty
            }
        }
        let token = temperature <= 0 ? Self.argmax(l) : draw(l)
        accept(token)
        return token
    }

    static func argmax(_ l: [Float]) -> UInt32 {
        var best = 0
        for i in 1..<l.count where l[i] > l[best] { best = i }
        return UInt32(best)
    }

    /// Temperature, top-k, softmax, top-p, then one draw.
    private func draw(_ logits: [Float]) -> UInt32 {
        // Most likely first, lower id first among equals.
        var order = Array(0..<logits.count).sorted { logits[$0] > logits[$1] || (logits[$0] == logits[$1] && $0 < $1) }
        if topK > 0, topK < order.count { order.removeLast(order.count - topK) }
        let t = Double(temperature), mx = Double(logits[order[0]]) / t
        var p = order.map { exp(Double(logits[$0]) / t - mx) }
        let total = p.reduce(0, +)
        p = p.map { $0 / total }
        if topP < 1 {
            var cumulative = 0.0, keep = 0
            while keep < p.count, cumulative < Double(topP) {
                cumulative += p[keep]
                keep += 1
            }
            order.removeLast(order.count - keep)
            p.removeLast(p.count - keep)
        }
        let mass = p.reduce(0, +)
        // 53 random bits: a uniform double in [0, 1), scaled to the kept mass.
        let u = Double(nextRandom() >> 11) * 0x1p-53 * mass
        var cumulative = 0.0
        for (k, id) in order.enumerated() {
            cumulative += p[k]
            if u < cumulative { return UInt32(id) }
        }
        return UInt32(order[order.count - 1])
    }
}
