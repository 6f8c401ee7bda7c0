import TQKernels

/// The precision of a training block's GEMMs: float32, or bfloat16 operands with float32 sums and
/// outputs (`tqk_gemm_bf16`: twice the multiply rate on AVX512_BF16). Everything else (the
/// trained variables, norms, attention, the loss, Adam) stays float32, like the reference's
/// autocast.
public enum ComputeDType: String, Sendable, CaseIterable {
    case f32, bf16

    typealias GEMM = @convention(c) (Int32, Int32, Int64, Int64, Int64, Float, UnsafePointer<Float>?, Int64,
                                     UnsafePointer<Float>?, Int64, Float, UnsafeMutablePointer<Float>?, Int64) -> Void

    /// Reads config key `compute_dtype` ("f32" or "bf16").
    init(_ r: KeyReader, default def: ComputeDType) throws {
        let name = try r.string("compute_dtype", default: def.rawValue)
        guard let dtype = ComputeDType(rawValue: name) else {
            throw TQError.invalid("config key compute_dtype: must be \"f32\" or \"bf16\" (got \"\(name)\")")
        }
        self = dtype
    }

    /// The GEMM of this precision, with tqk_sgemm's arguments.
    var gemm: GEMM {
        switch self {
        case .f32: tqk_sgemm
        case .bf16: tqk_gemm_bf16
        }
    }
}
