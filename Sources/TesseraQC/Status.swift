//! Library: version, status codes, errors, threads
//! Every function that can fail returns an int32_t status: TQ_OK (0) or a negative tq_status.
//! The calling thread's message for its last failure is tq_last_error(); every status-returning
//! function clears it ("") when it succeeds. tq_last_error, tq_status_name, tq_version,
//! tq_version_number, tq_get_num_threads and the *_free functions leave it unchanged, so a
//! message survives cleanup. All functions in this section may be called from any thread.
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

private func setLastError(_ message: String?) {
    free(pthread_getspecific(errorKey))
    pthread_setspecific(errorKey, message.map { strdup($0) })
}

/// Runs `body`, turning any thrown error into a status code and the thread's last error; a
/// success clears the last error.
func guarded(_ body: () throws -> Void) -> Int32 {
    Runtime.applyThreads()
    do {
        try Runtime.checkingAllocations("out of memory", body)
        setLastError(nil)
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

/// The calling thread's message for its last failed call, "" when its last status-returning call
/// succeeded. Valid until this thread's next call into the library.
@c public func tq_last_error() -> UnsafePointer<CChar> {
    if let p = pthread_getspecific(errorKey) { return UnsafePointer(p.assumingMemoryBound(to: CChar.self)) }
    return UnsafePointer(emptyString)
}

nonisolated(unsafe) private let emptyString: UnsafeMutablePointer<CChar> = strdup("")
nonisolated(unsafe) private let versionString: UnsafeMutablePointer<CChar> = strdup(Runtime.version)
nonisolated(unsafe) private let statusNames: [Int32: UnsafeMutablePointer<CChar>] = {
    var names: [Int32: UnsafeMutablePointer<CChar>] = [0: strdup("TQ_OK")!]
    for kind in TQError.Kind.allCases { names[kind.rawValue] = strdup(kind.cName) }
    return names
}()
nonisolated(unsafe) private let unknownStatus: UnsafeMutablePointer<CChar> = strdup("TQ_ERR_UNKNOWN")

/// The library's version, "MAJOR.MINOR.PATCH" (TQ_VERSION in the header it was built with).
@c public func tq_version() -> UnsafePointer<CChar> { UnsafePointer(versionString) }

/// The library's version as MAJOR * 1000000 + MINOR * 1000 + PATCH (TQ_VERSION_NUMBER): compare it
/// with the header's to detect a library older than the header.
@c public func tq_version_number() -> Int32 { Runtime.versionNumber }

/// The name of a status code ("TQ_OK", "TQ_ERR_IO", ...); "TQ_ERR_UNKNOWN" for other values.
@c public func tq_status_name(_ status: Int32) -> UnsafePointer<CChar> {
    UnsafePointer(statusNames[status] ?? unknownStatus)
}

/// Sets the number of OpenMP threads the kernels use (n <= 0: one per core). The setting is the
/// library's; each call applies it on its own thread, so a change reaches calls that start after it
/// (calls already running keep their thread count).
@c public func tq_set_num_threads(_ n: Int32) -> Int32 {
    guarded { Runtime.setThreads(Int(n)) }
}

/// The number of threads the kernels will use.
@c public func tq_get_num_threads() -> Int32 {
    Runtime.applyThreads()
    return Int32(Runtime.threads)
}
