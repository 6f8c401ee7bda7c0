import Foundation
import Testing
@testable import TesseraQ

/// The sampler's filters against a plain reference computed here, its determinism and its rules.
@Suite struct SamplerTests {
    static func logits(_ n: Int, seed: UInt64) -> [Float] {
        var rng = TestRNG(seed)
        return rng.floats(n, -4, 4)
    }

    static func sample(_ s: Sampler, _ l: [Float]) throws -> UInt32 {
        try l.withUnsafeBufferPointer { try s.sample($0) }
    }

    /// Tokens a sampler may return: the top-k by logit (lower id first among equals), then the smallest
    /// prefix of them by probability (temperature applied) whose mass reaches top_p.
    static func support(_ l: [Float], temperature: Float, topK: Int, topP: Float) -> Set<Int> {
        var order = Array(l.indices).sorted { l[$0] > l[$1] || (l[$0] == l[$1] && $0 < $1) }
        if topK > 0 { order = Array(order.prefix(topK)) }
        let w = order.map { exp(Double(l[$0] - l[order[0]]) / Double(temperature)) }
        let total = w.reduce(0, +)
        var kept: [Int] = [], mass = 0.0
        for (k, id) in order.enumerated() where mass < Double(topP) {
            kept.append(id)
            mass += w[k] / total
        }
        return Set(kept)
    }

    @Test func greedyIsArgmaxLowestOnTies() throws {
        let s = try Sampler()
        let l = Self.logits(300, seed: 1)
        #expect(try Self.sample(s, l) == UInt32(l.indices.max { l[$0] < l[$1] }!))
        #expect(try Self.sample(s, [0, 3, 1, 3]) == 1)
    }

    @Test func topK1IsGreedy() throws {
        let s = try Sampler(temperature: 1.5, topK: 1, seed: 9)
        for seed in 0..<20 as Range<UInt64> {
            let l = Self.logits(100, seed: seed)
            #expect(try Self.sample(s, l) == Sampler.argmax(l))
        }
    }

    @Test func seededReproducible() throws {
        let l = (0..<50).map { Self.logits(64, seed: UInt64($0)) }
        func run(_ seed: UInt64) throws -> [UInt32] {
            let s = try Sampler(temperature: 0.9, topK: 20, topP: 0.95, repetitionPenalty: 1.1, seed: seed)
            return try l.map { try Self.sample(s, $0) }
        }
        #expect(try run(42) == run(42))
        #expect(try run(42) != run(43))
        let s = try Sampler(temperature: 0.9, topK: 20, topP: 0.95, repetitionPenalty: 1.1, seed: 42)
        let first = try l.map { try Self.sample(s, $0) }
        s.reset()
        #expect(try l.map { try Self.sample(s, $0) } == first)
    }

    @Test(arguments: [(Float(1), 10, Float(1)), (0.7, 0, 0.5), (1.3, 25, 0.8), (0.5, 3, 0.99)])
    func filtersRestrictTheSupport(_ settings: (Float, Int, Float)) throws {
        let (t, k, p) = settings
        let s = try Sampler(temperature: t, topK: k, topP: p, seed: 3)
        var seen = Set<Int>()
        for seed in 0..<400 as Range<UInt64> {
            let l = Self.logits(40, seed: seed % 4)
            let token = Int(try Self.sample(s, l))
            #expect(Self.support(l, temperature: t, topK: k, topP: p).contains(token))
            if seed % 4 == 0 { seen.insert(token) }
        }
        // Sampling (not greedy): more than one token of the support comes up.
        #expect(seen.count > 1)
    }

    @Test func repetitionPenaltyRule() throws {
        // Token 0 leads; penalised (positive: divided by 2) it falls below token 1.
        let s = try Sampler(repetitionPenalty: 2)
        s.accept(0)
        #expect(try Self.sample(s, [3, 2, -1]) == 1)
        // A negative logit is multiplied: -1 * 2 = -2 falls below token 2's -1.5.
        let n = try Sampler(repetitionPenalty: 2)
        n.accept(0)
        #expect(try Self.sample(n, [-1, -3, -1.5]) == 2)
        // The sampled token joins the history: the next identical row picks the runner-up.
        let r = try Sampler(repetitionPenalty: 10)
        #expect(try Self.sample(r, [5, 4, 0]) == 0)
        #expect(try Self.sample(r, [5, 4, 0]) == 1)
        r.reset()
        #expect(r.history.isEmpty)
    }

    @Test func badSettingsRefused() {
        #expect(throws: TQError.self) { try Sampler(temperature: .nan) }
        #expect(throws: TQError.self) { try Sampler(topP: 0) }
        #expect(throws: TQError.self) { try Sampler(repetitionPenalty: 0) }
        #expect(throws: TQError.self) { try Self.sample(try Sampler(), [1, .nan]) }
    }
}
