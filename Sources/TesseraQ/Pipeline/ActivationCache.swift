#if canImport(Glibc)
import Glibc
#endif
import TQKernels

/// Calibration activations [samples x length x hidden] kept between blocks, in float32 or,
/// to halve memory, bfloat16/float16 (the reference keeps bf16). In memory, or out of core: in
/// a scratch file mapped shared, whose pages leave the resident set after every sample read or
/// written, so the calibration size is bounded by disk rather than RAM (`cache_budget_mb`).
public final class ActivationCache: @unchecked Sendable {
    public let samples: Int
    public let rowsPerSample: Int
    public let width: Int
    public let dtype: CacheDType
    private let base: UnsafeMutableRawPointer
    /// The scratch file holding the cache when it is out of core.
    let scratch: ScratchFile?

    /// In memory, or in a scratch file under `directory` when one is given.
    public init(samples: Int, rowsPerSample: Int, width: Int, dtype: CacheDType, directory: String? = nil) throws {
        self.samples = samples
        self.rowsPerSample = rowsPerSample
        self.width = width
        self.dtype = dtype
        let bytes = Self.bytes(samples: samples, rowsPerSample: rowsPerSample, width: width, dtype: dtype)
        if let directory {
            let f = try ScratchFile(directory: directory, size: bytes)
            scratch = f
            base = f.base
        } else {
            scratch = nil
            base = UnsafeMutableRawPointer(try allocateZeroed(max(bytes, 1), of: UInt8.self))
        }
    }

    deinit { if scratch == nil { free(base) } }

    /// Whether the cache lives in a scratch file.
    public var isOutOfCore: Bool { scratch != nil }

    var sampleCount: Int { rowsPerSample * width }

    private var f32: UnsafeMutablePointer<Float> { base.assumingMemoryBound(to: Float.self) }
    private var half: UnsafeMutablePointer<UInt16> { base.assumingMemoryBound(to: UInt16.self) }

    /// Copies sample `i` into `out` (float32).
    public func read(_ i: Int, into out: UnsafeMutablePointer<Float>) {
        let off = i * sampleCount, n = Int64(sampleCount)
        switch dtype {
        case .f32: out.update(from: f32 + off, count: sampleCount)
        case .bf16: tqk_bf16_to_f32(half + off, out, n)
        case .f16: tqk_f16_to_f32(half + off, out, n)
        }
        release(i)
    }

    /// Stores `values` (float32) as sample `i`, rounding to the cache's dtype.
    public func write(_ i: Int, from values: UnsafePointer<Float>) {
        let off = i * sampleCount, n = Int64(sampleCount)
        switch dtype {
        case .f32: (f32 + off).update(from: values, count: sampleCount)
        case .bf16: tqk_f32_to_bf16(values, half + off, n)
        case .f16: tqk_f32_to_f16(values, half + off, n)
        }
        release(i)
    }

    /// Samples `range` as stored (the cache's dtype), to hand to another rank's cache.
    func storedBytes(_ range: Range<Int>) -> [UInt8] {
        let bytes = sampleCount * dtype.bytes
        defer { for i in range { release(i) } }
        return Array(UnsafeRawBufferPointer(start: base + range.lowerBound * bytes, count: range.count * bytes))
    }

    /// Overwrites samples `range` with bytes `storedBytes` gave.
    func setStoredBytes(_ range: Range<Int>, _ stored: [UInt8]) {
        let bytes = sampleCount * dtype.bytes
        precondition(stored.count == range.count * bytes, "stored samples of another shape")
        stored.withUnsafeBytes { (base + range.lowerBound * bytes).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        for i in range { release(i) }
    }

    private func release(_ i: Int) {
        guard let scratch else { return }
        let bytes = sampleCount * dtype.bytes
        scratch.release(i * bytes, (i + 1) * bytes)
    }

    /// Reads samples `indices` one after another into `out`.
    public func gather(_ indices: [Int], into out: UnsafeMutablePointer<Float>) {
        for (k, i) in indices.enumerated() { read(i, into: out + k * sampleCount) }
    }

    public static func bytes(samples: Int, rowsPerSample: Int, width: Int, dtype: CacheDType) -> Int {
        saturatingProduct(samples, rowsPerSample, width, dtype.bytes)
    }
}
