import TQKernels

extension LlamaConfig.MLPActivation {
    /// out = act(g) * u over n elements.
    func forward(_ g: UnsafePointer<Float>, _ u: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, count n: Int) {
        switch self {
        case .silu: tqk_swiglu(g, u, out, Int64(n))
        case .geluTanh: tqk_geglu(g, u, out, Int64(n))
        }
    }

    /// dg, du from dout, the inputs being those of the forward.
    func backward(_ g: UnsafePointer<Float>, _ u: UnsafePointer<Float>, dout: UnsafePointer<Float>,
                  dg: UnsafeMutablePointer<Float>, du: UnsafeMutablePointer<Float>, count n: Int) {
        switch self {
        case .silu: tqk_swiglu_backward(g, u, dout, dg, du, Int64(n))
        case .geluTanh: tqk_geglu_backward(g, u, dout, dg, du, Int64(n))
        }
    }
}
