// GPTQ packed-weight kernels (Sources/TQKernels/pack.c, qgemv.c) against naive, independent
// Swift references written from docs/FORMATS.md: packing layout (bit-exact), pack/unpack
// round trips, dequantisation (bit-exact), and GEMV/GEMM on the packed words (double
// reference), for 2/3/4/8 bits, awkward shapes, partial last groups, act-order g_idx, with 1
// and 2 OpenMP threads. The GEMV/GEMM checks run twice: on the AVX2 kernels and on the AVX-512
// ones (reported as skipped, with the reason, on a CPU without AVX-512).
//
// The OpenMP thread count and the AVX-512 choice are global state, so the suite is serialized
// and every test restores them.

import Foundation
import Testing
import TQKernels
@testable import TesseraQ

// MARK: - helpers

private func withThreadCount<R>(_ n: Int32, _ body: () throws -> R) rethrows -> R {
    let old = tqk_get_num_threads()
    tqk_set_num_threads(n)
    defer { tqk_set_num_threads(old) }
    return try body()
}

private func withOptional<R>(_ a: [Int32]?, _ body: (UnsafePointer<Int32>?) -> R) -> R {
    guard let a else { return body(nil) }
    return a.withUnsafeBufferPointer { body($0.baseAddress) }
}

private let allBits = [2, 3, 4, 8]
private let inSizes = [7, 32, 64, 96, 100, 172, 576]
private let outSizes = [1, 3, 8, 13, 64, 172]
/// 0 stands for "per channel" (group = in). 48 (inputs >= 96 only) is not a multiple of the
/// 3-bit packing unit (32 values), which sends 3-bit layers down the generic path.
private let groupSizes = [32, 64, 128, 0, 48]

/// Words for a stream of b-bit values, exactly as FORMATS.md words it:
/// b in {2,4,8}: f = 32/b values per word, least significant first (value k at bits [k*b, k*b+b));
/// b = 3: 32 values in 3 words, value j at bits [3j, 3j+3) of the 96-bit little-endian
/// concatenation of the three words (built bit by bit here). Missing trailing values are 0.
private func naivePackStream(_ vals: [UInt8], bits: Int) -> [UInt32] {
    if bits == 3 {
        let blocks = (vals.count + 31) / 32
        var words = [UInt32](repeating: 0, count: 3 * blocks)
        for m in 0..<blocks {
            for j in 0..<32 {
                let idx = 32 * m + j
                let v = idx < vals.count ? UInt32(vals[idx]) : 0
                for t in 0..<3 where (v >> UInt32(t)) & 1 == 1 {
                    let bit = 3 * j + t // position in the 96-bit concatenation
                    words[3 * m + bit / 32] |= UInt32(1) << UInt32(bit % 32)
                }
            }
        }
        return words
    }
    let f = 32 / bits
    let n = (vals.count + f - 1) / f
    var words = [UInt32](repeating: 0, count: n)
    for r in 0..<n {
        for k in 0..<f where r * f + k < vals.count {
            words[r] |= UInt32(vals[r * f + k]) << UInt32(k * bits)
        }
    }
    return words
}

/// One random GPTQ layer: codes (out x in, W layout), zeros/scales [nGroups x out], packed
/// by the naive packer.
private struct Layer {
    let bits: Int, out: Int, inF: Int, group: Int, nGroups: Int
    var codes: [UInt8]
    var zeros: [UInt8]
    var scales: [UInt16]
    var scalesF: [Float] // the same scales as Float (exact)
    var qweight: [UInt32]
    var qzeros: [UInt32]
    var rowsQ: Int { qweight.count / out }
    var colsZ: Int { qzeros.count / nGroups }

    init(bits: Int, out: Int, inF: Int, group g: Int, rng: inout TestRNG) {
        self.bits = bits
        self.out = out
        self.inF = inF
        group = g == 0 ? inF : g
        nGroups = (inF + group - 1) / group
        let maxCode = 1 << bits
        codes = (0..<(out * inF)).map { _ in UInt8(rng.int(maxCode)) }
        zeros = (0..<(nGroups * out)).map { _ in UInt8(rng.int(maxCode)) }
        // some extreme values, so codes in the top bits make the int32 view negative
        if out * inF > 4 { for _ in 0..<4 { codes[rng.int(out * inF)] = UInt8(maxCode - 1) } }
        scales = (0..<(nGroups * out)).map { _ in Float16(rng.float(0.001, 0.02)).bitPattern }
        scalesF = scales.map { Float(Float16(bitPattern: $0)) }
        var qw = [UInt32]()
        var cols = [[UInt32]]()
        for o in 0..<out { cols.append(naivePackStream(Array(codes[(o * inF)..<((o + 1) * inF)]), bits: bits)) }
        let rows = cols[0].count
        qw = [UInt32](repeating: 0, count: rows * out)
        for o in 0..<out { for r in 0..<rows { qw[r * out + o] = cols[o][r] } }
        qweight = qw
        var qz = [UInt32]()
        for gi in 0..<nGroups { qz += naivePackStream(Array(zeros[(gi * out)..<((gi + 1) * out)]), bits: bits) }
        qzeros = qz
    }

    func group(of i: Int, _ gIdx: [Int32]?) -> Int { gIdx.map { Int($0[i]) } ?? i / group }

    /// W[o, i] = (float)(code - zero) * scale, the documented operation order.
    func referenceW(_ gIdx: [Int32]?) -> [Float] {
        var w = [Float](repeating: 0, count: out * inF)
        for o in 0..<out {
            for i in 0..<inF {
                let g = group(of: i, gIdx)
                let s = scalesF[g * out + o]
                w[o * inF + i] = Float(Int(codes[o * inF + i]) - Int(zeros[g * out + o])) * s
            }
        }
        return w
    }

    /// |s| * (code + zero) of every weight (W layout), the magnitude of each term the kernel accumulates.
    func termMagnitudes(_ gIdx: [Int32]?) -> [Double] {
        var mag = [Double](repeating: 0, count: out * inF)
        for o in 0..<out {
            for i in 0..<inF {
                let g = group(of: i, gIdx)
                mag[o * inF + i] = Double(scalesF[g * out + o]) * Double(Int(codes[o * inF + i]) + Int(zeros[g * out + o]))
            }
        }
        return mag
    }

    /// A permutation-like act-order g_idx: every group keeps its size, members shuffled.
    func randomGIdx(_ rng: inout TestRNG) -> [Int32] {
        var g = (0..<inF).map { Int32($0 / group) }
        for i in stride(from: inF - 1, to: 0, by: -1) { g.swapAt(i, rng.int(i + 1)) }
        return g
    }

    func callGemm(_ x: [Float], batch: Int, gIdx: [Int32]?) -> [Float] {
        var y = [Float](repeating: .nan, count: batch * out)
        qweight.withUnsafeBufferPointer { qw in
            qzeros.withUnsafeBufferPointer { qz in
                scales.withUnsafeBufferPointer { sc in
                    withOptional(gIdx) { gi in
                        x.withUnsafeBufferPointer { xp in
                            y.withUnsafeMutableBufferPointer { yp in
                                if batch == 1 {
                                    tqk_packed_gemv(qw.baseAddress, qz.baseAddress, sc.baseAddress, gi, Int64(out),
                                                    Int64(inF), Int32(bits), Int64(group), xp.baseAddress, yp.baseAddress)
                                } else {
                                    tqk_packed_gemm(qw.baseAddress, qz.baseAddress, sc.baseAddress, gi, Int64(out),
                                                    Int64(inF), Int32(bits), Int64(group), xp.baseAddress, Int64(batch),
                                                    yp.baseAddress)
                                }
                            }
                        }
                    }
                }
            }
        }
        return y
    }

    func callDequantize(rows: Range<Int>, gIdx: [Int32]?) -> [Float] {
        var w = [Float](repeating: .nan, count: rows.count * inF)
        qweight.withUnsafeBufferPointer { qw in
            qzeros.withUnsafeBufferPointer { qz in
                scales.withUnsafeBufferPointer { sc in
                    withOptional(gIdx) { gi in
                        w.withUnsafeMutableBufferPointer { wp in
                            tqk_packed_dequantize(qw.baseAddress, qz.baseAddress, sc.baseAddress, gi, Int64(out),
                                                  Int64(inF), Int32(bits), Int64(group), Int64(rows.lowerBound),
                                                  Int64(rows.upperBound), wp.baseAddress)
                        }
                    }
                }
            }
        }
        return w
    }
}

private func forEachLayer(bits: Int, seed: UInt64, _ body: (Layer, inout TestRNG) -> Void) {
    var rng = TestRNG(seed &+ UInt64(bits))
    for inF in inSizes {
        for out in outSizes {
            for g in groupSizes where g != 48 || inF >= 96 {
                let layer = Layer(bits: bits, out: out, inF: inF, group: g, rng: &rng)
                body(layer, &rng)
            }
        }
    }
}

/// Checks L's packed GEMV/GEMM (batch 1) or GEMM on x [batch x inF], with 1 and 2 threads,
/// against a double-precision matmul with the reference W. Error bound: per element, 1e-5 of the
/// sum of the magnitudes of the terms the packed kernel adds, sum_i |s| (code + zero) |x_i| (mag,
/// the usual dot-product bound: the fast path sums codes*x and zero*sum(x) separately); and over
/// the whole output, max |err| <= 1e-5 max |ref| whenever it has at least 8 elements. Returns the
/// number of runs checked.
private func expectMatchesReference(_ L: Layer, gIdx: [Int32]?, W: [Float], mag: [Double], x: [Float],
                                    batch: Int) -> Int {
    let (ref, tol) = reference(L, W: W, mag: mag, x: x, batch: batch)
    for threads: Int32 in [1, 2] {
        let y = withThreadCount(threads) { L.callGemm(x, batch: batch, gIdx: gIdx) }
        expectClose(y, ref, tol, "bits \(L.bits) \(L.out)x\(L.inF) g\(L.group) gidx \(gIdx != nil) batch \(batch) "
                    + "threads \(threads) avx512 \(tqk_use_avx512())")
    }
    return 2
}

/// The double-precision X W^T and each element's tolerance (see expectMatchesReference).
private func reference(_ L: Layer, W: [Float], mag: [Double], x: [Float], batch: Int) -> (ref: [Double], tol: [Double]) {
    var ref = [Double](repeating: 0, count: batch * L.out)
    var tol = [Double](repeating: 0, count: batch * L.out)
    W.withUnsafeBufferPointer { w in
        mag.withUnsafeBufferPointer { m in
            x.withUnsafeBufferPointer { xp in
                for b in 0..<batch {
                    for o in 0..<L.out {
                        var acc = 0.0, t = 0.0
                        for i in 0..<L.inF {
                            let xv = Double(xp[b * L.inF + i])
                            acc += Double(w[o * L.inF + i]) * xv
                            t += m[o * L.inF + i] * abs(xv)
                        }
                        ref[b * L.out + o] = acc
                        tol[b * L.out + o] = 1e-5 * t
                    }
                }
            }
        }
    }
    return (ref, tol)
}

private func expectClose(_ y: [Float], _ ref: [Double], _ tol: [Double], _ tag: String) {
    let refMax = ref.map { abs($0) }.max() ?? 0
    var maxErr = 0.0
    var bad = -1
    for k in 0..<y.count {
        let e = abs(Double(y[k]) - ref[k])
        if !(e <= tol[k]) && bad < 0 { bad = k }
        if !(e <= maxErr) { maxErr = e.isNaN ? .infinity : e }
    }
    #expect(bad < 0, "\(tag): element \(bad) got \(bad >= 0 ? y[bad] : 0) want \(bad >= 0 ? ref[bad] : 0)")
    if y.count >= 8 {
        #expect(maxErr <= 1e-5 * refMax, "\(tag): max err \(maxErr) vs max |ref| \(refMax)")
    }
}

/// tqk_packed_gemv_many on layers sharing x: their arrays copied to stable addresses for the
/// tensor descriptors.
private func callGemvMany(_ layers: [Layer], gIdx: [[Int32]?], _ x: [Float]) -> [[Float]] {
    var owned: [UnsafeMutableRawPointer] = []
    defer { owned.forEach { $0.deallocate() } }
    func pinned<T>(_ a: [T]) -> UnsafeMutablePointer<T> {
        let p = UnsafeMutablePointer<T>.allocate(capacity: max(a.count, 1))
        p.initialize(from: a, count: a.count)
        owned.append(UnsafeMutableRawPointer(p))
        return p
    }
    let tensors = layers.indices.map { k in
        let L = layers[k]
        return tqk_packed_tensor(qweight: pinned(L.qweight), qzeros: pinned(L.qzeros), scales: pinned(L.scales),
                                 g_idx: gIdx[k].map { UnsafePointer(pinned($0)) }, out: Int64(L.out),
                                 group_size: Int64(L.group), bits: Int32(L.bits))
    }
    let ys: [UnsafeMutablePointer<Float>?] = layers.map { pinned([Float](repeating: .nan, count: $0.out)) }
    tqk_packed_gemv_many(tensors, Int64(layers.count), Int64(layers[0].inF), x, ys)
    return layers.indices.map { Array(UnsafeBufferPointer(start: ys[$0], count: layers[$0].out)) }
}

// MARK: - tests

@Suite(.serialized)
struct PackedKernelTests {
    @Test func packedLength() {
        #expect(tqk_packed_len(4096, 4) == 512)
        #expect(tqk_packed_len(4096, 2) == 256)
        #expect(tqk_packed_len(4096, 8) == 1024)
        #expect(tqk_packed_len(4096, 3) == 384)
        #expect(tqk_packed_len(172, 4) == 22)
        #expect(tqk_packed_len(172, 3) == 18)
        #expect(tqk_packed_len(7, 3) == 3)
        #expect(tqk_packed_len(7, 2) == 1)
        #expect(tqk_packed_len(100, 8) == 25)
        #expect(tqk_packed_len(0, 4) == 0)
        for bits in allBits {
            for n in inSizes {
                let want = bits == 3 ? 3 * ((n + 31) / 32) : (n + 32 / bits - 1) / (32 / bits)
                #expect(tqk_packed_len(Int64(n), Int32(bits)) == Int64(want))
            }
        }
    }

    /// Hand-made 3-bit words from the FORMATS.md text: value 10 straddles word 0 bits 30-31 and
    /// word 1 bit 0; value 21 straddles word 1 bit 31 and word 2 bits 0-1.
    @Test func threeBitStraddlingValues() {
        func packOne(_ vals: [UInt8]) -> [UInt32] {
            var qw = [UInt32](repeating: 0xDEAD_BEEF, count: 3)
            vals.withUnsafeBufferPointer { tqk_pack_qweight($0.baseAddress, 1, Int64(vals.count), 3, &qw) }
            return qw
        }
        var v = [UInt8](repeating: 0, count: 32)
        v[10] = 0b101 // low bits 01 -> word 0 bits 30-31 = 01, high bit 1 -> word 1 bit 0
        #expect(packOne(v) == [0x4000_0000, 0x0000_0001, 0])
        v[10] = 7
        #expect(packOne(v) == [0xC000_0000, 0x0000_0001, 0])
        v = [UInt8](repeating: 0, count: 32)
        v[21] = 0b110 // low bit 0 -> word 1 bit 31 = 0, high bits 11 -> word 2 bits 0-1
        #expect(packOne(v) == [0, 0, 0x0000_0003])
        v[21] = 0b011
        #expect(packOne(v) == [0, 0x8000_0000, 0x0000_0001])
        v = [UInt8](repeating: 0, count: 32)
        v[31] = 7 // top value: word 2 bits 29-31 (the int32 view is negative)
        v[0] = 5
        #expect(packOne(v) == [5, 0, 0xE000_0000])
        // qzeros use the same scheme along the output columns
        var z = [UInt8](repeating: 0, count: 40)
        z[10] = 7
        z[21] = 7
        z[39] = 6 // second block of 32, value 7: bits 21-23 of word 3
        var qz = [UInt32](repeating: 0xFFFF_FFFF, count: 6)
        z.withUnsafeBufferPointer { tqk_pack_qzeros($0.baseAddress, 1, 40, 3, &qz) }
        #expect(qz == [0xC000_0000, 0x8000_0001, 0x0000_0003, 6 << 21, 0, 0])
        var back = [UInt8](repeating: 9, count: 40)
        qz.withUnsafeBufferPointer { tqk_unpack_qzeros($0.baseAddress, 1, 40, 3, &back) }
        #expect(back == z)
    }

    /// Packed layout equals the naive FORMATS.md packer word for word (padding included), and
    /// unpack(pack(x)) == x, for codes and zeros, 1 and 2 threads.
    @Test(arguments: allBits)
    func packLayoutAndRoundTrip(bits: Int) {
        for threads: Int32 in [1, 2] {
            withThreadCount(threads) {
                forEachLayer(bits: bits, seed: 11) { L, _ in
                    let tag = "bits \(bits) \(L.out)x\(L.inF) g\(L.group) threads \(threads)"
                    #expect(Int(tqk_packed_len(Int64(L.inF), Int32(bits))) == L.rowsQ, "\(tag)")
                    #expect(Int(tqk_packed_len(Int64(L.out), Int32(bits))) == L.colsZ, "\(tag)")
                    var qw = [UInt32](repeating: 0xA5A5_A5A5, count: L.qweight.count)
                    L.codes.withUnsafeBufferPointer {
                        tqk_pack_qweight($0.baseAddress, Int64(L.out), Int64(L.inF), Int32(bits), &qw)
                    }
                    #expect(qw == L.qweight, "qweight layout \(tag)")
                    var codes = [UInt8](repeating: 0xFF, count: L.codes.count)
                    qw.withUnsafeBufferPointer {
                        tqk_unpack_qweight($0.baseAddress, Int64(L.out), Int64(L.inF), Int32(bits), &codes)
                    }
                    #expect(codes == L.codes, "codes round trip \(tag)")
                    var qz = [UInt32](repeating: 0x5A5A_5A5A, count: L.qzeros.count)
                    L.zeros.withUnsafeBufferPointer {
                        tqk_pack_qzeros($0.baseAddress, Int64(L.nGroups), Int64(L.out), Int32(bits), &qz)
                    }
                    #expect(qz == L.qzeros, "qzeros layout \(tag)")
                    var zeros = [UInt8](repeating: 0xFF, count: L.zeros.count)
                    qz.withUnsafeBufferPointer {
                        tqk_unpack_qzeros($0.baseAddress, Int64(L.nGroups), Int64(L.out), Int32(bits), &zeros)
                    }
                    #expect(zeros == L.zeros, "zeros round trip \(tag)")
                }
            }
        }
    }

    /// tqk_packed_dequantize == (float)(code - zero) * scale bit for bit, whole and in row ranges,
    /// with g_idx NULL and act-order g_idx.
    @Test(arguments: allBits)
    func dequantizeBitExact(bits: Int) {
        forEachLayer(bits: bits, seed: 23) { L, rng in
            for gIdx in [nil, L.randomGIdx(&rng)] as [[Int32]?] {
                let want = L.referenceW(gIdx).map { $0.bitPattern }
                let lo = L.out / 3, hi = max(lo, L.out - L.out / 4)
                for threads: Int32 in [1, 2] {
                    withThreadCount(threads) {
                        let tag = "bits \(bits) \(L.out)x\(L.inF) g\(L.group) gidx \(gIdx != nil) threads \(threads)"
                        let got = L.callDequantize(rows: 0..<L.out, gIdx: gIdx).map { $0.bitPattern }
                        #expect(got == want, "dequantize \(tag)")
                        if hi > lo { // an odd row range
                            let part = L.callDequantize(rows: lo..<hi, gIdx: gIdx).map { $0.bitPattern }
                            #expect(part == Array(want[(lo * L.inF)..<(hi * L.inF)]), "dequantize rows \(lo)..<\(hi) \(tag)")
                        }
                    }
                }
            }
        }
    }

    /// GEMV (batch 1) and GEMM (batch 3, 8, 64) on packed words vs a double-precision matmul with
    /// the reference W, on every small layer (expectMatchesReference gives the error bound).
    private func gemvGemmMatchReference(bits: Int) {
        var checked = 0
        forEachLayer(bits: bits, seed: 37) { L, rng in
            let bigShape = L.out * L.inF > 172 * 172
            for gIdx in [nil, L.randomGIdx(&rng)] as [[Int32]?] {
                let W = L.referenceW(gIdx), mag = L.termMagnitudes(gIdx)
                for batch in [1, 3, 8, 64] {
                    if batch == 64 && bigShape { continue } // keep the debug-build reference quick
                    let x = (0..<(batch * L.inF)).map { _ in rng.float(-1, 1) }
                    checked += expectMatchesReference(L, gIdx: gIdx, W: W, mag: mag, x: x, batch: batch)
                }
            }
        }
        #expect(checked > 1000)
    }

    @Test(arguments: allBits)
    func gemvGemmMatchReferenceAVX2(bits: Int) { withAVX512(false) { gemvGemmMatchReference(bits: bits) } }

    @Test(.enabled(if: cpuHasAVX512, noAVX512), arguments: allBits)
    func gemvGemmMatchReferenceAVX512(bits: Int) { withAVX512(true) { gemvGemmMatchReference(bits: bits) } }

    /// The AVX-512 GEMV's edges: 16-column vectors and 4-vector blocks (out around multiples of 16
    /// and 64; the last vector of a row loads only its own bytes), one thread or two splitting the
    /// input in the middle of a group, a partial last group, per-channel groups, a partial 3-bit
    /// unit (in = 1200).
    private func vectorEdges(bits: Int) {
        var rng = TestRNG(53 &+ UInt64(bits))
        for out in [113, 127, 128, 129, 143, 191, 200] {
            for g in [128, 0] {
                let L = Layer(bits: bits, out: out, inF: 1200, group: g, rng: &rng)
                let W = L.referenceW(nil), mag = L.termMagnitudes(nil)
                for batch in [1, 2] {
                    let x = (0..<(batch * L.inF)).map { _ in rng.float(-1, 1) }
                    _ = expectMatchesReference(L, gIdx: nil, W: W, mag: mag, x: x, batch: batch)
                }
            }
        }
    }

    @Test(arguments: allBits)
    func vectorEdgesAVX2(bits: Int) { withAVX512(false) { vectorEdges(bits: bits) } }

    @Test(.enabled(if: cpuHasAVX512, noAVX512), arguments: allBits)
    func vectorEdgesAVX512(bits: Int) { withAVX512(true) { vectorEdges(bits: bits) } }

    /// tqk_packed_gemv_many: tensors of every bit width, group size and output size sharing x (a
    /// SmolLM2 block's q/k/v shapes among them), with and without one act-order tensor (which
    /// sends the call through tqk_packed_gemv one tensor at a time), 1 and 2 threads.
    private func gemvMany() {
        var rng = TestRNG(71)
        let specs: [(bits: Int, out: Int, group: Int)] = [(4, 576, 64), (2, 192, 128), (3, 200, 0), (8, 40, 64),
                                                           (2, 1000, 64)]
        let layers = specs.map { Layer(bits: $0.bits, out: $0.out, inF: 576, group: $0.group, rng: &rng) }
        let x = (0..<576).map { _ in rng.float(-1, 1) }
        for actOrder in [false, true] {
            let gIdx = layers.indices.map { actOrder && $0 == 1 ? layers[$0].randomGIdx(&rng) : nil }
            let refs = layers.indices.map {
                reference(layers[$0], W: layers[$0].referenceW(gIdx[$0]), mag: layers[$0].termMagnitudes(gIdx[$0]), x: x,
                          batch: 1)
            }
            for threads: Int32 in [1, 2] {
                let ys = withThreadCount(threads) { callGemvMany(layers, gIdx: gIdx, x) }
                for k in layers.indices {
                    expectClose(ys[k], refs[k].ref, refs[k].tol, "gemv_many tensor \(k) (bits \(specs[k].bits), "
                                + "\(specs[k].out) out) act-order \(actOrder) threads \(threads) avx512 \(tqk_use_avx512())")
                }
            }
        }
    }

    @Test func gemvManyAVX2() { withAVX512(false) { gemvMany() } }

    @Test(.enabled(if: cpuHasAVX512, noAVX512)) func gemvManyAVX512() { withAVX512(true) { gemvMany() } }

    /// The same kernels on one larger layer (4096-column rows would be too slow for the debug
    /// reference, so 1000 x 1536): every code path at realistic sizes, including column-block,
    /// partial-vector and thread boundaries, with and without an act-order g_idx.
    private func largerLayer(bits: Int) {
        var rng = TestRNG(99 &+ UInt64(bits))
        let L = Layer(bits: bits, out: 1000, inF: 1536, group: 128, rng: &rng)
        let x = (0..<(2 * L.inF)).map { _ in rng.float(-1, 1) }
        for gIdx in [nil, L.randomGIdx(&rng)] as [[Int32]?] {
            let W = L.referenceW(gIdx)
            for batch in [1, 2] {
                var ref = [Double](repeating: 0, count: batch * L.out)
                W.withUnsafeBufferPointer { w in
                    for b in 0..<batch {
                        for o in 0..<L.out {
                            var acc = 0.0
                            for i in 0..<L.inF { acc += Double(w[o * L.inF + i]) * Double(x[b * L.inF + i]) }
                            ref[b * L.out + o] = acc
                        }
                    }
                }
                let refMax = ref.map { abs($0) }.max()!
                for threads: Int32 in [1, 2] {
                    let y = withThreadCount(threads) { L.callGemm(Array(x[0..<(batch * L.inF)]), batch: batch, gIdx: gIdx) }
                    let maxErr = zip(y, ref).map { abs(Double($0) - $1) }.max()!
                    #expect(y.allSatisfy { $0.isFinite })
                    #expect(maxErr <= 1e-5 * refMax,
                            "bits \(bits) gidx \(gIdx != nil) batch \(batch) threads \(threads): \(maxErr) vs \(refMax)")
                }
            }
        }
    }

    @Test(arguments: [2, 3, 4, 8])
    func largerLayerAVX2(bits: Int) { withAVX512(false) { largerLayer(bits: bits) } }

    @Test(.enabled(if: cpuHasAVX512, noAVX512), arguments: [2, 3, 4, 8])
    func largerLayerAVX512(bits: Int) { withAVX512(true) { largerLayer(bits: bits) } }

    /// A NaN anywhere in x makes every output NaN (through the zero-point term, whatever the codes).
    private func nanInput(bits: Int) {
        var rng = TestRNG(71 &+ UInt64(bits))
        let L = Layer(bits: bits, out: 150, inF: 1000, group: 128, rng: &rng)
        for gIdx in [nil, L.randomGIdx(&rng)] as [[Int32]?] {
            for batch in [1, 3] {
                var x = (0..<(batch * L.inF)).map { _ in rng.float(-1, 1) }
                for b in 0..<batch { x[b * L.inF + rng.int(L.inF)] = .nan }
                for threads: Int32 in [1, 2] {
                    let y = withThreadCount(threads) { L.callGemm(x, batch: batch, gIdx: gIdx) }
                    #expect(y.allSatisfy { $0.isNaN }, "bits \(bits) gidx \(gIdx != nil) batch \(batch) threads \(threads)")
                }
            }
        }
    }

    @Test(arguments: allBits)
    func nanInputAVX2(bits: Int) { withAVX512(false) { nanInput(bits: bits) } }

    @Test(.enabled(if: cpuHasAVX512, noAVX512), arguments: allBits)
    func nanInputAVX512(bits: Int) { withAVX512(true) { nanInput(bits: bits) } }
}
