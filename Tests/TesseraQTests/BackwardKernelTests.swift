// Training kernels (backward passes, TesseraQ fake quantisation, Adam) against finite differences
// and naive Swift references, at 1 and 2 OpenMP threads.
//
// Gradient checks: a random scalar objective L = sum(R * f(x)) with a fixed random R, analytic
// gradients from the backward kernel, central differences of the float32 forward kernel (L summed
// in double). Whole gradient vectors are compared by relative L2 error; every check also verifies
// that a 5% wrong gradient fails the same comparison, so the tolerance is known to bite.

import Foundation
import Testing
import TQKernels

// MARK: - helpers


private let bwdThreadCounts: [Int32] = [1, 2]

/// Runs `body` once per thread count, then leaves the count at 2 (the suite's default).
private func forEachThreadCount(_ body: (Int32) throws -> Void) rethrows {
    defer { tqk_set_num_threads(2) }
    for n in bwdThreadCounts {
        tqk_set_num_threads(n)
        try body(n)
    }
}

private func dotD(_ a: [Float], _ b: [Float]) -> Double {
    var s = 0.0
    for i in a.indices { s += Double(a[i]) * Double(b[i]) }
    return s
}

private func norm(_ a: [Double]) -> Double { a.reduce(0) { $0 + $1 * $1 }.squareRoot() }

/// Central differences of `loss` with respect to every entry of x (float steps of size eps; the
/// denominator is the step actually taken after float rounding).
private func numericGrad(_ x: [Float], eps: Float, _ loss: ([Float]) -> Double) -> [Double] {
    var xs = x
    var g = [Double](repeating: 0, count: x.count)
    for i in x.indices {
        let xp = x[i] + eps, xm = x[i] - eps
        xs[i] = xp
        let lp = loss(xs)
        xs[i] = xm
        let lm = loss(xs)
        xs[i] = x[i]
        g[i] = (lp - lm) / (Double(xp) - Double(xm))
    }
    return g
}

/// ||a - n|| / ||n||, with an absolute floor for (near-)zero reference gradients.
private func relErr(_ a: [Float], _ n: [Double], floor: Double = 1e-6) -> Double {
    let diff = zip(a, n).map { Double($0) - $1 }
    return norm(diff) / max(norm(n), floor)
}

/// The gradient check: analytic close to numeric, and a 5% scaled analytic gradient is not.
private func expectGrad(_ a: [Float], _ n: [Double], tol: Double = 1e-2, _ what: String,
                        sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(a.count == n.count, "\(what): size", sourceLocation: sourceLocation)
    #expect(a.allSatisfy { $0.isFinite }, "\(what): non-finite gradient", sourceLocation: sourceLocation)
    let err = relErr(a, n)
    #expect(err < tol, "\(what): relative L2 error \(err)", sourceLocation: sourceLocation)
    if norm(n) > 1e-3 {
        let wrong = relErr(a.map { $0 * 1.05 }, n)
        #expect(wrong > tol, "\(what): a 5% wrong gradient passes (\(wrong))", sourceLocation: sourceLocation)
    }
}

/// Max |a - b| / (|b| + floor) over the arrays.
private func maxRel(_ a: [Float], _ b: [Double], floor: Double) -> Double {
    var m = 0.0
    for i in a.indices { m = max(m, abs(Double(a[i]) - b[i]) / (abs(b[i]) + floor)) }
    return m
}

// Swift mirror of the rectified sigmoid, in float32 exactly as the kernels compute it (no fma).
private func sig(_ x: Float) -> Float { 1 / (1 + exp(-x)) }
private func hRaw(_ x: Float) -> Float { 1.2 * sig(x) - 0.1 }
private func hRect(_ x: Float) -> Float { min(max(hRaw(x), 0), 1) }
private func hGrad(_ x: Float) -> Double {
    let r = hRaw(x), s = Double(sig(x))
    return r > 0 && r < 1 ? 1.2 * s * (1 - s) : 0
}

/// numpy.quantile(x, q) with the default 'linear' method, by a full sort.
private func numpyQuantile(_ x: [Float], _ q: Float) -> Double {
    let s = x.sorted()
    let pos = Double(q) * Double(s.count - 1)
    let k = min(Int(pos.rounded(.down)), s.count - 1)
    let g = pos - Double(k)
    let a = Double(s[k]), b = Double(s[min(k + 1, s.count - 1)])
    return g >= 0.5 ? b - (b - a) * (1 - g) : a + (b - a) * g
}

@Suite("Training kernels: backward passes, fake quantisation, Adam", .serialized)
struct BackwardKernelTests {

    // MARK: RMSNorm

    @Test("rmsnorm_backward: finite differences")
    func rmsnormBackward() {
        var rng = TestRNG(11)
        let rows = 3, dim = 37, eps: Float = 1e-5
        let x = rng.floats(rows * dim), w = rng.floats(dim, 0.5, 1.5), R = rng.floats(rows * dim)
        forEachThreadCount { _ in
            var dx = [Float](repeating: .nan, count: rows * dim)
            tqk_rmsnorm_backward(x, w, R, &dx, Int64(rows), Int64(dim), eps)
            let num = numericGrad(x, eps: 1e-2) { xs in
                var y = [Float](repeating: 0, count: rows * dim)
                tqk_rmsnorm(xs, w, &y, Int64(rows), Int64(dim), eps)
                return dotD(R, y)
            }
            expectGrad(dx, num, "rmsnorm dx")
        }
    }

    @Test("rmsnorm_backward: parallel path matches a double reference, same at 1 and 2 threads")
    func rmsnormBackwardLarge() {
        var rng = TestRNG(12)
        let rows = 48, dim = 1000, eps: Float = 1e-6
        let x = rng.floats(rows * dim, -3, 3), w = rng.floats(dim), dy = rng.floats(rows * dim)
        var ref = [Double](repeating: 0, count: rows * dim)
        for r in 0..<rows {
            var ss = 0.0, c = 0.0
            for i in 0..<dim {
                let xi = Double(x[r * dim + i])
                ss += xi * xi
                c += Double(dy[r * dim + i]) * Double(w[i]) * xi
            }
            let inv = 1 / (ss / Double(dim) + Double(eps)).squareRoot()
            for i in 0..<dim {
                ref[r * dim + i] = inv * Double(w[i]) * Double(dy[r * dim + i])
                    - Double(x[r * dim + i]) * inv * inv * inv * c / Double(dim)
            }
        }
        var results: [[Float]] = []
        forEachThreadCount { _ in
            var dx = [Float](repeating: .nan, count: rows * dim)
            tqk_rmsnorm_backward(x, w, dy, &dx, Int64(rows), Int64(dim), eps)
            #expect(maxRel(dx, ref, floor: 1e-3) < 1e-4)
            results.append(dx)
        }
        #expect(results[0] == results[1])
    }

    // MARK: RoPE

    @Test("rope_backward: exactly the transpose of tqk_rope")
    func ropeBackward() {
        var rng = TestRNG(21)
        let T = 5, H = 3, D = 8, half = D / 2, n = T * H * D
        let invFreq = (0..<half).map { Float(pow(10000.0, -2.0 * Double($0) / Double(D))) }
        var cosT = [Float](repeating: 0, count: T * half), sinT = cosT
        tqk_rope_tables(invFreq, Int64(half), Int64(T), &cosT, &sinT)
        forEachThreadCount { _ in
            // RoPE is linear: its matrix column j is rope(e_j); backward must apply M^T.
            var M = [[Float]]()
            for j in 0..<n {
                var e = [Float](repeating: 0, count: n)
                e[j] = 1
                tqk_rope(&e, Int64(T), Int64(H), Int64(D), cosT, sinT)
                M.append(e)
            }
            let y = rng.floats(n)
            var dx = y
            tqk_rope_backward(&dx, Int64(T), Int64(H), Int64(D), cosT, sinT)
            var worst: Float = 0
            for j in 0..<n {
                var s = 0.0
                for i in 0..<n { s += Double(M[j][i]) * Double(y[i]) }
                worst = max(worst, abs(dx[j] - Float(s)))
            }
            #expect(worst < 1e-6, "max |dx - M^T y| = \(worst)")
            // And rotating back undoes the forward: backward(forward(x)) == x.
            let x = rng.floats(n)
            var z = x
            tqk_rope(&z, Int64(T), Int64(H), Int64(D), cosT, sinT)
            tqk_rope_backward(&z, Int64(T), Int64(H), Int64(D), cosT, sinT)
            #expect(zip(z, x).allSatisfy { abs($0 - $1) < 1e-6 })
        }
    }

    // MARK: attention

    /// `W`: sliding window (0: full causal attention); `cap`: score soft-cap (0: none).
    struct AttnShape: CustomTestStringConvertible, Sendable {
        let T: Int, H: Int, KVH: Int, D: Int
        var W = 0
        var cap: Float = 0
        var testDescription: String { "T\(T) H\(H) KVH\(KVH) D\(D)" + (W > 0 ? " W\(W)" : "") + (cap > 0 ? " cap\(cap)" : "") }
    }

    static let attnShapes: [AttnShape] = [1, 5, 17].flatMap { T in
        [(2, 2), (4, 2), (3, 1)].flatMap { hk in [4, 8].map { D in AttnShape(T: T, H: hk.0, KVH: hk.1, D: D) } }
    } + [AttnShape(T: 5, H: 4, KVH: 2, D: 4, W: 2), AttnShape(T: 17, H: 4, KVH: 2, D: 8, W: 3),
         AttnShape(T: 17, H: 3, KVH: 1, D: 4, W: 16), AttnShape(T: 5, H: 2, KVH: 2, D: 4, W: 1),
         // Soft-capped scores (Gemma 2): caps below the largest scores, so tanh saturates for some keys.
         AttnShape(T: 17, H: 4, KVH: 2, D: 8, cap: 1.5), AttnShape(T: 17, H: 4, KVH: 2, D: 8, W: 5, cap: 0.7),
         AttnShape(T: 5, H: 3, KVH: 1, D: 4, cap: 3)]

    @Test("attention_backward: finite differences", arguments: attnShapes)
    func attentionBackward(_ sh: AttnShape) {
        let (T, H, KVH, D, W, cap) = (sh.T, sh.H, sh.KVH, sh.D, sh.W, sh.cap)
        var rng = TestRNG(UInt64(31 + T * 100 + H * 10 + D + W * 1000 + Int(cap * 10) * 10000))
        let scale = 1 / Float(D).squareRoot()
        let Q = rng.floats(T * H * D, -2, 2), K = rng.floats(T * KVH * D, -2, 2), V = rng.floats(T * KVH * D)
        let R = rng.floats(T * H * D)
        func loss(_ q: [Float], _ k: [Float], _ v: [Float]) -> Double {
            var O = [Float](repeating: 0, count: T * H * D)
            tqk_attention(q, k, v, &O, Int64(T), Int64(H), Int64(KVH), Int64(D), scale, Int64(W), cap)
            return dotD(R, O)
        }
        forEachThreadCount { _ in
            var dQ = [Float](repeating: .nan, count: T * H * D)
            var dK = [Float](repeating: .nan, count: T * KVH * D), dV = dK
            tqk_attention_backward(Q, K, V, R, &dQ, &dK, &dV, Int64(T), Int64(H), Int64(KVH), Int64(D), scale, Int64(W), cap)
            let nQ = numericGrad(Q, eps: 1e-2) { loss($0, K, V) }
            let nK = numericGrad(K, eps: 1e-2) { loss(Q, $0, V) }
            let nV = numericGrad(V, eps: 1e-2) { loss(Q, K, $0) }
            expectGrad(dQ, nQ, "dQ")
            expectGrad(dK, nK, "dK")
            expectGrad(dV, nV, "dV")
            expectGrad(dQ + dK + dV, nQ + nK + nV, "all")
        }
    }

    /// Double-precision reference backward, straight from the formulas; query t sees keys
    /// max(0, t - window + 1) ... t (all of 0 ... t when window is 0); scores soft-capped when cap > 0.
    static func attentionReference(_ Q: [Float], _ K: [Float], _ V: [Float], _ dO: [Float], T: Int, H: Int,
                                   KVH: Int, D: Int, scale: Double, window: Int = 0,
                                   cap: Double = 0) -> ([Double], [Double], [Double]) {
        var dQ = [Double](repeating: 0, count: T * H * D)
        var dK = [Double](repeating: 0, count: T * KVH * D), dV = dK
        let group = H / KVH
        for h in 0..<H {
            let kh = h / group
            for t in 0..<T {
                let q = (t * H + h) * D, lo = window > 0 ? max(0, t - window + 1) : 0
                var p = [Double](repeating: 0, count: t + 1), dp = p, slope = [Double](repeating: 1, count: t + 1)
                for j in lo...t {
                    var s = 0.0
                    for d in 0..<D { s += Double(Q[q + d]) * Double(K[(j * KVH + kh) * D + d]) }
                    p[j] = s * scale
                    if cap > 0 {
                        let th = tanh(p[j] / cap)
                        p[j] = cap * th
                        slope[j] = 1 - th * th
                    }
                }
                let mx = p[lo...t].max()!
                for j in 0...t { p[j] = j < lo ? 0 : exp(p[j] - mx) }
                let sum = p.reduce(0, +)
                p = p.map { $0 / sum }
                var delta = 0.0
                for j in lo...t {
                    for d in 0..<D { dp[j] += Double(dO[q + d]) * Double(V[(j * KVH + kh) * D + d]) }
                    delta += p[j] * dp[j]
                }
                for j in lo...t {
                    let ds = p[j] * (dp[j] - delta) * slope[j]
                    for d in 0..<D {
                        let kv = (j * KVH + kh) * D + d
                        dQ[q + d] += scale * ds * Double(K[kv])
                        dK[kv] += scale * ds * Double(Q[q + d])
                        dV[kv] += p[j] * Double(dO[q + d])
                    }
                }
            }
        }
        return (dQ, dK, dV)
    }

    @Test("attention_backward: many key blocks, D = 64, against a double reference; thread-count independent",
          arguments: [(0, 0), (20, 0), (1, 0), (0, 2), (20, 1)] as [(Int, Float)])
    func attentionBackwardLarge(window W: Int, cap: Float) {
        var rng = TestRNG(41)
        let T = 70, H = 6, KVH = 2, D = 64
        let scale = 1 / Float(D).squareRoot()
        let Q = rng.floats(T * H * D, -2, 2), K = rng.floats(T * KVH * D, -2, 2), V = rng.floats(T * KVH * D)
        let dO = rng.floats(T * H * D)
        let (rQ, rK, rV) = Self.attentionReference(Q, K, V, dO, T: T, H: H, KVH: KVH, D: D, scale: Double(scale), window: W,
                                                   cap: Double(cap))
        var results: [[Float]] = []
        forEachThreadCount { _ in
            var dQ = [Float](repeating: .nan, count: T * H * D)
            var dK = [Float](repeating: .nan, count: T * KVH * D), dV = dK
            tqk_attention_backward(Q, K, V, dO, &dQ, &dK, &dV, Int64(T), Int64(H), Int64(KVH), Int64(D), scale, Int64(W), cap)
            #expect(relErr(dQ, rQ) < 1e-5)
            #expect(relErr(dK, rK) < 1e-5)
            #expect(relErr(dV, rV) < 1e-5)
            results.append(dQ + dK + dV)
        }
        #expect(results[0] == results[1], "results depend on the thread count")
    }

    /// Where the bf16 attention's GEMMs can run here: AMX tiles, the vdpbf16ps kernel, the float32 one on rounded operands.
    static let bf16AttentionPaths: [String] = (cpuHasAMX ? ["amx"] : []) + (cpuHasAVX512BF16 ? ["vdpbf16ps"] : []) + ["rounded"]

    /// The bf16 attention against float32 (forward) and the double reference (backward) at
    /// bf16 tolerances: several query blocks of 128 with a partial last one, sliding windows
    /// across block boundaries, soft caps, GQA. A 5% wrong result exceeds every tolerance.
    @Test("attention bf16: forward and backward at bf16 tolerance on each GEMM path; thread-count independent",
          arguments: [(300, 0, 0), (300, 50, 0), (129, 0, 2), (70, 20, 1), (5, 0, 0), (128, 130, 0)] as [(Int, Int, Float)])
    func attentionBF16(T: Int, window W: Int, cap: Float) {
        var rng = TestRNG(43 + UInt64(T + W))
        let H = 6, KVH = 2, D = 64
        let scale = 1 / Float(D).squareRoot()
        let Q = rng.floats(T * H * D, -2, 2), K = rng.floats(T * KVH * D, -2, 2), V = rng.floats(T * KVH * D)
        let dO = rng.floats(T * H * D)
        var O32 = [Float](repeating: 0, count: T * H * D)
        tqk_attention(Q, K, V, &O32, Int64(T), Int64(H), Int64(KVH), Int64(D), scale, Int64(W), cap)
        let (rQ, rK, rV) = Self.attentionReference(Q, K, V, dO, T: T, H: H, KVH: KVH, D: D, scale: Double(scale), window: W,
                                                   cap: Double(cap))
        for path in Self.bf16AttentionPaths {
            withAMX(path == "amx") { withDPBF16(path == "vdpbf16ps") {
                var results: [[Float]] = []
                forEachThreadCount { n in
                    var O = [Float](repeating: .nan, count: T * H * D), dQ = O
                    var dK = [Float](repeating: .nan, count: T * KVH * D), dV = dK
                    tqk_attention_bf16(Q, K, V, &O, Int64(T), Int64(H), Int64(KVH), Int64(D), scale, Int64(W), cap)
                    tqk_attention_backward_bf16(Q, K, V, dO, &dQ, &dK, &dV, Int64(T), Int64(H), Int64(KVH), Int64(D),
                                                scale, Int64(W), cap)
                    let pairs = [(O, O32.map(Double.init)), (dQ, rQ), (dK, rK), (dV, rV)]
                    let errs = pairs.map { relErr($0.0, $0.1) }
                    // bf16 operands: about 2^-9 relative per rounding (measured 2-4e-3 here); above
                    // 1e-5 shows they were rounded. The largest single error, against the largest
                    // value, catches a wrong row or block that the L2 norm would dilute.
                    #expect(errs[0] < 5e-3 && errs[0] > 1e-5, "\(path) threads \(n): O \(errs[0])")
                    #expect(errs[1...].allSatisfy { $0 < 1e-2 }, "\(path) threads \(n): dQ dK dV \(errs[1...])")
                    let worst = pairs.map { p in
                        zip(p.0, p.1).map { abs(Double($0) - $1) }.max()! / p.1.map(abs).max()!
                    }
                    #expect(worst.allSatisfy { $0 < 2e-2 }, "\(path) threads \(n): max errors \(worst)")
                    results.append(O + dQ + dK + dV)
                }
                let same = results[0] == results[1]
                #expect(same, "\(path): results depend on the thread count")
            } }
        }
    }

    @Test("attention_backward: timing at T=256, H=9, KVH=3, D=64 (informative)")
    func attentionBackwardTiming() {
        var rng = TestRNG(42)
        let T = 256, H = 9, KVH = 3, D = 64
        let Q = rng.floats(T * H * D), K = rng.floats(T * KVH * D), V = rng.floats(T * KVH * D)
        let dO = rng.floats(T * H * D)
        var dQ = [Float](repeating: 0, count: T * H * D), O = dQ
        var dK = [Float](repeating: 0, count: T * KVH * D), dV = dK
        forEachThreadCount { n in
            let c = ContinuousClock()
            let f = c.measure {
                for _ in 0..<5 { tqk_attention(Q, K, V, &O, Int64(T), Int64(H), Int64(KVH), Int64(D), 0.125, 0, 0) }
            }
            let b = c.measure {
                for _ in 0..<5 {
                    tqk_attention_backward(Q, K, V, dO, &dQ, &dK, &dV, Int64(T), Int64(H), Int64(KVH), Int64(D), 0.125, 0, 0)
                }
            }
            print("attention T\(T) threads \(n): forward \(f / 5), backward \(b / 5)")
        }
    }

    // MARK: SwiGLU and loss

    typealias GatedForward = (UnsafePointer<Float>?, UnsafePointer<Float>?, UnsafeMutablePointer<Float>?, Int64) -> Void
    typealias GatedBackward = (UnsafePointer<Float>?, UnsafePointer<Float>?, UnsafePointer<Float>?, UnsafeMutablePointer<Float>?,
                               UnsafeMutablePointer<Float>?, Int64) -> Void

    /// A gated activation's dg, du against finite differences of R . forward(g, u), for every thread count.
    func expectGatedBackwardMatchesFiniteDifferences(_ g: [Float], _ u: [Float], _ R: [Float], forward: GatedForward,
                                                     backward: GatedBackward) {
        let n = g.count
        func loss(_ g: [Float], _ u: [Float]) -> Double {
            var out = [Float](repeating: 0, count: n)
            forward(g, u, &out, Int64(n))
            return dotD(R, out)
        }
        forEachThreadCount { _ in
            var dg = [Float](repeating: .nan, count: n), du = dg
            backward(g, u, R, &dg, &du, Int64(n))
            expectGrad(dg, numericGrad(g, eps: 1e-2) { loss($0, u) }, "dg")
            expectGrad(du, numericGrad(u, eps: 1e-2) { loss(g, $0) }, "du")
        }
    }

    @Test("swiglu_backward: finite differences, and the parallel path")
    func swigluBackward() {
        var rng = TestRNG(51)
        let n = 257
        let g = rng.floats(n, -4, 4), u = rng.floats(n, -2, 2), R = rng.floats(n)
        expectGatedBackwardMatchesFiniteDifferences(g, u, R, forward: tqk_swiglu, backward: tqk_swiglu_backward)
        // Large n takes the OpenMP path: compare with the closed form in double.
        let m = 70_001
        let G = rng.floats(m, -6, 6), U = rng.floats(m), DO = rng.floats(m)
        forEachThreadCount { _ in
            var dg = [Float](repeating: .nan, count: m), du = dg
            tqk_swiglu_backward(G, U, DO, &dg, &du, Int64(m))
            var refG = [Double](repeating: 0, count: m), refU = refG
            for i in 0..<m {
                let x = Double(G[i]), s = 1 / (1 + exp(-x))
                refU[i] = Double(DO[i]) * x * s
                refG[i] = Double(DO[i]) * Double(U[i]) * s * (1 + x * (1 - s))
            }
            #expect(maxRel(dg, refG, floor: 1e-3) < 1e-4)
            #expect(maxRel(du, refU, floor: 1e-3) < 1e-4)
        }
    }

    @Test("geglu: forward as PyTorch's tanh GELU times u; backward against finite differences")
    func gegluBackward() {
        var rng = TestRNG(53)
        let n = 257
        let g = rng.floats(n, -4, 4), u = rng.floats(n, -2, 2), R = rng.floats(n)
        var out = [Float](repeating: 0, count: n)
        tqk_geglu(g, u, &out, Int64(n))
        for i in 0..<n {
            let x = Double(g[i]), ref = 0.5 * x * (1 + tanh((2 / Double.pi).squareRoot() * (x + 0.044715 * x * x * x))) * Double(u[i])
            #expect(abs(Double(out[i]) - ref) <= 1e-5 * max(1, abs(ref)), "geglu(\(g[i]), \(u[i])) = \(out[i]) vs \(ref)")
        }
        expectGatedBackwardMatchesFiniteDifferences(g, u, R, forward: tqk_geglu, backward: tqk_geglu_backward)
    }

    @Test("softcap: cap tanh(x / cap), bounded by the cap")
    func softcap() {
        var rng = TestRNG(57)
        let x = rng.floats(1000, -20, 20)
        var y = x
        tqk_softcap(&y, Int64(y.count), 5)
        for (a, b) in zip(x, y) {
            #expect(abs(Double(b) - 5 * tanh(Double(a) / 5)) <= 1e-6 * 5 && abs(b) <= 5)
        }
    }

    @Test("l2_loss: value and gradient, unweighted and with row weights")
    func l2Loss() {
        var rng = TestRNG(61)
        for (rows, dim) in [(3, 19), (40, 1000)] {
            let y = rng.floats(rows * dim), target = rng.floats(rows * dim)
            for weights in [nil, rng.floats(rows, 0, 2)] {
                let w = { (r: Int) in weights.map { Double($0[r]) } ?? 1 }
                var ref = 0.0
                for i in y.indices { ref += w(i / dim) * (Double(y[i]) - Double(target[i])) * (Double(y[i]) - Double(target[i])) }
                ref /= Double(rows)
                let loss = { (y: UnsafePointer<Float>, dy: UnsafeMutablePointer<Float>?) in
                    weights.map { tqk_l2_loss(y, target, Int64(rows), Int64(dim), $0, dy) }
                        ?? tqk_l2_loss(y, target, Int64(rows), Int64(dim), nil, dy)
                }
                forEachThreadCount { _ in
                    var dy = [Float](repeating: .nan, count: rows * dim)
                    let L = loss(y, &dy)
                    #expect(abs(L - ref) <= 1e-12 * ref)
                    #expect(loss(y, nil) == L)
                    if rows * dim < 100 {
                        let num = numericGrad(y, eps: 1e-2) { loss($0, nil) }
                        expectGrad(dy, num, "dy")
                    }
                    let refDy = (0..<y.count).map { 2 * w($0 / dim) * (Double(y[$0]) - Double(target[$0])) / Double(rows) }
                    #expect(maxRel(dy, refDy, floor: 1e-4) < 1e-5)
                }
            }
        }
    }

    @Test("row_sumsq: each row's squared norm")
    func rowSumsq() {
        var rng = TestRNG(62)
        for (rows, dim) in [(3, 19), (64, 1000)] {
            let x = rng.floats(rows * dim, -30, 30)
            let ref = (0..<rows).map { r in (0..<dim).reduce(0.0) { $0 + Double(x[r * dim + $1]) * Double(x[r * dim + $1]) } }
            forEachThreadCount { _ in
                var out = [Float](repeating: .nan, count: rows)
                tqk_row_sumsq(x, Int64(rows), Int64(dim), &out)
                #expect(maxRel(out, ref, floor: 1) < 1e-6)
            }
        }
    }

    // MARK: fake quantisation

    /// A layer whose soft weights sit away from the clamp boundaries and from the kinks of h.
    struct FQLayer {
        let out: Int, inn: Int, group: Int, bits: Int
        var fl: [Float], a: [Float], state: [UInt8], s: [Float], z: [Float], v: [Float]
        var nGroups: Int { (inn + group - 1) / group }
        var qmax: Float { Float((1 << bits) - 1) }
    }

    fileprivate static func makeLayer(_ rng: inout TestRNG, out: Int, inn: Int, group: Int, bits: Int) -> FQLayer {
        let ng = (inn + group - 1) / group
        let qmax = (1 << bits) - 1
        let s = rng.floats(out * ng, 0.02, 0.1)
        let z = (0..<out * ng).map { _ in Float(rng.int(qmax + 1)) }
        var fl = [Float](repeating: 0, count: out * inn)
        for o in 0..<out {
            for i in 0..<inn {
                let zz = Int(z[o * ng + i / group])
                fl[o * inn + i] = Float(1 - zz + rng.int(qmax - 2))  // fl + z in [1, qmax - 2]: u in (0, qmax)
            }
        }
        return FQLayer(out: out, inn: inn, group: group, bits: bits, fl: fl, a: rng.floats(out * inn, -2, 2),
                       state: [UInt8](repeating: 0, count: out * inn), s: s, z: z, v: rng.floats(out * ng, -1.5, 1.5))
    }

    static func fqWeights(_ L: FQLayer, a: [Float]? = nil, v: [Float]? = nil) -> [Float] {
        var w = [Float](repeating: .nan, count: L.out * L.inn)
        tqk_fq_weights(L.fl, a ?? L.a, L.state, L.s, L.z, v ?? L.v, Int64(L.out), Int64(L.inn), Int64(L.group),
                       Int32(L.bits), &w)
        return w
    }

    /// Naive Swift reference of fq_weights (float32, same operation order).
    static func fqWeightsReference(_ L: FQLayer) -> [Float] {
        var w = [Float](repeating: 0, count: L.out * L.inn)
        for o in 0..<L.out {
            for i in 0..<L.inn {
                let k = o * L.inn + i, gi = o * L.nGroups + i / L.group
                let hw: Float = L.state[k] == 0 ? hRect(L.a[k]) : (L.state[k] == 2 ? 1 : 0)
                let q = min(max(L.fl[k] + hw + L.z[gi], 0), L.qmax)
                w[k] = (q - L.z[gi]) * (L.s[gi] * (2 * hRect(L.v[gi])))
            }
        }
        return w
    }

    @Test("fq_weights: matches the naive reference")
    func fqWeightsMatchReference() {
        var rng = TestRNG(70)
        for (out, inn, group, bits) in [(5, 37, 16, 3), (64, 1100, 128, 2)] {
            var L = Self.makeLayer(&rng, out: out, inn: inn, group: group, bits: bits)
            for k in L.state.indices { L.state[k] = UInt8(rng.int(3)) }
            for k in stride(from: 0, to: L.fl.count, by: 7) { L.fl[k] += Float(rng.int(9)) - 4 }  // some clamp
            let ref = Self.fqWeightsReference(L)
            forEachThreadCount { _ in
                let w = Self.fqWeights(L)
                // Relative to |w| plus the group's step: h(a) comes from a vector exp within about an
                // ulp of expf, so q - z can lose its leading digits to cancellation (fl = -1, h = 0.99).
                let worst = w.indices.map { k -> Float in
                    let gi = (k / L.inn) * L.nGroups + (k % L.inn) / L.group
                    let step = L.s[gi] * 2 * hRect(L.v[gi])
                    return abs(w[k] - ref[k]) / (abs(ref[k]) + abs(step))
                }.max()!
                #expect(worst < 1e-6)
            }
        }
    }

    @Test("fq_backward: da and dv against finite differences, hard and clamped weights get no da")
    func fqBackward() {
        var rng = TestRNG(71)
        var L = Self.makeLayer(&rng, out: 5, inn: 37, group: 16, bits: 3)
        let n = L.out * L.inn, ng = L.nGroups
        // Zero-gradient cases mixed in: hard weights, codes clamped below 0 / above qmax, h clamped.
        enum Kind { case soft, hard, clampLow, clampHigh, flat }
        var kind = [Kind](repeating: .soft, count: n)
        for k in 0..<n {
            let zz = L.z[(k / L.inn) * ng + (k % L.inn) / L.group]
            switch rng.int(10) {
            case 0, 1: kind[k] = .hard; L.state[k] = UInt8(1 + rng.int(2))
            case 2: kind[k] = .clampLow; L.fl[k] = -1 - zz   // u = -1 + h(a) in (-1, 0)
            case 3: kind[k] = .clampHigh; L.fl[k] = L.qmax - zz  // u = qmax + h(a) > qmax
            case 4: kind[k] = .flat; L.a[k] = rng.float(3, 5) * (rng.int(2) == 0 ? 1 : -1)  // h at 0 or 1
            default: break
            }
        }
        let R = rng.floats(n)
        forEachThreadCount { _ in
            var da = [Float](repeating: .nan, count: n), dv = [Float](repeating: .nan, count: L.out * ng)
            tqk_fq_backward(L.fl, L.a, L.state, L.s, L.z, L.v, R, Int64(L.out), Int64(L.inn), Int64(L.group),
                            Int32(L.bits), &da, &dv)
            let numA = numericGrad(L.a, eps: 1e-2) { dotD(R, Self.fqWeights(L, a: $0)) }
            let numV = numericGrad(L.v, eps: 1e-2) { dotD(R, Self.fqWeights(L, v: $0)) }
            expectGrad(da, numA, "da")
            expectGrad(dv, numV, "dv")
            for k in 0..<n where kind[k] != .soft {
                #expect(da[k] == 0, "da[\(k)] = \(da[k]) for a \(kind[k]) weight")
                #expect(abs(numA[k]) < 1e-4, "finite difference sees a gradient at \(k) (\(kind[k]))")
            }
            #expect(zip(da, kind).filter { $1 == .soft }.allSatisfy { $0.0 != 0 })
        }
        // The parallel path against a double reference of the formulas.
        let B = Self.makeLayer(&rng, out: 64, inn: 1100, group: 128, bits: 2)
        let dw = rng.floats(B.out * B.inn)
        var refA = [Double](repeating: 0, count: dw.count), refV = [Double](repeating: 0, count: B.out * B.nGroups)
        for o in 0..<B.out {
            for i in 0..<B.inn {
                let k = o * B.inn + i, gi = o * B.nGroups + i / B.group
                let u = B.fl[k] + hRect(B.a[k]) + B.z[gi], q = min(max(u, 0), B.qmax)
                let deq = Double(B.s[gi]) * 2 * Double(hRect(B.v[gi]))
                refA[k] = u > 0 && u < B.qmax ? Double(dw[k]) * deq * hGrad(B.a[k]) : 0
                refV[gi] += Double(dw[k]) * Double(q - B.z[gi]) * Double(B.s[gi]) * 2 * hGrad(B.v[gi])
            }
        }
        forEachThreadCount { _ in
            var da = [Float](repeating: .nan, count: dw.count), dv = [Float](repeating: .nan, count: refV.count)
            tqk_fq_backward(B.fl, B.a, B.state, B.s, B.z, B.v, dw, Int64(B.out), Int64(B.inn), Int64(B.group),
                            Int32(B.bits), &da, &dv)
            #expect(maxRel(da, refA, floor: 1e-6) < 1e-5)
            #expect(relErr(dv, refV) < 1e-5)
        }
    }

    @Test("fq_init: soft weights reproduce w")
    func fqInit() {
        var rng = TestRNG(72)
        for (out, inn, group) in [(7, 45, 16), (64, 1100, 128)] {
            let ng = (inn + group - 1) / group
            let s = rng.floats(out * ng, 0.01, 0.05)  // |w/s| <= 100: codes stay inside [0, 255] with z = 128
            var w = rng.floats(out * inn, -1, 1)
            w[0] = 0; w[1] = 3 * s[0]; w[2] = -2 * s[0]  // r = 0 (or just below 1 after rounding)
            let z = [Float](repeating: 128, count: out * ng), v = [Float](repeating: 0, count: out * ng)
            forEachThreadCount { _ in
                var fl = [Float](repeating: .nan, count: w.count), a = fl
                var state = [UInt8](repeating: 9, count: w.count)
                tqk_fq_init(w, s, Int64(out), Int64(inn), Int64(group), &fl, &a, &state)
                #expect(state.allSatisfy { $0 == 0 })
                #expect(a.allSatisfy { $0.isFinite })
                var worstCode = 0.0, worstW = 0.0
                for k in w.indices {
                    let sk = s[(k / inn) * ng + (k % inn) / group]
                    let x = w[k] / sk
                    #expect(fl[k] == x.rounded(.down))
                    // fl + h(a) = w / s, relative to max(1, |w/s|) (the scale of the code)
                    let e = abs(Double(fl[k]) + Double(hRect(a[k])) - Double(x)) / max(1, abs(Double(x)))
                    worstCode = max(worstCode, e)
                }
                #expect(worstCode < 1e-5, "fl + h(a) vs w/s: \(worstCode)")
                var wh = [Float](repeating: .nan, count: w.count)
                tqk_fq_weights(fl, a, state, s, z, v, Int64(out), Int64(inn), Int64(group), 8, &wh)
                for k in w.indices {
                    let sk = Double(s[(k / inn) * ng + (k % inn) / group])
                    worstW = max(worstW, abs(Double(wh[k]) - Double(w[k])) / max(sk, abs(Double(w[k]))))
                }
                #expect(worstW < 1e-5, "w_hat vs w: \(worstW)")
                #expect(hRect(a[0]) < 1e-6)  // w = 0: r = 0 exactly
            }
        }
    }

    /// Checks one hardening round against the naive definition. Returns the number newly hardened.
    @discardableResult
    static func checkHarden(_ a: [Float], _ state0: [UInt8], q: Float,
                            sourceLocation: SourceLocation = #_sourceLocation) -> (Int, [UInt8]) {
        let scores = a.indices.map { state0[$0] == 0 ? abs(hRect(a[$0]) - 0.5) : 0.5 }
        let want = Float(numpyQuantile(scores, q))
        var st = state0
        let t = tqk_fq_harden(a, &st, Int64(a.count), q, 0)
        #expect(t == want, "threshold \(t), numpy-style \(want)", sourceLocation: sourceLocation)
        var newly = 0, bad = 0
        for k in a.indices {
            if state0[k] != 0 {
                if st[k] != state0[k] { bad += 1 }
                continue
            }
            let h = hRect(a[k])
            let expect: UInt8 = h > 0.5 + t ? 2 : (h < 0.5 - t ? 1 : 0)
            if st[k] != expect { bad += 1 }
            if st[k] != 0 { newly += 1 }
        }
        #expect(bad == 0, "\(bad) weights hardened wrongly", sourceLocation: sourceLocation)
        return (newly, st)
    }

    @Test("fq_harden: numpy quantile thresholds, about 20% then 35% hard, final hardening")
    func fqHarden() {
        var rng = TestRNG(73)
        let n = 10_007
        let a = rng.floats(n, -2.3, 2.3)  // h never clamps: distinct scores
        forEachThreadCount { _ in
            let fresh = [UInt8](repeating: 0, count: n)
            let (n1, st1) = Self.checkHarden(a, fresh, q: 0.8)
            #expect(abs(Double(n1) / Double(n) - 0.2) < 0.005, "round 1 hardened \(n1) of \(n)")
            let (n2, st2) = Self.checkHarden(a, st1, q: 0.65)
            #expect(abs(Double(n1 + n2) / Double(n) - 0.35) < 0.005, "after round 2: \(n1 + n2) of \(n)")
            // Final: everything hard, soft ones by h > 0.5, hard ones untouched.
            var st = st2
            #expect(tqk_fq_harden(a, &st, Int64(n), 0.5, 1) == 0)
            for k in 0..<n {
                if st2[k] != 0 { #expect(st[k] == st2[k]) } else { #expect(st[k] == (hRect(a[k]) > 0.5 ? 2 : 1)) }
            }
        }
    }

    @Test("fq_harden: ties, mostly-hard layers, q = 0 and q = 1, tiny n")
    func fqHardenEdges() {
        var rng = TestRNG(74)
        forEachThreadCount { _ in
            // Many soft weights with h clamped to 0 or 1 (score exactly 0.5, tied with hard ones).
            let a = rng.floats(5000, -4, 4)
            var st = (0..<5000).map { _ in rng.int(10) == 0 ? UInt8(1 + rng.int(2)) : UInt8(0) }
            for q: Float in [0, 0.3, 0.5, 0.8, 1] { Self.checkHarden(a, st, q: q) }
            // 99% hard: the quantile falls among the hard scores, t = 0.5, nothing changes.
            st = (0..<5000).map { $0 % 100 == 0 ? 0 : 2 }
            let (none, _) = Self.checkHarden(a, st, q: 0.5)
            #expect(none == 0)
            // Few-weight layers, and a quantile landing between the soft block and the hard block.
            for n in [1, 2, 3, 10] {
                let aa = rng.floats(n, -2, 2)
                Self.checkHarden(aa, [UInt8](repeating: 0, count: n), q: 0.8)
                var s2 = [UInt8](repeating: 0, count: n)
                s2[n - 1] = 1
                Self.checkHarden(aa, s2, q: 0.95)
            }
            // Duplicated values exactly.
            let dup = (0..<1000).map { Float($0 % 5) * 0.3 - 0.6 }
            for q: Float in [0.1, 0.45, 0.8] { Self.checkHarden(dup, [UInt8](repeating: 0, count: 1000), q: q) }
        }
    }

    @Test("fq_harden: 1M weights, random and sorted, in linear time")
    func fqHardenLarge() {
        var rng = TestRNG(75)
        let n = 1 << 20
        let random = rng.floats(n, -2.3, 2.3)
        let sorted = random.sorted()
        forEachThreadCount { th in
            for (name, a) in [("random", random), ("sorted", sorted)] {
                var st = [UInt8](repeating: 0, count: n)
                let c = ContinuousClock()
                var t: Float = 0
                let dt = c.measure { t = tqk_fq_harden(a, &st, Int64(n), 0.8, 0) }
                print("fq_harden \(name) n=\(n) threads \(th): \(dt), t = \(t)")
                #expect(dt < .seconds(2))
                let hard = st.reduce(0) { $0 + ($1 != 0 ? 1 : 0) }
                #expect(abs(Double(hard) / Double(n) - 0.2) < 0.002)
            }
        }
        Self.checkHarden(random, [UInt8](repeating: 0, count: n), q: 0.8)
    }

    @Test("fq_codes: matches the naive reference")
    func fqCodes() {
        var rng = TestRNG(76)
        for (out, inn, group, bits) in [(5, 37, 16, 3), (64, 1100, 128, 4)] {
            var L = Self.makeLayer(&rng, out: out, inn: inn, group: group, bits: bits)
            L.a = rng.floats(out * inn, -4, 4)
            for k in L.state.indices { L.state[k] = UInt8(rng.int(3)) }
            for k in stride(from: 0, to: L.fl.count, by: 5) { L.fl[k] += Float(rng.int(21)) - 10 }  // clamps
            var ref = [UInt8](repeating: 0, count: out * inn)
            for k in ref.indices {
                let gi = (k / inn) * L.nGroups + (k % inn) / group
                let hb: Float = L.state[k] == 2 ? 1 : (L.state[k] == 1 ? 0 : (hRect(L.a[k]) > 0.5 ? 1 : 0))
                ref[k] = UInt8(min(max(L.fl[k] + hb + L.z[gi], 0), L.qmax))
            }
            forEachThreadCount { _ in
                var codes = [UInt8](repeating: 255, count: out * inn)
                tqk_fq_codes(L.fl, L.a, L.state, L.z, Int64(out), Int64(inn), Int64(group), Int32(bits), &codes)
                #expect(codes == ref)
            }
        }
    }

    // MARK: Adam

    @Test("adam: three steps against a naive Adam")
    func adam() {
        var rng = TestRNG(81)
        for n in [37, 100_003] {
            let p0 = rng.floats(n), grads = (0..<3).map { _ in rng.floats(n) }
            let lr: Float = 1e-2, b1: Float = 0.9, b2: Float = 0.999, eps: Float = 1e-8, wd: Float = 1e-4
            // naive, in double, the textbook form with bias-corrected moments
            var rp = p0.map(Double.init), rm = [Double](repeating: 0, count: n), rv = rm
            for t in 1...3 {
                for i in 0..<n {
                    let g = Double(grads[t - 1][i]) + Double(wd) * rp[i]
                    rm[i] = Double(b1) * rm[i] + (1 - Double(b1)) * g
                    rv[i] = Double(b2) * rv[i] + (1 - Double(b2)) * g * g
                    let mh = rm[i] / (1 - pow(Double(b1), Double(t))), vh = rv[i] / (1 - pow(Double(b2), Double(t)))
                    rp[i] -= Double(lr) * mh / (vh.squareRoot() + Double(eps))
                }
            }
            forEachThreadCount { _ in
                var p = p0, m = [Float](repeating: 0, count: n), v = m
                for t in 1...3 { tqk_adam(&p, grads[t - 1], &m, &v, Int64(n), lr, b1, b2, eps, wd, Int64(t)) }
                #expect(maxRel(p, rp, floor: 1e-2) < 1e-5)
                #expect(maxRel(m, rm, floor: 1e-2) < 1e-5)  // (m cancels towards 0: relative to its scale)
                #expect(maxRel(v, rv, floor: 1e-5) < 1e-4)
                // and the update itself, which is small next to p
                let step = (0..<n).map { Double(p[$0]) - Double(p0[$0]) }, rstep = (0..<n).map { rp[$0] - Double(p0[$0]) }
                #expect(norm(zip(step, rstep).map { $0 - $1 }) / norm(rstep) < 1e-3)
            }
        }
    }
}
