#if canImport(Glibc)
import Glibc
#endif
import TQKernels

/// A heap array of floats with a stable address, handed to the C kernels without copies.
/// Allocated through the kernels' allocator (64-byte aligned, counted, fault-injectable), so a
/// failed allocation is a thrown TQ_ERR_OUT_OF_MEMORY instead of the trap of Swift's allocator:
/// these buffers are the library's large allocations (activations, weights, caches).
public final class FloatBuffer: @unchecked Sendable {
    public let p: UnsafeMutablePointer<Float>
    public let count: Int

    public init(count: Int) throws {
        self.count = count
        p = try allocateZeroed(count, of: Float.self)
    }

    public convenience init(_ values: [Float]) throws {
        try self.init(count: values.count)
        values.withUnsafeBufferPointer { p.update(from: $0.baseAddress!, count: values.count) }
    }

    deinit { free(p) }

    public var array: [Float] { Array(UnsafeBufferPointer(start: p, count: count)) }
}

/// `count` zeroed elements (at least one) from the kernels' allocator, to release with free();
/// throws TQ_ERR_OUT_OF_MEMORY naming the size when the allocation fails.
func allocateZeroed<T>(_ count: Int, of: T.Type) throws -> UnsafeMutablePointer<T> {
    guard let raw = tqk_alloc_zeroed(max(count, 1), MemoryLayout<T>.stride) else {
        let mb = Double(max(count, 1)) * Double(MemoryLayout<T>.stride) / 1e6
        throw TQError(.outOfMemory, "could not allocate \(mb < 1 ? "under 1" : String(Int(mb.rounded(.up)))) MB")
    }
    return raw.bindMemory(to: T.self, capacity: max(count, 1))
}
