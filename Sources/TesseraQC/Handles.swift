import TesseraQ

/// Opaque handles are retained Swift objects; `free` releases them.
func retainHandle<T: AnyObject>(_ object: T) -> OpaquePointer {
    OpaquePointer(Unmanaged.passRetained(object).toOpaque())
}

/// The body of every `*_open`: checks the out-pointer and the path, clears `*out`, and on success
/// stores a handle to the object `make` builds from the path.
func openHandle<T: AnyObject>(_ path: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<OpaquePointer?>?, _ outName: String,
                              _ make: (String) throws -> T) -> Int32 {
    guarded {
        let o = try required(out, outName)
        o.pointee = nil
        o.pointee = retainHandle(try make(String(cString: try required(path, "path"))))
    }
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
