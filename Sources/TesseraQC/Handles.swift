import Foundation
import TesseraQ

/// The C handle types. In Swift each is an OpaquePointer; scripts/gen_header.py gives each its
/// own opaque struct in the header (`tq_model *`, `tq_packed *`, `tq_tokenizer *`), so a C
/// compiler rejects a handle passed where another type is expected, and every call checks the
/// handle against the registry below at run time as well.
public typealias TQModelHandle = OpaquePointer
public typealias TQPackedHandle = OpaquePointer
public typealias TQTokenizerHandle = OpaquePointer
public typealias TQSessionHandle = OpaquePointer
public typealias TQSamplerHandle = OpaquePointer
public typealias TQTextStreamHandle = OpaquePointer

/// What a handle is; the raw value is its type in the header.
enum HandleKind: String {
    case model = "tq_model", packed = "tq_packed", tokenizer = "tq_tokenizer", session = "tq_session", sampler = "tq_sampler"
    case textStream = "tq_text_stream"
}

/// An object a handle of one kind stands for.
protocol HandleObject: AnyObject {
    static var handleKind: HandleKind { get }
}

/// Live handles by address. A handle is the address of its retained Swift object; a call looks
/// it up here before touching it, so a handle of another type, one already freed or a stray
/// pointer is refused with a message instead of being dereferenced. Use after free goes
/// undetected only once the address is reused by a newer handle.
private final class HandleRegistry: @unchecked Sendable {
    private let lock = NSLock()
    private var live: [UnsafeMutableRawPointer: (kind: HandleKind, object: Unmanaged<AnyObject>)] = [:]

    func insert(_ object: AnyObject, _ kind: HandleKind) -> OpaquePointer {
        let u = Unmanaged.passRetained(object)
        let address = u.toOpaque()
        lock.withLock { live[address] = (kind, u) }
        return OpaquePointer(address)
    }

    /// The object, strongly referenced by the caller, so a concurrent free cannot release it mid-call.
    func borrow(_ handle: OpaquePointer, _ kind: HandleKind, _ name: String) throws -> AnyObject {
        try lock.withLock {
            guard let entry = live[UnsafeMutableRawPointer(handle)] else {
                throw invalid("\(name) is not a live \(kind.rawValue) handle (never opened, or already freed)")
            }
            guard entry.kind == kind else {
                throw invalid("\(name) is a \(entry.kind.rawValue) handle where a \(kind.rawValue) handle is expected")
            }
            return entry.object.takeUnretainedValue()
        }
    }

    /// Removes and releases a live handle of `kind`; anything else is left alone.
    func remove(_ handle: OpaquePointer, _ kind: HandleKind) {
        let entry: Unmanaged<AnyObject>? = lock.withLock {
            let key = UnsafeMutableRawPointer(handle)
            guard let e = live[key], e.kind == kind else { return nil }
            live[key] = nil
            return e.object
        }
        entry?.release()
    }
}

private let registry = HandleRegistry()

/// The body of every `*_open`: checks the out-pointer and the path, clears `*out`, and on success
/// stores a handle to the object `make` builds from the path.
func openHandle<T: HandleObject>(_ path: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<OpaquePointer?>?,
                                 _ outName: String, _ make: (String) throws -> T) -> Int32 {
    createHandle(out, outName) { try make(String(cString: try required(path, "path"))) }
}

/// The body of an `*_open` that takes no path: checks and clears `*out`, then stores a handle to
/// the object `make` builds.
func createHandle<T: HandleObject>(_ out: UnsafeMutablePointer<OpaquePointer?>?, _ outName: String,
                                   _ make: () throws -> T) -> Int32 {
    guarded {
        let o = try required(out, outName)
        o.pointee = nil
        o.pointee = registry.insert(try make(), T.handleKind)
    }
}

/// The object behind a handle; `name` is the parameter's name in the C signature.
func borrowHandle<T: HandleObject>(_ handle: OpaquePointer?, _ name: String, as: T.Type) throws -> T {
    guard let handle else { throw invalid("\(name) is NULL") }
    guard let object = try registry.borrow(handle, T.handleKind, name) as? T else {
        throw TQError(.internal, "\(name): a \(T.handleKind.rawValue) handle holds an unexpected object")
    }
    return object
}

/// Frees a handle; NULL, a handle of another type and one already freed are ignored.
func releaseHandle<T: HandleObject>(_ handle: OpaquePointer?, as: T.Type) {
    guard let handle else { return }
    registry.remove(handle, T.handleKind)
}

/// A C progress callback: return non-zero to cancel the job.
public typealias TQProgressCallback = @convention(c) (_ done: Int64, _ total: Int64, _ user: UnsafeMutableRawPointer?) -> Int32

func progressHandler(_ cb: TQProgressCallback?, _ user: UnsafeMutableRawPointer?) -> ProgressHandler? {
    guard let cb else { return nil }
    return { done, total in cb(Int64(done), Int64(total), user) == 0 }
}
