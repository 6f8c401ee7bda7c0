// Every kernel of tq_kernels.h against naive, independent Swift references (double precision
// where it matters), on awkward shapes, single-threaded and with 2 OpenMP threads.
//
// The OpenMP thread count is global state (per calling thread in libomp), so the suite is
// serialized and every test sets the count it wants and restores the previous one on exit.

import Foundation
import Testing
import TQKernels
@testable import TesseraQ

// MARK: - helpers


private let threadCounts: [Int32] = [1, 2]

/// Runs `body` with `n` OpenMP threads, then restores the previous count.
private func withThreads<R>(_ n: Int32, _ body: () throws -> R) rethrows -> R {
    let old = tqk_get_num_threads()
    tqk_set_num_threads(n)
    defer { tqk_set_num_threads(old) }
    #expect(tqk_get_num_threads() == n)
    return try body()
}

/// |got - want| <= tol, reporting the position on failure. Returns false on the first miss.
@discardableResult
private func expectClose(_ got: Float, _ want: Double, tol: Double, _ what: @autoclosure () -> String,
                         sourceLocation: SourceLocation = #_sourceLocation) -> Bool {
    let ok = got.isFinite && abs(Double(got) - want) <= tol
    if !ok {
        Issue.record("\(what()): got \(got), want \(want) (tol \(tol), err \(abs(Double(got) - want)))",
                     sourceLocation: sourceLocation)
    }
    return ok
}

private func halfBitsIsNaN(_ h: UInt16) -> Bool { (h & 0x7C00) == 0x7C00 && (h & 0x03FF) != 0 }
private func bf16BitsIsNaN(_ h: UInt16) -> Bool { (h & 0x7F80) == 0x7F80 && (h & 0x007F) != 0 }

/// Value of a bfloat16 bit pattern decoded from its fields (not by shifting into a float).
/// `inf` is returned for infinities; NaN for NaNs. `overflowAsPow128` makes 0x7F80 decode to
/// 2^128 (the "next" value after the largest finite), used for round-to-nearest distances.
private func bf16Value(_ h: UInt16, overflowAsPow128: Bool = false) -> Double {
    let sign: Double = (h & 0x8000) != 0 ? -1 : 1
    let e = Int((h >> 7) & 0xFF), m = Double(h & 0x7F)
    if e == 0xFF {
        if m != 0 { return .nan }
        return overflowAsPow128 ? sign * 0x1p128 : sign * .infinity
    }
    if e == 0 { return sign * m / 128 * 0x1p-126 }
    return sign * (1 + m / 128) * Double(sign: .plus, exponent: e - 127, significand: 1)
}

/// Round-to-nearest-even float -> bfloat16 by comparing distances to the two neighbours.
private func bf16Reference(_ x: Float) -> UInt16 {
    let bits = x.bitPattern
    let sign = UInt16(bits >> 16) & 0x8000
    let mag = bits & 0x7FFF_FFFF
    precondition(mag <= 0x7F80_0000, "NaN handled separately")
    if mag == 0x7F80_0000 { return sign | 0x7F80 }
    let lo = UInt16(mag >> 16), hi = lo + 1
    let v = Double(Float(bitPattern: mag))
    let dlo = v - bf16Value(lo), dhi = bf16Value(hi, overflowAsPow128: true) - v
    let pick: UInt16 = dlo < dhi ? lo : dhi < dlo ? hi : (lo & 1 == 0 ? lo : hi)
    return sign | pick
}

// MARK: - suite

@Suite("C kernels against naive references", .serialized)
struct KernelTests {
    init() {
        #expect(tqk_cpu_supported() == 1, "the kernels need AVX2/FMA/F16C")
    }

    // MARK: GEMM

    struct GemmShape: CustomTestStringConvertible, Sendable {
        let m: Int, n: Int, k: Int
        var testDescription: String { "M=\(m) N=\(n) K=\(k)" }
    }

    static let awkward = [1, 2, 5, 7, 16, 17, 63, 97, 257, 300]

    /// Every awkward size in each position (others fixed and awkward too), the 1-row / 1-column
    /// corners, shapes with every dimension past a block size, N past 3072, and shapes big enough
    /// to run threaded and to need several N panels of packed B.
    static let gemmShapes: [GemmShape] = {
        var s: [GemmShape] = []
        for v in awkward {
            s.append(GemmShape(m: v, n: 17, k: 63))
            s.append(GemmShape(m: 7, n: v, k: 97))
            s.append(GemmShape(m: 5, n: 63, k: v))
        }
        s += [GemmShape(m: 1, n: 1, k: 1), GemmShape(m: 1, n: 300, k: 257), GemmShape(m: 300, n: 1, k: 257),
              GemmShape(m: 257, n: 300, k: 1), GemmShape(m: 1, n: 1, k: 300), GemmShape(m: 97, n: 257, k: 300),
              GemmShape(m: 300, n: 97, k: 257), GemmShape(m: 2, n: 3100, k: 5), GemmShape(m: 7, n: 3090, k: 300),
              // Large enough (2MNK >= 2^22) for a threaded run; K x N past 2^21 floats of packed B
              // (several N panels); thin in M, in N, and in both with a long K.
              GemmShape(m: 1, n: 7003, k: 300), GemmShape(m: 300, n: 1, k: 7003), GemmShape(m: 257, n: 97, k: 257),
              GemmShape(m: 17, n: 2000, k: 63)]
        // Edges of the AVX-512 14x32 tile (and of its 8-row packing groups): M around 14 and 28,
        // N around 32 and 64, with K = 1, 7 and past a K block; the last is threaded.
        for m in [13, 14, 15, 29] { s.append(GemmShape(m: m, n: 33, k: 7)) }
        for n in [31, 33, 65] { s.append(GemmShape(m: 29, n: n, k: 300)) }
        s += [GemmShape(m: 15, n: 31, k: 1), GemmShape(m: 43, n: 161, k: 700)]
        // Edges of the AMX 32x32 tile, its 16-row transposes and 32-deep K chunks; two K blocks.
        for m in [16, 31, 33, 47] { s.append(GemmShape(m: m, n: 33, k: 33)) }
        s += [GemmShape(m: 32, n: 32, k: 31), GemmShape(m: 65, n: 64, k: 1030)]
        return s
    }()

    @Test("sgemm, AVX2 path: 4 transposes x beta {0, 0.5} x threads {1, 2}", arguments: gemmShapes)
    func sgemmAVX2(_ shape: GemmShape) {
        withAVX512(false) { checkSgemm(shape) }
    }

    @Test("sgemm, AVX-512 path: 4 transposes x beta {0, 0.5} x threads {1, 2}",
          .enabled(if: cpuHasAVX512, noAVX512),
          arguments: gemmShapes)
    func sgemmAVX512(_ shape: GemmShape) {
        withAVX512(true) { checkSgemm(shape) }
    }

    @Test("gemm_bf16, AVX2 path (float32 kernel on rounded operands): as sgemm on bf16-rounded operands",
          arguments: gemmShapes)
    func gemmBF16AVX2(_ shape: GemmShape) {
        withAVX512(false) { checkSgemm(shape, bf16: true) }
    }

    @Test("gemm_bf16, AVX-512 path (float32 kernel on rounded operands): as sgemm on bf16-rounded operands",
          .enabled(if: cpuHasAVX512, noAVX512), arguments: gemmShapes)
    func gemmBF16AVX512(_ shape: GemmShape) {
        withAVX512(true) { withAMX(false) { withDPBF16(false) { checkSgemm(shape, bf16: true) } } }
    }

    @Test("gemm_bf16, vdpbf16ps path: as sgemm on bf16-rounded operands",
          .enabled(if: cpuHasAVX512BF16, "this CPU lacks AVX512_BF16: the vdpbf16ps kernel is NOT tested here"),
          arguments: gemmShapes)
    func gemmBF16DPBF16(_ shape: GemmShape) {
        withAVX512(true) { withAMX(false) { withDPBF16(true) { checkSgemm(shape, bf16: true) } } }
    }

    @Test("gemm_bf16, AMX path (tdpbf16ps tiles): as sgemm on bf16-rounded operands",
          .enabled(if: cpuHasAMX, noAMX), arguments: gemmShapes)
    func gemmBF16AMX(_ shape: GemmShape) {
        withAVX512(true) { withAMX(true) { checkSgemm(shape, bf16: true) } }
    }

    /// Rounding to bfloat16 is to nearest with ties to even, and NaN stays NaN: with K = 1 the
    /// product of two rounded values is exact, so C shows each operand's rounding.
    /// Paths: 0 AVX2, 1 AVX-512 float32 on rounded operands, 2 AMX, 3 vdpbf16ps.
    @Test("gemm_bf16 rounds operands to nearest, ties to even; NaN propagates", arguments: [0, 1, 2, 3])
    func gemmBF16Rounding(_ path: Int) {
        guard path == 0 || (path == 1 && cpuHasAVX512) || (path == 2 && cpuHasAMX) || (path == 3 && cpuHasAVX512BF16)
        else { return }
        let avx512 = path > 0
        let tie = Float(bitPattern: 0x3F80_8000)      // 1 + 2^-8: halfway, rounds down to even 1
        let tieUp = Float(bitPattern: 0x3F81_8000)    // 1 + 3 * 2^-8: halfway, rounds up to even 1 + 2^-6
        let above = Float(bitPattern: 0x3F80_8001)    // just above halfway: 1 + 2^-7
        let cases: [(Float, Float)] = [(tie, 1), (tieUp, 1 + 0x1p-6), (above, 1 + 0x1p-7), (-tie, -1),
                                       (1.0e-3, bf16Rounded(1.0e-3))]
        withAVX512(avx512) {
            withAMX(path == 2) { withDPBF16(path == 3) {
                // A 1 x 1 A is its own transpose: both of A's packers round it.
                for transA: Int32 in [0, 1] {
                    for (a, want) in cases {
                        var c: [Float] = [0]
                        tqk_gemm_bf16(transA, 0, 1, 1, 1, 1, [a], 1, [Float(1)], 1, 0, &c, 1)
                        #expect(c[0] == want, "bf16(\(a)) gave \(c[0]), want \(want) (transA \(transA))")
                    }
                    var c: [Float] = [0, 0]
                    tqk_gemm_bf16(transA, 0, 1, 2, 1, 1, [Float.nan], 1, [Float(1), 2], 2, 0, &c, 2)
                    #expect(c[0].isNaN && c[1].isNaN)
                }
            } }
        }
    }

    /// For one shape: builds logical op(A) [M x K] and op(B) [K x N], a double reference of
    /// op(A)op(B) and of |op(A)||op(B)|, then runs all four transpose variants, beta 0 and 0.5,
    /// with 1 and 2 threads, storing A and B in padded (ld > width) buffers in the layout each
    /// variant reads. Padding holds NaN, so reading it would poison the result; C's padding
    /// must come back untouched.
    /// `bf16`: tqk_gemm_bf16 against the reference of the bf16-rounded operands (their products
    /// are exact, so the float32 summation bound still holds).
    private func checkSgemm(_ shape: GemmShape, bf16: Bool = false) {
        let M = shape.m, N = shape.n, K = shape.k
        var rng = TestRNG(UInt64(M * 1_000_003 + N * 1009 + K))
        let opA = rng.floats(M * K), opB = rng.floats(K * N)
        let gemm = bf16 ? tqk_gemm_bf16 : tqk_sgemm
        let refA = bf16 ? opA.map(bf16Rounded) : opA, refB = bf16 ? opB.map(bf16Rounded) : opB
        var ref = [Double](repeating: 0, count: M * N), absRef = ref
        refA.withUnsafeBufferPointer { a in
            refB.withUnsafeBufferPointer { b in
                for i in 0..<M {
                    for p in 0..<K {
                        let x = Double(a[i * K + p])
                        for j in 0..<N {
                            let y = Double(b[p * N + j])
                            ref[i * N + j] += x * y
                            absRef[i * N + j] += abs(x * y)
                        }
                    }
                }
            }
        }
        let alpha: Float = -1.75
        let eps = Double(Float.ulpOfOne)
        for transA in [false, true] {
            for transB in [false, true] {
                // Stored A: M x K (lda >= K) or K x M (lda >= M); B: K x N or N x K.
                let (aRows, aCols) = transA ? (K, M) : (M, K)
                let (bRows, bCols) = transB ? (N, K) : (K, N)
                let lda = aCols + 3, ldb = bCols + 5, ldc = N + 2
                var A = [Float](repeating: .nan, count: aRows * lda)
                var B = [Float](repeating: .nan, count: bRows * ldb)
                for i in 0..<M { for p in 0..<K { A[transA ? p * lda + i : i * lda + p] = opA[i * K + p] } }
                for p in 0..<K { for j in 0..<N { B[transB ? j * ldb + p : p * ldb + j] = opB[p * N + j] } }
                for beta: Float in [0, 0.5] {
                    let c0 = rng.floats(M * N, -2, 2)
                    let sentinel: Float = 12345.5
                    for threads in threadCounts {
                        // beta = 0: C starts all NaN (must not be read); padding must stay NaN.
                        var C = [Float](repeating: beta == 0 ? .nan : sentinel, count: M * ldc)
                        if beta != 0 { for i in 0..<M { for j in 0..<N { C[i * ldc + j] = c0[i * N + j] } } }
                        // What the call allocates is what tqk_gemm_scratch_bytes says (the memory estimate's).
                        let (allocated, scratch) = withThreads(threads) {
                            let before = tqk_alloc_bytes_on_thread()
                            gemm(transA ? 1 : 0, transB ? 1 : 0, Int64(M), Int64(N), Int64(K), alpha,
                                 A, Int64(lda), B, Int64(ldb), beta, &C, Int64(ldc))
                            return (tqk_alloc_bytes_on_thread() - before, tqk_gemm_scratch_bytes(bf16 ? 1 : 0, Int64(M), Int64(N), Int64(K)))
                        }
                        let tag = "trans=(\(transA),\(transB)) beta=\(beta) threads=\(threads)"
                        #expect(allocated == Int64(scratch) && scratch > 0, "\(tag): allocated \(allocated), scratch \(scratch)")
                        var bad = 0
                        for i in 0..<M where bad < 5 {
                            for j in 0..<N where bad < 5 {
                                let b0 = beta == 0 ? 0 : Double(beta) * Double(c0[i * N + j])
                                let want = Double(alpha) * ref[i * N + j] + b0
                                let tol = Double(K + 4) * eps * (abs(Double(alpha)) * absRef[i * N + j] + abs(b0)) + 1e-30
                                if !expectClose(C[i * ldc + j], want, tol: tol, "\(tag) C[\(i),\(j)]") { bad += 1 }
                            }
                            for j in N..<ldc {
                                let v = C[i * ldc + j]
                                let untouched = beta == 0 ? v.isNaN : v == sentinel
                                if !untouched {
                                    Issue.record("\(tag): padding C[\(i),\(j)] was written (\(v))")
                                    bad += 1
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// K = 0 and alpha = 0: C = beta * C, and beta = 0 writes zeros without reading C.
    @Test("sgemm: K = 0 and alpha = 0 only scale C", arguments: threadCounts)
    func sgemmDegenerate(_ threads: Int32) {
        let M = 7, N = 17, ldc = 19
        var rng = TestRNG(77)
        let a = rng.floats(M * 5), b = rng.floats(5 * N)
        for (k, alpha): (Int, Float) in [(0, 1), (5, 0)] {
            for beta: Float in [0, 0.5] {
                let c0 = rng.floats(M * ldc)
                var c = beta == 0 ? [Float](repeating: .nan, count: M * ldc) : c0
                withThreads(threads) {
                    tqk_sgemm(0, 0, Int64(M), Int64(N), Int64(k), alpha, a, 5, b, Int64(N), beta, &c, Int64(ldc))
                }
                for i in 0..<M {
                    for j in 0..<N {
                        #expect(c[i * ldc + j] == beta * c0[i * ldc + j], "K=\(k) alpha=\(alpha) beta=\(beta) [\(i),\(j)]")
                    }
                    for j in N..<ldc where beta == 0 { #expect(c[i * ldc + j].isNaN, "padding written") }
                }
            }
        }
        // M = 0 / N = 0: nothing is touched.
        var c: [Float] = [.nan]
        withThreads(threads) {
            tqk_sgemm(0, 0, 0, 1, 1, 1, a, 1, b, 1, 0, &c, 1)
            tqk_sgemm(0, 0, 1, 0, 1, 1, a, 1, b, 1, 0, &c, 1)
        }
        #expect(c[0].isNaN)
    }

    /// Scratch of 1 MiB or more is a mapping of its own that the thread keeps for its next call (the
    /// largest, so repeated GEMMs fault no pages in; the pages past a smaller request given back)
    /// until tqk_scratch_release; smaller scratch is malloc's (released with free, under ASan too).
    /// All of it is counted like tqk_alloc.
    @Test func scratchOfAMebibyteIsAMappingKeptForTheNextCall() throws {
        tqk_scratch_release()
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let big = 3 << 20 + 100, small = (1 << 20) - 1
        let before = tqk_alloc_bytes_on_thread()
        let p = try #require(tqk_scratch_alloc(big))
        let q = try #require(tqk_scratch_alloc(small))
        let r = try #require(tqk_scratch_alloc(big / 2))   // p is in use: a mapping of its own too
        #expect(tqk_alloc_bytes_on_thread() - before == Int64(big + small + big / 2))
        #expect(Int(bitPattern: q) % 64 == 0 && r != p)
        memset(p, 1, big)
        memset(q, 1, small)
        let start = UInt(bitPattern: p)
        #expect(start % UInt(page) == 0)
        // The kernel may merge neighbouring anonymous maps: compare the maps holding them.
        let rMap = try #require(mapping(containing: UInt(bitPattern: r)))
        tqk_scratch_free(q, small)
        tqk_scratch_free(p, big)
        tqk_scratch_free(r, big / 2)   // smaller than the kept p: unmapped
        let own = try #require(mapping(containing: start))
        #expect(own.start <= start && own.end >= start + UInt(big), "\(own)")
        // The next call on this thread gets the kept mapping, its pages past the request given back.
        let mib = 1 << 20
        #expect(residentPages(p, big) == (big + page - 1) / page, "memset touched every page")
        let again = try #require(tqk_scratch_alloc(mib))
        #expect(again == p)
        #expect(residentPages(p, mib) == mib / page && residentPages(p + mib, big - mib) == 0)
        tqk_scratch_free(again, mib)
        tqk_scratch_release()
        // Another thread may map the freed range again, but not as this very map.
        if let after = mapping(containing: start) { #expect(after != own, "the kept scratch was not given back") }
        if let after = mapping(containing: UInt(bitPattern: r)) { #expect(after != rMap, "the smaller scratch was not given back") }
    }

    /// How many of the pages of [p, p + bytes) are in memory (mincore; p page-aligned).
    private func residentPages(_ p: UnsafeMutableRawPointer, _ bytes: Int) -> Int {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        var vec = [UInt8](repeating: 0, count: (bytes + page - 1) / page)
        guard mincore(p, bytes, &vec) == 0 else { return -1 }
        return vec.reduce(0) { $0 + Int($1 & 1) }
    }

    /// The /proc/self/maps entry holding `address`.
    private func mapping(containing address: UInt) -> Mapping? {
        let data = FileHandle(forReadingAtPath: "/proc/self/maps")?.readDataToEndOfFile() ?? Data()
        for line in String(decoding: data, as: UTF8.self).split(separator: "\n") {
            let range = line.prefix { $0 != " " }.split(separator: "-")
            guard range.count == 2, let lo = UInt(range[0], radix: 16), let hi = UInt(range[1], radix: 16) else { continue }
            if lo <= address && address < hi { return Mapping(start: lo, end: hi) }
        }
        return nil
    }

    private struct Mapping: Equatable { var start: UInt, end: UInt }

    // MARK: conversions

    @Test("f16 <-> f32: every half bit pattern round-trips exactly (NaNs stay NaN)", arguments: threadCounts)
    func halfRoundTrip(_ threads: Int32) {
        // Twice over plus a tail, so the parallel path (n > 65536) and the 8-wide tail both run.
        let n = 2 * 65536 + 5
        let src = (0..<n).map { UInt16(truncatingIfNeeded: $0 &* 40503) } // a permutation of the patterns, repeated
        var f = [Float](repeating: -7, count: n)
        var back = [UInt16](repeating: 0xDEAD, count: n)
        withThreads(threads) {
            tqk_f16_to_f32(src, &f, Int64(n))
            tqk_f32_to_f16(f, &back, Int64(n))
        }
        var bad = 0
        for i in 0..<n where bad < 10 {
            let h = src[i]
            let want = Float(Float16(bitPattern: h))
            if halfBitsIsNaN(h) {
                if !(f[i].isNaN && halfBitsIsNaN(back[i])) { Issue.record("NaN \(h) -> \(f[i]) -> \(back[i])"); bad += 1 }
            } else if f[i].bitPattern != want.bitPattern || back[i] != h {
                Issue.record("half 0x\(String(h, radix: 16)): f32 \(f[i]) (want \(want)), back 0x\(String(back[i], radix: 16))")
                bad += 1
            }
        }
        // Short lengths exercise the scalar tail on both sides.
        for m in [1, 3, 7, 8, 9, 15] {
            let s = (0..<m).map { UInt16(0x3C00 + $0 * 77) }
            var g = [Float](repeating: .nan, count: m + 1)
            var h = [UInt16](repeating: 0xFFFF, count: m + 1)
            withThreads(threads) {
                tqk_f16_to_f32(s, &g, Int64(m))
                tqk_f32_to_f16(g, &h, Int64(m))
            }
            #expect(g[m].isNaN && h[m] == 0xFFFF, "wrote past n = \(m)")
            #expect(Array(h[0..<m]) == s, "n = \(m)")
        }
    }

    @Test("f32 -> f16 rounds to nearest even", arguments: threadCounts)
    func halfRounding(_ threads: Int32) {
        // Hand-computed: ulp(1) = 2^-10 in half.
        let cases: [(Float, UInt16)] = [
            (1, 0x3C00), (1 + 0x1p-11, 0x3C00), // tie -> even (down)
            (1 + 3 * 0x1p-11, 0x3C02), // tie -> even (up)
            (1 + 0x1p-11 + 0x1p-20, 0x3C01), // just above the tie
            (-(1 + 3 * 0x1p-11), 0xBC02),
            (65504, 0x7BFF), (65519, 0x7BFF), (65520, 0x7C00), (-65520, 0xFC00), (1e10, 0x7C00),
            (0x1p-24, 0x0001), (0x1p-25, 0x0000), (3 * 0x1p-25, 0x0002), (0x1p-26, 0x0000),
            (0x1p-14, 0x0400), (-0.0, 0x8000), (.infinity, 0x7C00), (-.infinity, 0xFC00),
            (0.1, 0x2E66), (1.0 / 3.0, 0x3555),
        ]
        var out = [UInt16](repeating: 0, count: cases.count)
        withThreads(threads) { tqk_f32_to_f16(cases.map(\.0), &out, Int64(cases.count)) }
        for (i, c) in cases.enumerated() {
            #expect(out[i] == c.1, "\(c.0) -> 0x\(String(out[i], radix: 16)), want 0x\(String(c.1, radix: 16))")
        }
        // Random finite float bit patterns across the whole range against Swift's Float16(Float).
        var rng = TestRNG(16)
        let n = 70_001
        let xs = (0..<n).map { _ -> Float in
            let f = Float(bitPattern: UInt32(truncatingIfNeeded: rng.next()))
            return f.isNaN ? 1.5 : f
        }
        var hs = [UInt16](repeating: 0, count: n)
        withThreads(threads) { tqk_f32_to_f16(xs, &hs, Int64(n)) }
        var bad = 0
        for i in 0..<n where bad < 10 && hs[i] != Float16(xs[i]).bitPattern {
            Issue.record("\(xs[i]) -> 0x\(String(hs[i], radix: 16)), want 0x\(String(Float16(xs[i]).bitPattern, radix: 16))")
            bad += 1
        }
        let nan: [Float] = [.nan, -.nan, Float(bitPattern: 0x7F80_0001), Float(bitPattern: 0x7FC0_0000)]
        var nh = [UInt16](repeating: 0, count: nan.count)
        withThreads(threads) { tqk_f32_to_f16(nan, &nh, Int64(nan.count)) }
        for (i, h) in nh.enumerated() { #expect(halfBitsIsNaN(h), "NaN \(nan[i].bitPattern) -> 0x\(String(h, radix: 16))") }
    }

    @Test("bf16 -> f32: every bit pattern decodes to its value", arguments: threadCounts)
    func bf16Decode(_ threads: Int32) {
        let n = 2 * 65536 + 3
        let src = (0..<n).map { UInt16(truncatingIfNeeded: $0 &* 40503) }
        var f = [Float](repeating: 0, count: n + 1)
        f[n] = 99
        withThreads(threads) { tqk_bf16_to_f32(src, &f, Int64(n)) }
        #expect(f[n] == 99, "wrote past n")
        var bad = 0
        for i in 0..<n where bad < 10 {
            let want = bf16Value(src[i])
            let ok = want.isNaN ? f[i].isNaN : (Double(f[i]) == want && f[i].sign == (src[i] & 0x8000 != 0 ? .minus : .plus))
            if !ok { Issue.record("bf16 0x\(String(src[i], radix: 16)) -> \(f[i]), want \(want)"); bad += 1 }
        }
    }

    @Test("f32 -> bf16: round to nearest even, ties, overflow, NaN stays NaN", arguments: threadCounts)
    func bf16Encode(_ threads: Int32) {
        let cases: [(UInt32, UInt16)] = [
            (0x3F80_0000, 0x3F80), (0x3F80_8000, 0x3F80), // tie -> even (down)
            (0x3F81_8000, 0x3F82), // tie -> even (up)
            (0x3F80_8001, 0x3F81), (0x3F80_7FFF, 0x3F80),
            (0xBF80_8000, 0xBF80), (0xBF81_8000, 0xBF82),
            (0x7F7F_FFFF, 0x7F80), // rounds up to infinity
            (0x7F7F_7FFF, 0x7F7F), (0x7F7F_8000, 0x7F80), // tie at the top -> even = inf
            (0x0000_8000, 0x0000), (0x0001_8000, 0x0002), (0x0000_8001, 0x0001), // subnormals
            (0x8000_0000, 0x8000), (0x7F80_0000, 0x7F80), (0xFF80_0000, 0xFF80),
        ]
        var out = [UInt16](repeating: 0, count: cases.count)
        withThreads(threads) { tqk_f32_to_bf16(cases.map { Float(bitPattern: $0.0) }, &out, Int64(cases.count)) }
        for (i, c) in cases.enumerated() {
            #expect(out[i] == c.1, "0x\(String(c.0, radix: 16)) -> 0x\(String(out[i], radix: 16)), want 0x\(String(c.1, radix: 16))")
        }
        // NaNs, including payloads only in the low 16 bits (truncation would make them infinity).
        let nans: [UInt32] = [0x7FC0_0000, 0x7F80_0001, 0xFF80_0001, 0x7F80_8000, 0x7FFF_FFFF, 0xFFC1_2345]
        var nh = [UInt16](repeating: 0, count: nans.count)
        withThreads(threads) { tqk_f32_to_bf16(nans.map { Float(bitPattern: $0) }, &nh, Int64(nans.count)) }
        for (i, h) in nh.enumerated() {
            #expect(bf16BitsIsNaN(h), "NaN 0x\(String(nans[i], radix: 16)) -> 0x\(String(h, radix: 16))")
            #expect(h & 0x8000 == UInt16(nans[i] >> 16) & 0x8000, "NaN sign")
        }
        // Random bit patterns (parallel path: n > 65536) against the distance-based reference.
        var rng = TestRNG(0xBF16)
        let n = 100_003
        let xs = (0..<n).map { i -> Float in
            // Every other value has a low half of exactly 0x8000 to hit ties often.
            let r = UInt32(truncatingIfNeeded: rng.next())
            let f = Float(bitPattern: i % 2 == 0 ? r : (r & 0xFFFF_0000) | 0x8000)
            return f.isNaN ? -2.5 : f
        }
        var hs = [UInt16](repeating: 0, count: n)
        withThreads(threads) { tqk_f32_to_bf16(xs, &hs, Int64(n)) }
        var bad = 0
        for i in 0..<n where bad < 10 && hs[i] != bf16Reference(xs[i]) {
            Issue.record("0x\(String(xs[i].bitPattern, radix: 16)) -> 0x\(String(hs[i], radix: 16)), want 0x\(String(bf16Reference(xs[i]), radix: 16))")
            bad += 1
        }
    }

    // MARK: element-wise

    static let lengths = [1, 2, 5, 7, 16, 17, 63, 97, 257, 300, 65536 + 300]

    @Test("add: y += x (exact)", arguments: threadCounts)
    func add(_ threads: Int32) {
        var rng = TestRNG(3)
        for n in Self.lengths {
            let x = rng.floats(n, -100, 100), y0 = rng.floats(n + 1, -1, 1)
            var y = y0
            withThreads(threads) { tqk_add(&y, x, Int64(n)) }
            #expect(y[n] == y0[n], "wrote past n = \(n)")
            // A sum of two floats computed in double and rounded once is the correctly rounded sum.
            let firstBad = (0..<n).first { y[$0] != Float(Double(y0[$0]) + Double(x[$0])) }
            #expect(firstBad == nil, "n = \(n) at \(firstBad ?? -1)")
        }
    }

    @Test("add_bias: y[r, c] += b[c] (exact)", arguments: threadCounts)
    func addBias(_ threads: Int32) {
        var rng = TestRNG(4)
        for (rows, cols) in [(1, 1), (1, 300), (300, 1), (7, 17), (97, 63), (257, 300)] {
            let b = rng.floats(cols, -3, 3), y0 = rng.floats(rows * cols + 1)
            var y = y0
            withThreads(threads) { tqk_add_bias(&y, b, Int64(rows), Int64(cols)) }
            #expect(y[rows * cols] == y0[rows * cols], "wrote past the end")
            let firstBad = (0..<rows * cols).first { y[$0] != Float(Double(y0[$0]) + Double(b[$0 % cols])) }
            #expect(firstBad == nil, "\(rows)x\(cols) at \(firstBad ?? -1)")
        }
    }

    @Test("embed: gathers table rows", arguments: threadCounts)
    func embed(_ threads: Int32) {
        var rng = TestRNG(5)
        for (vocab, dim, n) in [(1, 1, 1), (16, 7, 5), (97, 17, 63), (300, 257, 33), (5, 300, 1)] {
            let table = rng.floats(vocab * dim)
            let ids = (0..<n).map { _ in UInt32(rng.int(vocab)) }
            var out = [Float](repeating: .nan, count: n * dim + 1)
            withThreads(threads) { tqk_embed(table, ids, Int64(n), Int64(dim), &out) }
            #expect(out[n * dim].isNaN, "wrote past the end")
            for t in 0..<n {
                let row = Int(ids[t])
                #expect(Array(out[t * dim..<(t + 1) * dim]) == Array(table[row * dim..<(row + 1) * dim]), "token \(t) id \(row)")
            }
        }
    }

    // MARK: model ops

    @Test("rmsnorm: y = x / sqrt(mean(x^2) + eps) * w (also in place)", arguments: threadCounts)
    func rmsnorm(_ threads: Int32) {
        var rng = TestRNG(6)
        for (rows, dim) in [(1, 1), (1, 5), (7, 17), (33, 63), (2, 257), (300, 257), (5, 300)] {
            for eps: Float in [1e-6, 1e-5, 0.5] {
                // Rows of very different scales; one row of zeros (the eps term decides).
                var x = rng.floats(rows * dim)
                for r in 0..<rows { let s = [1, 1e-3, 30, 0][r % 4] as Float; for i in 0..<dim { x[r * dim + i] *= s } }
                let w = rng.floats(dim, 0.5, 1.5)
                var y = [Float](repeating: .nan, count: rows * dim)
                var inPlace = x
                withThreads(threads) {
                    tqk_rmsnorm(x, w, &y, Int64(rows), Int64(dim), eps)
                    inPlace.withUnsafeMutableBufferPointer {
                        tqk_rmsnorm($0.baseAddress, w, $0.baseAddress, Int64(rows), Int64(dim), eps)
                    }
                }
                var bad = 0
                for r in 0..<rows where bad < 5 {
                    var ss = 0.0
                    for i in 0..<dim { ss += Double(x[r * dim + i]) * Double(x[r * dim + i]) }
                    let inv = 1 / (ss / Double(dim) + Double(eps)).squareRoot()
                    for i in 0..<dim where bad < 5 {
                        let want = Double(w[i]) * Double(x[r * dim + i]) * inv
                        let tol = 1e-5 * abs(want) + 1e-30
                        let tag = "\(rows)x\(dim) eps=\(eps) [\(r),\(i)]"
                        if !expectClose(y[r * dim + i], want, tol: tol, tag) { bad += 1 }
                        if inPlace[r * dim + i] != y[r * dim + i] { Issue.record("in place differs: \(tag)"); bad += 1 }
                    }
                }
            }
        }
    }

    /// HF inverse frequencies for head_dim D: 1 / theta^(2i/D), computed in double here.
    private func invFreq(_ D: Int, theta: Double = 10000) -> [Float] {
        (0..<D / 2).map { Float(1 / pow(theta, Double(2 * $0) / Double(D))) }
    }

    @Test("rope_tables: cos/sin of float32 angles pos * inv_freq", arguments: threadCounts)
    func ropeTables(_ threads: Int32) {
        for (D, positions) in [(2, 1), (4, 3), (12, 33), (64, 257), (128, 300)] {
            let inv = invFreq(D), half = D / 2
            var c = [Float](repeating: .nan, count: positions * half + 1)
            var s = c
            withThreads(threads) { tqk_rope_tables(inv, Int64(half), Int64(positions), &c, &s) }
            #expect(c[positions * half].isNaN && s[positions * half].isNaN, "wrote past the tables")
            var bad = 0
            for p in 0..<positions where bad < 5 {
                for i in 0..<half where bad < 5 {
                    // Hugging Face forms the angle in float32 (inv_freq @ positions), then cos/sin.
                    let angle = Double(Float(p) * inv[i])
                    if !expectClose(c[p * half + i], cos(angle), tol: 1e-6, "cos D=\(D) p=\(p) i=\(i)") { bad += 1 }
                    if !expectClose(s[p * half + i], sin(angle), tol: 1e-6, "sin D=\(D) p=\(p) i=\(i)") { bad += 1 }
                }
            }
        }
    }

    @Test("rope: rotate_half pairs (i, i + D/2)", arguments: threadCounts)
    func rope(_ threads: Int32) {
        var rng = TestRNG(8)
        for (T, H, D) in [(1, 1, 2), (3, 3, 4), (33, 8, 12), (5, 2, 64), (33, 8, 128), (300, 1, 4)] {
            let half = D / 2
            // Tables built here in double, independent of tqk_rope_tables.
            let inv = invFreq(D, theta: 500)
            var cosT = [Float](), sinT = [Float]()
            for p in 0..<T { for i in 0..<half { cosT.append(Float(cos(Double(p) * Double(inv[i])))); sinT.append(Float(sin(Double(p) * Double(inv[i])))) } }
            let x = rng.floats(T * H * D, -4, 4)
            var y = x
            withThreads(threads) { tqk_rope(&y, Int64(T), Int64(H), Int64(D), cosT, sinT) }
            var bad = 0
            for t in 0..<T where bad < 5 {
                for h in 0..<H where bad < 5 {
                    let base = (t * H + h) * D
                    for i in 0..<half where bad < 5 {
                        let a = Double(x[base + i]), b = Double(x[base + i + half])
                        let c = Double(cosT[t * half + i]), s = Double(sinT[t * half + i])
                        let tol = 1e-6 * (abs(a) + abs(b)) + 1e-30
                        let tag = "T=\(T) H=\(H) D=\(D) t=\(t) h=\(h) i=\(i)"
                        if !expectClose(y[base + i], a * c - b * s, tol: tol, tag + " first half") { bad += 1 }
                        if !expectClose(y[base + i + half], b * c + a * s, tol: tol, tag + " second half") { bad += 1 }
                    }
                }
            }
        }
    }

    /// `w`: sliding window (0: full causal attention).
    struct AttnCase: CustomTestStringConvertible, Sendable {
        let t: Int, h: Int, kvh: Int, d: Int
        var w = 0
        var testDescription: String { "T=\(t) H=\(h) KVH=\(kvh) D=\(d)" + (w > 0 ? " W=\(w)" : "") }
    }

    static let attnCases: [AttnCase] = {
        var out: [AttnCase] = []
        for t in [1, 3, 33] {
            for (h, kvh) in [(4, 4), (8, 2), (3, 1)] {
                for d in [4, 8, 12, 64] { out.append(AttnCase(t: t, h: h, kvh: kvh, d: d)) }
            }
        }
        return out + [AttnCase(t: 33, h: 8, kvh: 2, d: 8, w: 5), AttnCase(t: 33, h: 3, kvh: 1, d: 64, w: 32),
                      AttnCase(t: 3, h: 4, kvh: 4, d: 4, w: 1)]
    }()

    @Test("attention: causal GQA against a double-precision softmax", arguments: attnCases, threadCounts)
    func attention(_ c: AttnCase, _ threads: Int32) {
        let T = c.t, H = c.h, KVH = c.kvh, D = c.d, W = c.w
        var rng = TestRNG(UInt64(T * 10_000 + H * 1000 + KVH * 100 + D + W * 100_000))
        // Keys scaled up so the softmax is far from uniform (a wrong mask or head shows).
        let Q = rng.floats(T * H * D, -2, 2), K = rng.floats(T * KVH * D, -2, 2), V = rng.floats(T * KVH * D, -3, 3)
        for scale in [1 / Float(D).squareRoot(), 0.7] {
            var O = [Float](repeating: .nan, count: T * H * D + 1)
            withThreads(threads) { tqk_attention(Q, K, V, &O, Int64(T), Int64(H), Int64(KVH), Int64(D), scale, Int64(W), 0) }
            #expect(O[T * H * D].isNaN, "wrote past O")
            var bad = 0
            for t in 0..<T where bad < 5 {
                for h in 0..<H where bad < 5 {
                    let kh = h / (H / KVH) // repeat_kv: query head h reads kv head h / group
                    // Hugging Face's sliding window: the last W positions, t included.
                    let lo = W > 0 ? max(0, t - W + 1) : 0
                    var s = [Double](repeating: -Double.infinity, count: t + 1)
                    for j in lo...t {
                        var dot = 0.0
                        for d in 0..<D { dot += Double(Q[(t * H + h) * D + d]) * Double(K[(j * KVH + kh) * D + d]) }
                        s[j] = dot * Double(scale)
                    }
                    let mx = s.max()!
                    let p = s.map { exp($0 - mx) }
                    let sum = p.reduce(0, +)
                    for d in 0..<D where bad < 5 {
                        var want = 0.0, mag = 0.0
                        for j in lo...t {
                            let v = Double(V[(j * KVH + kh) * D + d])
                            want += p[j] * v / sum
                            mag += p[j] * abs(v) / sum
                        }
                        // Float scores carry ~D ulps of the |q||k| sum; scale the tolerance with D.
                        let tol = (1e-5 + Double(D) * 4e-7) * (mag + 1e-3)
                        if !expectClose(O[(t * H + h) * D + d], want, tol: tol, "\(c.testDescription) scale=\(scale) t=\(t) h=\(h) d=\(d)") {
                            bad += 1
                        }
                    }
                }
            }
        }
    }

    /// The cached attention of decoding: its header promises tqk_attention's arithmetic in the same
    /// order, so the last n rows of a full attention over pos + n positions must come out bit for
    /// bit, for every split (prefill of all, chunks, one token), windows and soft-caps included
    /// (tqk_attention itself is checked against double precision above).
    @Test("attention_cached: equals tqk_attention's rows exactly", arguments: attnCases, threadCounts)
    func attentionCached(_ c: AttnCase, _ threads: Int32) {
        let T = c.t, H = c.h, KVH = c.kvh, D = c.d, W = c.w
        var rng = TestRNG(UInt64(T * 10_000 + H * 1000 + KVH * 100 + D + W * 100_000 + 7))
        let Q = rng.floats(T * H * D, -2, 2), K = rng.floats(T * KVH * D, -2, 2), V = rng.floats(T * KVH * D, -3, 3)
        for softcap: Float in [0, 5] {
            let scale = 1 / Float(D).squareRoot()
            var full = [Float](repeating: .nan, count: T * H * D)
            withThreads(threads) { tqk_attention(Q, K, V, &full, Int64(T), Int64(H), Int64(KVH), Int64(D), scale, Int64(W), softcap) }
            for pos in Set([0, T / 2, T - 1]) {
                let n = T - pos
                var O = [Float](repeating: .nan, count: n * H * D + 1)
                Array(Q[(pos * H * D)...]).withUnsafeBufferPointer { q in
                    withThreads(threads) {
                        tqk_attention_cached(q.baseAddress, K, V, &O, Int64(n), Int64(pos), Int64(H), Int64(KVH), Int64(D),
                                             scale, Int64(W), softcap)
                    }
                }
                #expect(O[n * H * D].isNaN, "\(c.testDescription) pos=\(pos): wrote past O")
                #expect(Array(O[..<(n * H * D)]) == Array(full[(pos * H * D)...]), "\(c.testDescription) pos=\(pos) softcap=\(softcap)")
            }
        }
    }

    @Test("swiglu: silu(g) * u (also in place, extreme g)", arguments: threadCounts)
    func swiglu(_ threads: Int32) {
        var rng = TestRNG(10)
        for n in [1, 7, 8, 9, 257, 40_000] {
            var g = rng.floats(n, -12, 12)
            let extremes: [Float] = [-100, -90, -20, 0, 20, 88, 100, -0.0]
            for (i, e) in extremes.enumerated() where i < n { g[(i * 7919) % n] = e }
            let u = rng.floats(n, -3, 3)
            var out = [Float](repeating: .nan, count: n + 1)
            var inPlace = g
            withThreads(threads) {
                tqk_swiglu(g, u, &out, Int64(n))
                inPlace.withUnsafeMutableBufferPointer { tqk_swiglu($0.baseAddress, u, $0.baseAddress, Int64(n)) }
            }
            #expect(out[n].isNaN, "wrote past n")
            var bad = 0
            for i in 0..<n where bad < 5 {
                let gd = Double(g[i])
                let want = gd / (1 + exp(-gd)) * Double(u[i])
                if !expectClose(out[i], want, tol: 1e-5 * abs(want) + 1e-30, "n=\(n) i=\(i) g=\(g[i]) u=\(u[i])") { bad += 1 }
                if inPlace[i] != out[i] { Issue.record("in place differs at \(i)"); bad += 1 }
            }
        }
    }

    @Test("nll_sum: sum of -log softmax[target], stable for large logits", arguments: threadCounts)
    func nllSum(_ threads: Int32) {
        var rng = TestRNG(11)
        for (rows, vocab) in [(1, 1), (1, 2), (5, 17), (63, 257), (7, 3000), (300, 5)] {
            for spread: Float in [1, 30, 500] {
                let logits = rng.floats(rows * vocab, -spread, spread)
                let targets = (0..<rows).map { _ in UInt32(rng.int(vocab)) }
                let got = withThreads(threads) { tqk_nll_sum(logits, targets, Int64(rows), Int64(vocab)) }
                var want = 0.0, mag = 0.0
                for r in 0..<rows {
                    let row = (0..<vocab).map { Double(logits[r * vocab + $0]) }
                    let mx = row.max()!
                    let lse = mx + log(row.reduce(0) { $0 + exp($1 - mx) })
                    want += lse - row[Int(targets[r])]
                    mag += abs(lse) + abs(row[Int(targets[r])])
                }
                #expect(got.isFinite && abs(got - want) <= 1e-6 * mag + 1e-12,
                        "rows=\(rows) vocab=\(vocab) spread=\(spread): got \(got) want \(want)")
                if vocab == 1 { #expect(got == 0) }
            }
        }
    }

    @Test("thread count is set, read back and restored")
    func threadCount() {
        let old = tqk_get_num_threads()
        for n: Int32 in [1, 2, 3] {
            tqk_set_num_threads(n)
            #expect(tqk_get_num_threads() == n)
            #expect(Runtime.threads == Int(n))
        }
        tqk_set_num_threads(old)
        #expect(tqk_get_num_threads() == old)
    }
}
