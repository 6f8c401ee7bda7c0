// Memory-lean training state (`state_dtype` bf16): Adam with bfloat16 moments rounded
// stochastically, against a float reference, and a TesseraQ run with it.

import Foundation
import Testing
import TQKernels
@testable import TesseraQ

private func bf16(_ h: UInt16) -> Float { Float(bitPattern: UInt32(h) << 16) }

@Suite(.serialized) struct LeanStateTests {
    /// One step: p moves exactly as float32 Adam on the decoded moments; each stored moment is one of
    /// the two bfloat16 neighbours of its float value, and on average the value itself (unbiased);
    /// the result is the same at 1 and 2 threads.
    @Test func adamBF16StepMatchesTheReference() {
        var rng = TestRNG(3)
        let n = 200_003
        let p0 = rng.floats(n), g = rng.floats(n, -0.1, 0.1)
        let m0 = rng.floats(n, -0.01, 0.01).map { v -> UInt16 in UInt16(truncatingIfNeeded: v.bitPattern >> 16) }
        let v0 = rng.floats(n, 0, 1e-3).map { v -> UInt16 in UInt16(truncatingIfNeeded: v.bitPattern >> 16) }
        let lr: Float = 1e-2, wd: Float = 1e-4, t = 7
        var results: [([Float], [UInt16], [UInt16])] = []
        for threads: Int32 in [1, 2] {
            let old = tqk_get_num_threads()
            tqk_set_num_threads(threads)
            var p = p0, m = m0, v = v0
            tqk_adam_bf16(&p, g, &m, &v, Int64(n), lr, 0.9, 0.999, 1e-8, wd, Int64(t), 42)
            tqk_set_num_threads(old)
            results.append((p, m, v))
        }
        #expect(results[0].0 == results[1].0 && results[0].1 == results[1].1 && results[0].2 == results[1].2)
        let (p, m, v) = results[0]
        let bc1 = 1 - pow(Double(Float(0.9)), Double(t)), bc2 = 1 - pow(Double(Float(0.999)), Double(t))   // as the kernel: float betas
        let step = Float(Double(lr) / bc1), rs2 = Float(1 / bc2.squareRoot())
        var pMiss = 0, bracketMiss = 0
        var sumStored = 0.0, sumFloat = 0.0
        for i in 0..<n {
            let gi = g[i] + wd * p0[i]
            let mi = 0.9 * bf16(m0[i]) + (1 - 0.9) * gi
            let vi = 0.999 * bf16(v0[i]) + (1 - 0.999) * (gi * gi)
            let pi = p0[i] - (step * mi) / (vi.squareRoot() * rs2 + 1e-8)
            if p[i] != pi { pMiss += 1 }
            for (stored, exact) in [(m[i], mi), (v[i], vi)] {
                let down = UInt16(truncatingIfNeeded: exact.bitPattern >> 16)
                if stored != down && stored != down &+ 1 && bf16(stored) != exact { bracketMiss += 1 }
            }
            sumStored += Double(bf16(v[i])); sumFloat += Double(vi)
        }
        #expect(pMiss == 0 && bracketMiss == 0)
        #expect(abs(sumStored - sumFloat) / sumFloat < 2e-4, "stochastic rounding is biased: \(sumStored) vs \(sumFloat)")
    }

    /// 2000 steps of a constant gradient: v approaches g^2 as in float32 (round-to-nearest would
    /// stop it where 0.1% of v falls under half of bfloat16's spacing).
    @Test func bf16MomentsDoNotStagnate() {
        let n = 4096
        var p32 = [Float](repeating: 0, count: n), p16 = p32
        let g = [Float](repeating: 0.05, count: n)
        var m32 = [Float](repeating: 0, count: n), v32 = m32
        var m16 = [UInt16](repeating: 0, count: n), v16 = m16
        for t in 1...2000 {
            tqk_adam(&p32, g, &m32, &v32, Int64(n), 0, 0.9, 0.999, 1e-8, 0, Int64(t))
            tqk_adam_bf16(&p16, g, &m16, &v16, Int64(n), 0, 0.9, 0.999, 1e-8, 0, Int64(t), 9)
        }
        let mean16 = v16.reduce(0.0) { $0 + Double(bf16($1)) } / Double(n)
        #expect(abs(mean16 - Double(v32[0])) / Double(v32[0]) < 0.01, "bf16 v \(mean16) vs float \(v32[0])")
    }

    /// TesseraQ W2 on stories260K with the lean state lands within 5% of the float32 state's perplexity
    /// (a different rounding noise, not a different method); the key is validated.
    @Test func leanStateRunMatchesFloatState() throws {
        let model = try LlamaModel(directory: Fixtures.model("stories260K"))
        let tokens = try Fixtures.storiesTokens("valid")
        var ppl: [Double] = []
        for state in ["f32", "bf16"] {
            let out = temporaryDirectory("lean-\(state)") + "/q"
            let config = try QuantizeConfig.parse(#"{"method": "tesseraq", "bits": 2, "group_size": 32, "preset": "ci", "init": "rtn", "iters": 8, "state_dtype": "\#(state)"}"#)
            let report = try quantizeModel(model, config: config, outDir: out, calibration: tokens)
            #expect((report["options"] as? [String: Any])?["state_dtype"] as? String == state)
            ppl.append(try perplexity(LlamaModel(directory: out)))
        }
        #expect(abs(ppl[1] - ppl[0]) / ppl[0] < 0.05, "bf16 state \(ppl[1]) vs f32 \(ppl[0])")
        #expect(throws: TQError.self) { try QuantizeConfig.parse(#"{"method": "tesseraq", "state_dtype": "f16"}"#) }
    }
}
