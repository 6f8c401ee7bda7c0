import TQKernels

/// Library-wide settings and the CPU check the kernels depend on.
public enum Runtime {
    /// MAJOR.MINOR.PATCH. The major number is the shared object's SONAME (libtesseraq.so.MAJOR);
    /// scripts/gen_header.py writes the header's version macros from this line.
    public static let version = "0.1.0"
    /// MAJOR * 1000000 + MINOR * 1000 + PATCH, as SQLite numbers its versions.
    public static let versionNumber: Int32 = {
        let p = version.split(separator: ".").map { Int32($0)! }
        return p[0] * 1_000_000 + p[1] * 1_000 + p[2]
    }()

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

    /// Allocation failures in the kernels so far (process-wide, see tq_kernels.h): take it before a
    /// computation and pass it to `checkAllocations` after.
    public static var allocationFailures: Int64 { tqk_alloc_failures() }

    /// Throws TQ_ERR_OUT_OF_MEMORY when a kernel failed to allocate since `mark`: its output is
    /// incomplete and must not be used or written.
    public static func checkAllocations(since mark: Int64, _ what: @autoclosure () -> String) throws {
        if tqk_alloc_failures() != mark {
            throw TQError(.outOfMemory, "\(what()): a kernel could not allocate its working memory")
        }
    }

    /// Runs `body`, then `checkAllocations`. Also when `body` throws: a kernel that failed to
    /// allocate leaves its output incomplete, so whatever went wrong next (a NaN loss, say) is a
    /// consequence and the caller is told TQ_ERR_OUT_OF_MEMORY, the cause.
    public static func checkingAllocations<T>(_ what: @autoclosure () -> String, _ body: () throws -> T) throws -> T {
        let mark = allocationFailures
        do {
            let result = try body()
            try checkAllocations(since: mark, what())
            return result
        } catch {
            try checkAllocations(since: mark, what())
            throw error
        }
    }
}
