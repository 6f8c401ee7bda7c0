// GPTQ: the factorisation kernels and the column loop against naive Swift references, a single
// linear against RTN (with and without act-order, through the packed reader), and whole-model
// runs on stories260K.

import Foundation
import Testing
import TQKernels
@testable import TesseraQ

// MARK: - naive references

/// A = B B^T / m + 0.05 I, B [n x m] uniform: symmetric positive definite, moderately conditioned.
private func randomSPD(_ n: Int, seed: UInt64) -> [Double] {
    var rng = SeededGenerator(seed: seed)
    let m = n + 7
    let b = (0..<(n * m)).map { _ in Double.random(in: -1...1, using: &rng) }
    var a = [Double](repeating: 0, count: n * n)
    for i in 0..<n {
        for j in 0..<n {
            var s = 0.0
            for k in 0..<m { s += b[i * m + k] * b[j * m + k] }
            a[i * n + j] = s / Double(m) + (i == j ? 0.05 : 0)
        }
    }
    return a
}

/// Cholesky-Banachiewicz, lower; nil when not positive definite.
private func naiveCholesky(_ a: [Double], _ n: Int) -> [Double]? {
    var l = [Double](repeating: 0, count: n * n)
    for i in 0..<n {
        for j in 0...i {
            var s = a[i * n + j]
            for k in 0..<j { s -= l[i * n + k] * l[j * n + k] }
            if i == j {
                guard s > 0 else { return nil }
                l[i * n + i] = s.squareRoot()
            } else {
                l[i * n + j] = s / l[j * n + j]
            }
        }
    }
    return l
}

/// Gauss-Jordan inverse with partial pivoting.
private func naiveInverse(_ a: [Double], _ n: Int) -> [Double] {
    var m = a, inv = [Double](repeating: 0, count: n * n)
    for i in 0..<n { inv[i * n + i] = 1 }
    for c in 0..<n {
        let p = (c..<n).max { abs(m[$0 * n + c]) < abs(m[$1 * n + c]) }!
        if p != c {
            for j in 0..<n { m.swapAt(p * n + j, c * n + j); inv.swapAt(p * n + j, c * n + j) }
        }
        let d = m[c * n + c]
        for j in 0..<n { m[c * n + j] /= d; inv[c * n + j] /= d }
        for r in 0..<n where r != c {
            let f = m[r * n + c]
            if f == 0 { continue }
            for j in 0..<n { m[r * n + j] -= f * m[c * n + j]; inv[r * n + j] -= f * inv[c * n + j] }
        }
    }
    return inv
}

private func maxAbsDiff<A: BinaryFloatingPoint, B: BinaryFloatingPoint>(_ a: [A], _ b: [B]) -> Double {
    zip(a, b).reduce(0.0) { max($0, abs(Double($1.0) - Double($1.1))) }
}

private func maxAbs<A: BinaryFloatingPoint>(_ a: [A]) -> Double { a.reduce(0.0) { max($0, abs(Double($1))) } }

private func withThreads<R>(_ n: Int32, _ body: () throws -> R) rethrows -> R {
    let old = tqk_get_num_threads()
    tqk_set_num_threads(n)
    defer { tqk_set_num_threads(old) }
    return try body()
}

/// Correlated inputs X [rows x n]: a few shared factors plus noise, columns on very different scales.
private func correlatedInputs(rows: Int, n: Int, seed: UInt64) -> [Float] {
    var rng = SeededGenerator(seed: seed)
    let factors = 6
    let mix = (0..<(factors * n)).map { _ in Float.random(in: -1...1, using: &rng) }
    let colScale = (0..<n).map { _ in Float(exp(Double.random(in: -1.5...1.5, using: &rng))) }
    var x = [Float](repeating: 0, count: rows * n)
    for r in 0..<rows {
        let f = (0..<factors).map { _ in Float.random(in: -1...1, using: &rng) }
        for j in 0..<n {
            var v = Float.random(in: -0.3...0.3, using: &rng)
            for k in 0..<factors { v += f[k] * mix[k * n + j] }
            x[r * n + j] = v * colScale[j]
        }
    }
    return x
}

/// H = 2 X^T X / rows through the library's kernels, and its damped inverse factor.
private func hessianAndFactor(_ x: [Float], rows: Int, n: Int, damp: Double = 0.01) -> (h: [Float], u: [Float]) {
    var h = [Float](repeating: 0, count: n * n)
    tqk_gptq_accumulate(&h, x, Int64(rows), Int64(n))
    _ = tqk_gptq_hessian_finish(&h, Int64(n), Float(2.0 / Double(rows)), nil)
    let mean = (0..<n).reduce(0.0) { $0 + Double(h[$1 * n + $1]) } / Double(n)
    var u = [Float](repeating: 0, count: n * n)
    #expect(tqk_gptq_inverse_factor(h, Int64(n), damp * mean, nil, &u) == 0)
    return (h, u)
}

/// GPTQ written out plainly: column by column, every later column updated at once (no lazy
/// batches); each group's grid from the updated weights through tqk_quant_grid.
private func naiveGPTQ(_ w0: [Float], out: Int, n: Int, u: [Float], spec: QuantSpec)
    -> (codes: [UInt8], scales: [Float], zeros: [UInt8], loss: Double) {
    var w = w0
    let g = spec.group(forInput: n), nG = (n + g - 1) / g, qmax = Float(spec.qmax)
    var codes = [UInt8](repeating: 0, count: out * n)
    var scales = [Float](repeating: 0, count: nG * out), zeros = [UInt8](repeating: 0, count: nG * out)
    var s = [Float](repeating: 0, count: out), z = [UInt8](repeating: 0, count: out)
    var loss = 0.0
    for i in 0..<n {
        if i % g == 0 {
            let gl = min(g, n - i)
            var block = [Float](repeating: 0, count: out * gl)
            for o in 0..<out { for c in 0..<gl { block[o * gl + c] = w[o * n + i + c] } }
            tqk_quant_grid(block, Int64(out), Int64(gl), Int64(gl), Int32(spec.bits), spec.sym ? 1 : 0, &s, &z)
            for o in 0..<out { scales[(i / g) * out + o] = s[o]; zeros[(i / g) * out + o] = z[o] }
        }
        let d = u[i * n + i]
        for o in 0..<out {
            let q = min(max((w[o * n + i] / s[o]).rounded(.toNearestOrEven) + Float(z[o]), 0), qmax)
            codes[o * n + i] = UInt8(q)
            let wq = Float(Int(q) - Int(z[o])) * s[o]
            let err = (w[o * n + i] - wq) / d
            loss += Double(w[o * n + i] - wq) * Double(w[o * n + i] - wq) / (Double(d) * Double(d))
            for j in (i + 1)..<max(n, i + 1) { w[o * n + j] -= err * u[i * n + j] }
        }
    }
    return (codes, scales, zeros, loss / 2)
}

/// sum over rows of ||x W^T - x W_hat^T||^2.
private func outputError(_ x: [Float], rows: Int, n: Int, _ w: [Float], _ wHat: [Float], out: Int) throws -> Double {
    let diff = zip(w, wHat).map { $0 - $1 }
    var y = [Float](repeating: 0, count: rows * out)
    tqk_sgemm(0, 1, Int64(rows), Int64(out), Int64(n), 1, x, Int64(n), diff, Int64(n), 0, &y, Int64(out))
    return y.reduce(0.0) { $0 + Double($1) * Double($1) }
}

// MARK: - kernels

@Suite(.serialized) struct GPTQKernelTests {
    @Test(arguments: [1, 5, 64, 70, 150])
    func choleskyAndInverseMatchNaive(n: Int) throws {
        let a = randomSPD(n, seed: UInt64(n))
        let lRef = try #require(naiveCholesky(a, n))
        let invRef = naiveInverse(a, n)
        for threads: Int32 in [1, 2] {
            try withThreads(threads) {
                var l = a
                #expect(tqk_cholesky_f64(&l, Int64(n)) == 0)
                #expect(maxAbsDiff(l, lRef) <= 1e-12 * maxAbs(lRef), "L, n \(n), \(threads) threads")
                var inv = l
                tqk_cholesky_inverse_f64(&inv, Int64(n))
                #expect(maxAbsDiff(inv, invRef) <= 1e-9 * maxAbs(invRef), "inverse, n \(n), \(threads) threads")
                // The float path (H given in float, as the method has it): U^T U = H^-1, U upper.
                let hf = a.map { Float($0) }
                let invF = naiveInverse(hf.map { Double($0) }, n)
                let uF = try #require(naiveCholesky(invF, n))
                var u = [Float](repeating: .nan, count: n * n)
                #expect(tqk_gptq_inverse_factor(hf, Int64(n), 0, nil, &u) == 0)
                let uT = (0..<(n * n)).map { uF[($0 % n) * n + $0 / n] }
                #expect(maxAbsDiff(u, uT) <= 1e-5 * maxAbs(uT), "U, n \(n), \(threads) threads")
                #expect((0..<n).allSatisfy { i in (0..<i).allSatisfy { u[i * n + $0] == 0 } })
                // With a permutation and a damp: the factor of P^T (H + d I) P.
                var rng = SeededGenerator(seed: 77)
                let perm = (0..<n).shuffled(using: &rng)
                var hp = [Double](repeating: 0, count: n * n)
                for i in 0..<n { for j in 0..<n { hp[i * n + j] = Double(hf[perm[i] * n + perm[j]]) + (i == j ? 0.3 : 0) } }
                let up = try #require(naiveCholesky(naiveInverse(hp, n), n))
                #expect(tqk_gptq_inverse_factor(hf, Int64(n), 0.3, perm.map { Int64($0) }, &u) == 0)
                let upT = (0..<(n * n)).map { up[($0 % n) * n + $0 / n] }
                #expect(maxAbsDiff(u, upT) <= 1e-5 * maxAbs(upT), "permuted U, n \(n), \(threads) threads")
            }
        }
    }

    @Test func notPositiveDefiniteIsReported() throws {
        let n = 80
        var a = randomSPD(n, seed: 5)
        a[70 * n + 70] = -1
        #expect(tqk_cholesky_f64(&a, Int64(n)) == 71)
        var h = randomSPD(n, seed: 5).map { Float($0) }
        h[3 * n + 3] = -1
        var u = [Float](repeating: 0, count: n * n)
        #expect(tqk_gptq_inverse_factor(h, Int64(n), 0, nil, &u) == 4)
        #expect(tqk_gptq_inverse_factor(h, Int64(n), 2, nil, &u) == 0)
        // The method raises damp step by step and gives up, naming the layer, before damp reaches 1.
        #expect { try GPTQSolver(hessian: FloatBuffer(h), n: n, tokens: 2, damp: 0.01, actOrder: false, name: "layer x") } throws: {
            ($0 as? TQError)?.message.contains("layer x: the Hessian is not positive definite") == true
        }
    }

    @Test func deadInputsGetUnitDiagonal() throws {
        let n = 5
        var h = [Float](repeating: 0, count: n * n)
        for i in [0, 2, 3] { h[i * n + i] = 4; h[i * n + (i + 1) % n] = 1; h[((i + 1) % n) * n + i] = 1 }
        h[4 * n + 4] = 0; h[1 * n + 1] = 0
        h[0 * n + 1] = 0; h[1 * n + 0] = 0
        var dead = [UInt8](repeating: 9, count: n)
        #expect(tqk_gptq_hessian_finish(&h, Int64(n), 0.5, &dead) == 2)
        #expect(dead == [0, 1, 0, 0, 1])
        #expect(h[1 * n + 1] == 1 && h[4 * n + 4] == 1 && h[0] == 2 && h[2 * n + 3] == 0.5)
    }

    struct LoopCase: Sendable, CustomTestStringConvertible {
        let bits: Int, group: Int, block: Int, sym: Bool
        var testDescription: String { "W\(bits) g\(group) block \(block)\(sym ? " sym" : "")" }
    }

    /// The lazy-batched C loop gives exactly the codes and grids of the plain algorithm, with
    /// groups that straddle lazy blocks, partial last groups and per-channel grids.
    @Test(arguments: [LoopCase(bits: 3, group: 8, block: 5, sym: false), LoopCase(bits: 2, group: 12, block: 16, sym: false),
                      LoopCase(bits: 4, group: -1, block: 7, sym: false), LoopCase(bits: 3, group: 10, block: 128, sym: true),
                      LoopCase(bits: 2, group: 6, block: 1, sym: false), LoopCase(bits: 8, group: 16, block: 16, sym: false)])
    func columnLoopMatchesNaive(_ c: LoopCase) throws {
        let out = 7, n = 43, rows = 300
        let x = correlatedInputs(rows: rows, n: n, seed: 11)
        let (_, u) = hessianAndFactor(x, rows: rows, n: n)
        var rng = SeededGenerator(seed: 12)
        let w0 = (0..<(out * n)).map { _ in Float.random(in: -0.1...0.1, using: &rng) }
        let spec = QuantSpec(bits: c.bits, groupSize: c.group, sym: c.sym)
        let ref = naiveGPTQ(w0, out: out, n: n, u: u, spec: spec)
        let g = spec.group(forInput: n), nG = (n + g - 1) / g
        for threads: Int32 in [1, 2] {
            try withThreads(threads) {
                var w = w0
                var codes = [UInt8](repeating: 0, count: out * n), zeros = [UInt8](repeating: 0, count: nG * out)
                var scales = [Float](repeating: 0, count: nG * out)
                let loss = tqk_gptq_quantize(&w, Int64(out), Int64(n), u, Int64(g), Int32(c.bits), c.sym ? 1 : 0, Int64(c.block),
                                             &codes, &scales, &zeros)
                #expect(codes == ref.codes, "\(c), \(threads) threads: \(zip(codes, ref.codes).filter { $0 != $1 }.count) codes differ")
                #expect(scales == ref.scales)
                #expect(zeros == ref.zeros)
                #expect(abs(loss - ref.loss) <= 1e-4 * ref.loss)
                // W comes back as the dequantised weights of the exported grid.
                let q = QuantizedLinear(out: out, inFeatures: n, spec: spec, codes: codes, scales: scales, zeros: zeros)
                let dequantized = try q.dequantized().array
                #expect(w == dequantized)
            }
        }
    }
}

// MARK: - one linear

@Suite struct GPTQLinearTests {
    @Test(arguments: [false, true])
    func beatsRTNOnCorrelatedInputs(actOrder: Bool) throws {
        let out = 48, n = 160, rows = 2048, spec = QuantSpec(bits: 3, groupSize: 32)
        let x = correlatedInputs(rows: rows, n: n, seed: 21)
        var rng = SeededGenerator(seed: 22)
        let w = try FloatBuffer((0..<(out * n)).map { _ in Float.random(in: -0.1...0.1, using: &rng) })
        let h = try FloatBuffer(count: n * n)
        tqk_gptq_accumulate(h.p, x, Int64(rows), Int64(n))
        let diag = (0..<n).map { h.p[$0 * n + $0] }
        let solver = try GPTQSolver(hessian: h, n: n, tokens: rows, damp: 0.01, actOrder: actOrder, name: "test")
        let (q, proxy) = try solver.quantize(w.p, out: out, spec: spec, blockSize: 128)
        let rtn = QuantizedLinear.roundToNearest(w.p, out: out, inFeatures: n, spec: spec)
        let eG = try outputError(x, rows: rows, n: n, w.array, try q.dequantized().array, out: out)
        let eR = try outputError(x, rows: rows, n: n, w.array, try rtn.dequantized().array, out: out)
        print("single linear W3 g32, act_order \(actOrder): output error GPTQ \(eG), RTN \(eR), ratio \(eG / eR); proxy \(proxy)")
        #expect(eG < 0.8 * eR)
        // The proxy is the output error per token (H = 2 X^T X / tokens), up to the damping.
        #expect(proxy > 0.5 * eG / Double(rows) && proxy < 2 * eG / Double(rows))

        let packed = PackedLinear(name: "model.layers.0.mlp.up_proj", q, groupSize: spec.groupSize)
        if !actOrder {
            #expect(q.gIdx == nil && packed.trivialGIdx)
        } else {
            let g = try #require(q.gIdx)
            // Groups of 32 columns (the last one partial), in descending diag(H) order.
            var counts = [Int](repeating: 0, count: q.nGroups)
            for v in g { counts[Int(v)] += 1 }
            #expect(counts == [32, 32, 32, 32, 32])
            for a in 0..<n { for b in 0..<n where g[a] < g[b] { #expect(diag[a] >= diag[b]) } }
            #expect(!packed.trivialGIdx)
        }
        // The packed reader dequantises exactly the simulated weights, also through a file.
        #expect(try packed.dequantized().array == q.dequantized().array)
        let dir = temporaryDirectory("gptq-linear")
        var writer = SafeTensorsWriter()
        packed.addTensors(to: &writer, zeros: packed.qzeros)
        try writer.write(to: dir + "/model.safetensors")
        let ckpt = try PackedCheckpoint(store: try TensorStore(directory: dir),
                                        quantization: GPTQConfig(bits: 3, groupSize: 32, sym: false, descAct: actOrder))
        let read = try #require(ckpt.linear(named: packed.name))
        #expect(read.gIdx == q.groupIndex)
        #expect(try read.dequantized().array == q.dequantized().array)
        // ... and its GEMM on the packed words gives x W_hat^T.
        var y = [Float](repeating: 0, count: 16 * out), yRef = [Float](repeating: 0, count: 16 * out)
        read.gemm(x, batch: 16, &y)
        let wHat = try q.dequantized()
        tqk_sgemm(0, 1, 16, Int64(out), Int64(n), 1, x, Int64(n), wHat.p, Int64(n), 0, &yRef, Int64(out))
        #expect(maxAbsDiff(y, yRef) <= 1e-4 * maxAbs(yRef))
    }

    @Test func deadInputsAreZeroed() throws {
        let out = 8, n = 40, rows = 256
        var x = correlatedInputs(rows: rows, n: n, seed: 31)
        for r in 0..<rows { x[r * n + 5] = 0; x[r * n + 17] = 0 }
        var rng = SeededGenerator(seed: 32)
        let w = try FloatBuffer((0..<(out * n)).map { _ in Float.random(in: -0.1...0.1, using: &rng) })
        let h = try FloatBuffer(count: n * n)
        tqk_gptq_accumulate(h.p, x, Int64(rows), Int64(n))
        let solver = try GPTQSolver(hessian: h, n: n, tokens: rows, damp: 0.01, actOrder: true, name: "test")
        #expect(solver.deadCount == 2)
        let (q, _) = try solver.quantize(w.p, out: out, spec: QuantSpec(bits: 4, groupSize: 8), blockSize: 16)
        let wq = try q.dequantized()
        for o in 0..<out { #expect(abs(wq.p[o * n + 5]) < 1e-2 && abs(wq.p[o * n + 17]) < 1e-2) }
    }

    /// The Hessian of a linear's inputs, accumulated in chunks, equals X^T X of one forward over every sample.
    @Test func hessianAccumulatesInChunks() throws {
        let (c, block) = try tinyBlock(seed: 41)
        let samples = 5, L = 6
        let cache = try ActivationCache(samples: samples, rowsPerSample: L, width: c.hidden, dtype: .f32)
        var rng = SeededGenerator(seed: 42)
        for s in 0..<samples { cache.write(s, from: (0..<(L * c.hidden)).map { _ in Float.random(in: -1...1, using: &rng) }) }
        let all = try FloatBuffer(count: samples * L * c.hidden)
        cache.gather(Array(0..<samples), into: all.p)
        let work = try BlockWorkspace(config: c, sequences: samples, length: L)
        let y = try FloatBuffer(count: samples * L * c.hidden)
        work.forward(all.p, weights: block, into: y.p)
        for kind in [LinearKind.q, .o, .up, .down] {
            let n = kind.shape(c).in
            let h = try GPTQHessians(config: c, inputs: cache, batch: 2).accumulate(input: kind, weights: block)
            let xs = GPTQHessians.input(of: kind, in: work)
            var ref = [Double](repeating: 0, count: n * n)
            for r in 0..<(samples * L) { for i in 0..<n { for j in 0..<n { ref[i * n + j] += Double(xs[r * n + i]) * Double(xs[r * n + j]) } } }
            #expect(maxAbsDiff(h.array, ref) <= 1e-4 * maxAbs(ref), "\(kind)")
        }
    }

    @Test(arguments: [
        (#"{"method": "gptq", "damp": -0.1}"#, "damp"), (#"{"method": "gptq", "damp": 1.5}"#, "damp"),
        (#"{"method": "gptq", "block_size": 0}"#, "block_size"), (#"{"method": "gptq", "act_order": "yes"}"#, "act_order"),
        (#"{"method": "gptq", "preset": "slow"}"#, "preset"), (#"{"method": "gptq", "iters": 3}"#, "iters"),
        (#"{"method": "gptq", "batch": 9, "n_samples": 4}"#, "batch"), (#"{"method": "rtn", "damp": 0.01}"#, "damp"),
    ])
    func rejectsBadGPTQKeys(json: String, key: String) {
        #expect { try QuantizeConfig.parse(json) } throws: { ($0 as? TQError)?.message.contains(key) == true }
    }

    @Test func parsesGPTQKeys() throws {
        let c = try QuantizeConfig.parse(#"{"method": "gptq", "bits": 3, "preset": "ci", "damp": 0.05, "block_size": 32, "act_order": true}"#)
        let o = try GPTQOptions(options: c.options)
        #expect(o.damp == 0.05 && o.blockSize == 32 && o.actOrder && o.calibration == GPTQOptions.ci.calibration)
        #expect(c.descAct)
        let d = try GPTQOptions(options: [:])
        #expect(d == GPTQOptions.paper && d.calibration.nSamples == 128 && d.calibration.seqLen == 2048 && d.damp == 0.01)
        #expect(try !QuantizeConfig.parse(#"{"method": "gptq"}"#).descAct)
    }
}

// MARK: - stories260K

func runGPTQ(bits: Int, group: Int, actOrder: Bool, extra: [String: JSONValue] = [:], out: String? = nil,
             progress: QuantProgressHandler? = nil) throws -> (String, [String: Any]) {
    try runCalibrated("gptq", bits: bits, group: group, extra: ["act_order": .bool(actOrder)].merging(extra) { $1 },
                      out: out, progress: progress)
}

@Suite(.serialized)
struct GPTQPipelineTests {
    @Test(arguments: [2, 3])
    func beatsRTNOnStories(bits: Int) throws {
        let fp = try perplexity(try LlamaModel(directory: Fixtures.model("stories260K")))
        let (_, rtn) = try quantizeStories(QuantSpec(bits: bits, groupSize: 32))
        let pRTN = try perplexity(try LlamaModel(directory: rtn))
        var ppl: [Bool: Double] = [:]
        for actOrder in [false, true] {
            let (dir, report) = try runGPTQ(bits: bits, group: 32, actOrder: actOrder)
            let blocks = report["blocks"] as! [[String: Any]]
            #expect(blocks.count == 5)
            for b in blocks {
                let e = b["gptq_error"] as! Double
                #expect(e.isFinite && e > 0)
                #expect((b["gptq_errors"] as! [String: Double]).count == 7)
                #expect((b["final_loss"] as! Double) < (b["rtn_loss"] as! Double), "block \(b["block"]!)")
            }
            let ckpt = try PackedCheckpoint(directory: dir)
            #expect(ckpt.quantization == GPTQConfig(bits: bits, groupSize: 32, sym: false, descAct: actOrder))
            #expect(ckpt.linears.contains { !$0.trivialGIdx } == actOrder)
            ppl[actOrder] = try perplexity(try LlamaModel(directory: dir))
        }
        print("stories260K W\(bits) g32 perplexity (8 windows of 512; GPTQ ci preset 32 x 128): FP \(fp), RTN \(pRTN), "
              + "GPTQ \(ppl[false]!), GPTQ act_order \(ppl[true]!)")
        #expect(ppl[false]! < pRTN)
        #expect(ppl[true]! < pRTN)
    }

    /// An act-order run killed after three blocks resumes from the persisted blocks (their g_idx
    /// included) to a byte-identical checkpoint.
    @Test(arguments: ["gptq_v2", "gptq"]) func resumeAfterKillIsBitIdentical(format: String) throws {
        // v1 too: the resume state keeps v2 zeros, which must be read back as such.
        let quick: [String: JSONValue] = ["n_samples": .int(8), "format": .string(format)]
        let (full, _) = try runGPTQ(bits: 3, group: 32, actOrder: true, extra: quick)
        let dir = temporaryDirectory("gptq-resume-\(format)") + "/ckpt"
        #expect(throws: TQError.self) {
            try runGPTQ(bits: 3, group: 32, actOrder: true, extra: quick, out: dir) { $0.block < 3 }
        }
        #expect(!FileManager.default.fileExists(atPath: dir))
        #expect(FileManager.default.fileExists(atPath: dir + ".partial/blocks/0002/report.json"))
        var worked: Set<Int> = []
        try runGPTQ(bits: 3, group: 32, actOrder: true, extra: quick, out: dir) { p in
            if p.round > 0 { worked.insert(p.block) }   // finished blocks report round 0
            return true
        }
        #expect(worked == [3, 4], "resumed run quantized blocks \(worked.sorted())")
        #expect(FileManager.default.contentsEqual(atPath: full + "/model.safetensors", andPath: dir + "/model.safetensors"))
    }
}
