import TesseraQ

/// Opaque handles are retained Swift objects; `free` releases them.
func retainHandle<T: AnyObject>(_ object: T) -> OpaquePointer {
    OpaquePointer(Unmanaged.passRetained(object).toOpaque())
}

func borrowHandle<T: AnyObject>(_ handle: OpaquePointer?, _ name: String, as: T.Type) throws -> T {
    guard let handle else { throw invalid("\(name) is NULL") }
    return Unmanaged<T>.fromOpaque(UnsafeRawPointer(handle)).takeUnretainedValue()
}

func releaseHandle<T: AnyObject>(_ handle: OpaquePointer?, as: T.Type) {
    guard let handle else { return }
    Unmanaged<T>.fromOpaque(UnsafeRawPointer(handle)).release()
}

/// A C progress callback: return non-zero to cancel the job.
public typealias TQProgressCallback = @convention(c) (Int64, Int64, UnsafeMutableRawPointer?) -> Int32

func progressHandler(_ cb: TQProgressCallback?, _ user: UnsafeMutableRawPointer?) -> ProgressHandler? {
    guard let cb else { return nil }
    return { done, total in cb(Int64(done), Int64(total), user) == 0 }
}
