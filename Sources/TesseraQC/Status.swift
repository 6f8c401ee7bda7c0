#if canImport(Glibc)
import Glibc
#endif
import TesseraQ

// The calling thread's last error message, owned by a pthread key so each thread keeps its own.
private let errorKey: pthread_key_t = {
    var key = pthread_key_t()
    pthread_key_create(&key) { free($0) }
    return key
}()

func setLastError(_ message: String) {
    free(pthread_getspecific(errorKey))
    pthread_setspecific(errorKey, strdup(message))
}

/// Runs `body`, turning any thrown error into a status code and the thread's last error.
func guarded(_ body: () throws -> Void) -> Int32 {
    Runtime.applyThreads()
    do {
        try body()
        return 0
    } catch let e as TQError {
        setLastError(e.message)
        return e.status
    } catch {
        setLastError("internal error: \(error)")
        return TQError.Kind.internal.rawValue
    }
}

func invalid(_ message: String) -> TQError { TQError(.invalidArgument, message) }

/// Throws unless `p` is non-NULL; `name` is the parameter's name in the C signature.
func required<T>(_ p: T?, _ name: String) throws -> T {
    guard let p else { throw invalid("\(name) is NULL") }
    return p
}

/// The calling thread's last error message ("" when none). Valid until this thread's next call.
@c public func tq_last_error() -> UnsafePointer<CChar> {
    if let p = pthread_getspecific(errorKey) { return UnsafePointer(p.assumingMemoryBound(to: CChar.self)) }
    return UnsafePointer(emptyString)
}

nonisolated(unsafe) private let emptyString: UnsafeMutablePointer<CChar> = strdup("")
nonisolated(unsafe) private let versionString: UnsafeMutablePointer<CChar> = strdup(Runtime.version)
nonisolated(unsafe) private let statusNames: [Int32: UnsafeMutablePointer<CChar>] = [
    0: strdup("TQ_OK"), -1: strdup("TQ_ERR_INVALID_ARGUMENT"), -2: strdup("TQ_ERR_IO"), -3: strdup("TQ_ERR_FORMAT"),
    -4: strdup("TQ_ERR_UNSUPPORTED"), -5: strdup("TQ_ERR_OUT_OF_MEMORY"), -6: strdup("TQ_ERR_CANCELLED"),
    -7: strdup("TQ_ERR_NUMERIC"), -8: strdup("TQ_ERR_CPU"), -9: strdup("TQ_ERR_INTERNAL"),
]

/// The library version, "MAJOR.MINOR.PATCH".
@c public func tq_version() -> UnsafePointer<CChar> { UnsafePointer(versionString) }

/// The name of a status code. Every function returns 0 (TQ_OK) or one of:
/// -1 TQ_ERR_INVALID_ARGUMENT, -2 TQ_ERR_IO, -3 TQ_ERR_FORMAT, -4 TQ_ERR_UNSUPPORTED,
/// -5 TQ_ERR_OUT_OF_MEMORY, -6 TQ_ERR_CANCELLED, -7 TQ_ERR_NUMERIC, -8 TQ_ERR_CPU, -9 TQ_ERR_INTERNAL.
/// Unknown codes give "TQ_ERR_UNKNOWN".
@c public func tq_status_name(_ status: Int32) -> UnsafePointer<CChar> {
    UnsafePointer(statusNames[status] ?? unknownStatus)
}
nonisolated(unsafe) private let unknownStatus: UnsafeMutablePointer<CChar> = strdup("TQ_ERR_UNKNOWN")

/// Sets the number of OpenMP threads the kernels use (n <= 0: one per core).
@c public func tq_set_num_threads(_ n: Int32) -> Int32 {
    guarded { Runtime.setThreads(Int(n)) }
}

/// The number of threads the kernels will use.
@c public func tq_get_num_threads() -> Int32 {
    Runtime.applyThreads()
    return Int32(Runtime.threads)
}
