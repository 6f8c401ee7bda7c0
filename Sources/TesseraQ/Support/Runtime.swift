import TQKernels

/// Library-wide settings and the CPU check the kernels depend on.
public enum Runtime {
    public static let version = "0.1.0"

    /// Throws unless the CPU runs the AVX2/FMA/F16C kernels; called before any compute.
    public static func requireSupportedCPU() throws {
        if tqk_cpu_supported() == 0 {
            throw TQError(.cpu, "this CPU lacks AVX2, FMA or F16C, which libtesseraq's kernels require")
        }
    }

    public static func setThreads(_ n: Int) { tqk_set_num_threads(Int32(n)) }
    /// Makes the calling thread use the library's thread count (OpenMP keeps it per thread).
    public static func applyThreads() { tqk_apply_num_threads() }
    public static var threads: Int { Int(tqk_get_num_threads()) }
}
