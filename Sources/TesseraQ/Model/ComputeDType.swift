import TQKernels

/// The precision of a training block's products: float32, or bfloat16 operands with float32 sums and
/// outputs (`tqk_gemm_bf16`: twice the multiply rate on AVX512_BF16, more on AMX), for the linears
/// and attention's four products alike. Everything else (the trained variables, norms, the
/// softmax, the loss, Adam) stays float32, like the reference's autocast.
public enum ComputeDType: String, Sendable, CaseIterable {
    case f32, bf16

    typealias GEMM = @convention(c) (Int32, Int32, Int64, Int64, Int64, Float, UnsafePointer<Float>?, Int64,
                                     UnsafePointer<Float>?, Int64, Float, UnsafeMutablePointer<Float>?, Int64) -> Void

    typealias Attention = @convention(c) (UnsafePointer<Float>?, UnsafePointer<Float>?, UnsafePointer<Float>?,
                                          UnsafeMutablePointer<Float>?, Int64, Int64, Int64, Int64, Float, Int64, Float) -> Void
    typealias AttentionBackward = @convention(c) (UnsafePointer<Float>?, UnsafePointer<Float>?, UnsafePointer<Float>?,
                                                  UnsafePointer<Float>?, UnsafeMutablePointer<Float>?,
                                                  UnsafeMutablePointer<Float>?, UnsafeMutablePointer<Float>?, Int64, Int64,
                                                  Int64, Int64, Float, Int64, Float) -> Void

    /// Reads config key `key` ("f32" or "bf16"; `compute_dtype` unless named).
    init(_ r: KeyReader, key: String = "compute_dtype", default def: ComputeDType) throws {
        let name = try r.string(key, default: def.rawValue)
        guard let dtype = ComputeDType(rawValue: name) else {
            throw TQError.invalid("config key \(r.name(key)): must be \"f32\" or \"bf16\" (got \"\(name)\")")
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

    /// Causal attention of this precision, with tqk_attention's arguments.
    var attention: Attention {
        switch self {
        case .f32: tqk_attention
        case .bf16: tqk_attention_bf16
        }
    }

    /// Its backward, with tqk_attention_backward's arguments.
    var attentionBackward: AttentionBackward {
        switch self {
        case .f32: tqk_attention_backward
        case .bf16: tqk_attention_backward_bf16
        }
    }

    /// The scratch `attentionBackward` takes for one sequence of `seqLen` tokens (tq_kernels.h).
    func attentionBackwardScratchBytes(_ c: LlamaConfig, seqLen: Int) -> Int {
        Int(clamping: tqk_attention_backward_scratch_bytes(self == .bf16 ? 1 : 0, Int64(seqLen), Int64(c.heads),
                                                           Int64(c.kvHeads), Int64(c.headDim)))
    }
}
