import TQKernels

/// The seven quantizable linear layers of a LLaMA block, in Hugging Face naming.
public enum LinearKind: Int, CaseIterable, Sendable {
    case q, k, v, o, gate, up, down

    /// Module path inside `model.layers.N.`.
    public var module: String {
        switch self {
        case .q: "self_attn.q_proj"
        case .k: "self_attn.k_proj"
        case .v: "self_attn.v_proj"
        case .o: "self_attn.o_proj"
        case .gate: "mlp.gate_proj"
        case .up: "mlp.up_proj"
        case .down: "mlp.down_proj"
        }
    }

    /// (out, in) features.
    public func shape(_ c: LlamaConfig) -> (out: Int, in: Int) {
        switch self {
        case .q: (c.qDim, c.hidden)
        case .k, .v: (c.kvDim, c.hidden)
        case .o: (c.hidden, c.qDim)
        case .gate, .up: (c.intermediate, c.hidden)
        case .down: (c.hidden, c.intermediate)
        }
    }

    public func prefix(layer: Int) -> String { "model.layers.\(layer).\(module)" }
}

/// y[rows x out] = x[rows x in] * W^T, W stored out x in (the Hugging Face layout).
@inline(__always)
func linearForward(_ x: UnsafePointer<Float>, rows: Int, weight w: UnsafePointer<Float>, out: Int, in inF: Int,
                   into y: UnsafeMutablePointer<Float>, dtype: ComputeDType = .f32) {
    dtype.gemm(0, 1, Int64(rows), Int64(out), Int64(inF), 1, x, Int64(inF), w, Int64(inF), 0, y, Int64(out))
}

/// As `linearForward`, with a single row taken by the GEMV (a decoding step: the GEMM would pack
/// the whole weight for one row).
@inline(__always)
func linearApply(_ x: UnsafePointer<Float>, rows: Int, weight w: UnsafePointer<Float>, out: Int, in inF: Int,
                 into y: UnsafeMutablePointer<Float>) {
    if rows == 1 {
        tqk_sgemv(w, x, y, Int64(out), Int64(inF))
    } else {
        linearForward(x, rows: rows, weight: w, out: out, in: inF, into: y)
    }
}
