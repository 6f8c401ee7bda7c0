#if canImport(Glibc)
import Glibc
#endif
import TQKernels

/// The token embedding or the LM head, [vocab x hidden], kept in the checkpoint's precision when
/// that is bfloat16 (SmolLM2, most Hugging Face releases), else in float32. bf16 widens to float32
/// exactly, so every result equals that of a float32 copy up to summation order, at half the memory
/// and half the bytes a decoding step reads for the head (the largest single read of a small
/// model's step).
final class TokenMatrix: @unchecked Sendable {
    let rows: Int
    let dim: Int
    private let f32: FloatBuffer?
    private let bf16: UnsafeMutablePointer<UInt16>?
    /// Rows widened at a time when a bf16 matrix multiplies many hidden rows (bounds the scratch).
    private static let chunk = 1024

    init(_ store: TensorStore, _ name: String, rows: Int, dim: Int) throws {
        self.rows = rows
        self.dim = dim
        let (file, info) = try store.require(name)
        if info.dtype == .bf16 {
            let p = try allocateZeroed(info.count, of: UInt16.self)
            file.copyBytes(info, into: p)
            bf16 = p
            f32 = nil
        } else {
            f32 = try store.floatBuffer(name)
            bf16 = nil
        }
    }

    deinit { free(bf16) }

    var bytes: Int { rows * dim * (bf16 == nil ? 4 : 2) }

    /// Rows `ids` into out [ids.count x dim], as float32.
    func gather(_ ids: UnsafeBufferPointer<UInt32>, into out: UnsafeMutablePointer<Float>) {
        if let f32 {
            tqk_embed(f32.p, ids.baseAddress, Int64(ids.count), Int64(dim), out)
        } else if let bf16 {
            for (t, id) in ids.enumerated() { tqk_bf16_to_f32(bf16 + Int(id) * dim, out + t * dim, Int64(dim)) }
        }
    }

    /// out [n x rows] = x [n x dim] M^T: one row by the GEMV (in bf16 for a bf16 matrix), several by
    /// the GEMM (a bf16 matrix widened `chunk` rows at a time into scratch).
    func apply(_ x: UnsafePointer<Float>, rows n: Int, into out: UnsafeMutablePointer<Float>) throws {
        if let f32 {
            linearApply(x, rows: n, weight: f32.p, out: rows, in: dim, into: out)
        } else if let bf16, n == 1 {
            tqk_gemv_bf16(bf16, x, out, Int64(rows), Int64(dim))
        } else if let bf16 {
            let scratch = try FloatBuffer(count: min(Self.chunk, rows) * dim)
            for r0 in stride(from: 0, to: rows, by: Self.chunk) {
                let m = min(Self.chunk, rows - r0)
                tqk_bf16_to_f32(bf16 + r0 * dim, scratch.p, Int64(m * dim))
                tqk_sgemm(0, 1, Int64(n), Int64(m), Int64(dim), 1, x, Int64(dim), scratch.p, Int64(dim), 0, out + r0, Int64(rows))
            }
        }
    }
}
