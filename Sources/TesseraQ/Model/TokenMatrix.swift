#if canImport(Glibc)
import Glibc
#endif
import TQKernels

/// The token embedding or the LM head, [vocab x hidden], kept in the checkpoint's precision when
/// that is bfloat16 (SmolLM2, most Hugging Face releases), else in float32. bf16 widens to float32
/// exactly, so every result equals that of a float32 copy up to summation order, at half the memory
/// and half the bytes a decoding step reads for the head (the largest single read of a small
/// model's step). A bf16 matrix is read in place from the checkpoint's map when it is aligned there
/// (`releasePages` then lets a run that is done with it drop it from memory), else copied out. On
/// request (`ModelOptions.lmHead`) an LM head is held packed at 8 bits instead, as llama.cpp holds it
/// in Q8_0: a quarter of float32's bytes, at the cost of RTN's rounding.
final class TokenMatrix: @unchecked Sendable {
    let rows: Int
    let dim: Int
    private enum Storage {
        case f32(FloatBuffer)
        case bf16(UnsafePointer<UInt16>)
        case packed(PackedLinear)
    }
    private let storage: Storage
    /// The map a bf16 matrix is read from in place (kept alive here), or nil when it was copied out.
    private let mapped: (file: SafeTensorsFile, info: TensorInfo)?
    /// Rows widened (or quantized) at a time when a bf16 matrix multiplies many hidden rows or is
    /// packed (bounds the scratch).
    static let chunk = 1024

    init(_ store: TensorStore, _ name: String, rows: Int, dim: Int) throws {
        self.rows = rows
        self.dim = dim
        let (file, info) = try store.require(name)
        let inPlace = file.bytes(info)
        if info.dtype == .bf16, Int(bitPattern: inPlace) % MemoryLayout<UInt16>.alignment == 0 {
            storage = .bf16(inPlace.assumingMemoryBound(to: UInt16.self))
            mapped = (file, info)
        } else if info.dtype == .bf16 {
            let p = try allocateZeroed(info.count, of: UInt16.self)
            file.copyBytes(info, into: p)
            storage = .bf16(p)
            mapped = nil
        } else {
            storage = .f32(try store.floatBuffer(name))
            mapped = nil
        }
    }

    /// `source` rounded to nearest on the grid of `spec` (per row, groups along `dim`) and packed
    /// as a GPTQ linear named `name`, `chunk` rows (output columns of the packed words) at a time:
    /// beside the result, only one chunk is ever held in float32 or as codes.
    init(packing source: TokenMatrix, spec: QuantSpec, name: String, chunk: Int = TokenMatrix.chunk) throws {
        let rows = source.rows, dim = source.dim
        self.rows = rows
        self.dim = dim
        let b = Int32(spec.bits), packedRows = Int(tqk_packed_len(Int64(dim), b)), width = min(chunk, rows)
        let group = spec.group(forInput: dim), nGroups = (dim + group - 1) / group
        // Per-group arrays are [nGroups x rows] (GPTQ's orientation): a chunk fills columns r0 ..< r0 + m.
        var qweight = [UInt32](repeating: 0, count: packedRows * rows), scales = [UInt16](repeating: 0, count: nGroups * rows)
        var zeros = [UInt8](repeating: 0, count: nGroups * rows)
        let scratch = try FloatBuffer(count: width * dim)
        var words = [UInt32](repeating: 0, count: packedRows * width), half = [UInt16](repeating: 0, count: nGroups * width)
        func place<T>(_ part: ArraySlice<T>, rows n: Int, at r0: Int, into whole: inout [T]) {
            let m = part.count / n
            for r in 0..<n { whole.replaceSubrange((r * rows + r0)..<(r * rows + r0 + m), with: part[(part.startIndex + r * m)...].prefix(m)) }
        }
        for r0 in stride(from: 0, to: rows, by: chunk) {
            let m = min(chunk, rows - r0)
            source.widen(rows: r0..<(r0 + m), into: scratch.p)
            let q = try roundToNearest(scratch, out: m, inFeatures: dim, spec: spec, name: name)
            tqk_pack_qweight(q.codes, Int64(m), Int64(dim), b, &words)  // [packedRows x m]
            tqk_f32_to_f16(q.scales, &half, Int64(nGroups * m))         // [nGroups x m]
            place(words[..<(packedRows * m)], rows: packedRows, at: r0, into: &qweight)
            place(half[..<(nGroups * m)], rows: nGroups, at: r0, into: &scales)
            place(q.zeros[...], rows: nGroups, at: r0, into: &zeros)
        }
        storage = .packed(PackedLinear(name: name, out: rows, inFeatures: dim, bits: spec.bits, groupSize: spec.groupSize,
                                       sym: spec.sym, qweight: qweight,
                                       qzeros: PackedLinear.packZeros(zeros, nGroups: nGroups, out: rows, bits: spec.bits),
                                       scales: scales, gIdx: (0..<dim).map { Int32($0 / group) }))
        mapped = nil
    }

    deinit { if mapped == nil, case .bf16(let p) = storage { free(UnsafeMutablePointer(mutating: p)) } }

    /// Drops the resident pages of a matrix read in place from its map; later reads fault them back
    /// in from the page cache. Nothing for a matrix held in memory.
    func releasePages() { mapped.map { $0.file.releasePages($0.info) } }

    var bytes: Int {
        switch storage {
        case .f32: rows * dim * 4
        case .bf16: rows * dim * 2
        case .packed(let p): p.packedBytes
        }
    }

    var isMapped: Bool { mapped != nil }

    var isPacked: Bool { if case .packed = storage { true } else { false } }

    /// Rows `range` into out [range.count x dim], as float32 (dequantized when packed).
    private func widen(rows range: Range<Int>, into out: UnsafeMutablePointer<Float>) {
        switch storage {
        case .f32(let f): out.update(from: f.p + range.lowerBound * dim, count: range.count * dim)
        case .bf16(let p): tqk_bf16_to_f32(p + range.lowerBound * dim, out, Int64(range.count * dim))
        case .packed(let p): p.dequantize(rows: range, into: out)
        }
    }

    /// Rows `ids` into out [ids.count x dim], as float32.
    func gather(_ ids: UnsafeBufferPointer<UInt32>, into out: UnsafeMutablePointer<Float>) {
        if case .f32(let f) = storage {
            tqk_embed(f.p, ids.baseAddress, Int64(ids.count), Int64(dim), out)
        } else {
            for (t, id) in ids.enumerated() { widen(rows: Int(id)..<(Int(id) + 1), into: out + t * dim) }
        }
    }

    /// out [n x rows] = x [n x dim] M^T: one row by the GEMV (in bf16 for a bf16 matrix, on the
    /// packed words for a packed one), several by the GEMM (a bf16 matrix widened `chunk` rows at a
    /// time into scratch).
    func apply(_ x: UnsafePointer<Float>, rows n: Int, into out: UnsafeMutablePointer<Float>) throws {
        switch storage {
        case .f32(let f):
            linearApply(x, rows: n, weight: f.p, out: rows, in: dim, into: out)
        case .packed(let p):
            if n == 1 { p.gemv(x, out) } else { p.gemm(x, batch: n, out) }
        case .bf16(let p) where n == 1:
            tqk_gemv_bf16(p, x, out, Int64(rows), Int64(dim))
        case .bf16:
            let scratch = try FloatBuffer(count: min(Self.chunk, rows) * dim)
            for r0 in stride(from: 0, to: rows, by: Self.chunk) {
                let m = min(Self.chunk, rows - r0)
                widen(rows: r0..<(r0 + m), into: scratch.p)
                tqk_sgemm(0, 1, Int64(n), Int64(m), Int64(dim), 1, x, Int64(dim), scratch.p, Int64(dim), 0, out + r0, Int64(rows))
            }
        }
    }
}
