#if canImport(Glibc)
import Glibc
#endif
import TQKernels

/// Calibration activations [samples x length x hidden] kept between blocks, in float32 or,
/// to halve memory, bfloat16/float16 (the reference keeps bf16).
public final class ActivationCache: @unchecked Sendable {
    public let samples: Int
    public let rowsPerSample: Int
    public let width: Int
    public let dtype: CacheDType
    private let f32: FloatBuffer?
    private let half: UnsafeMutablePointer<UInt16>?

    public init(samples: Int, rowsPerSample: Int, width: Int, dtype: CacheDType) throws {
        self.samples = samples
        self.rowsPerSample = rowsPerSample
        self.width = width
        self.dtype = dtype
        let n = samples * rowsPerSample * width
        if dtype == .f32 {
            f32 = try FloatBuffer(count: n)
            half = nil
        } else {
            f32 = nil
            half = try allocateZeroed(n, of: UInt16.self)
        }
    }

    deinit { free(half) }

    var sampleCount: Int { rowsPerSample * width }

    /// Copies sample `i` into `out` (float32).
    public func read(_ i: Int, into out: UnsafeMutablePointer<Float>) {
        let off = i * sampleCount, n = Int64(sampleCount)
        switch dtype {
        case .f32: out.update(from: f32!.p + off, count: sampleCount)
        case .bf16: tqk_bf16_to_f32(half! + off, out, n)
        case .f16: tqk_f16_to_f32(half! + off, out, n)
        }
    }

    /// Stores `values` (float32) as sample `i`, rounding to the cache's dtype.
    public func write(_ i: Int, from values: UnsafePointer<Float>) {
        let off = i * sampleCount, n = Int64(sampleCount)
        switch dtype {
        case .f32: (f32!.p + off).update(from: values, count: sampleCount)
        case .bf16: tqk_f32_to_bf16(values, half! + off, n)
        case .f16: tqk_f32_to_f16(values, half! + off, n)
        }
    }

    /// Reads samples `indices` one after another into `out`.
    public func gather(_ indices: [Int], into out: UnsafeMutablePointer<Float>) {
        for (k, i) in indices.enumerated() { read(i, into: out + k * sampleCount) }
    }

    public static func bytes(samples: Int, rowsPerSample: Int, width: Int, dtype: CacheDType) -> Int {
        saturatingProduct(samples, rowsPerSample, width, dtype.bytes)
    }
}
