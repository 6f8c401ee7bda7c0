import Foundation
import TQKernels

/// Element types of the safetensors format.
public enum DType: String, Sendable, CaseIterable {
    case f64 = "F64", f32 = "F32", f16 = "F16", bf16 = "BF16"
    case i64 = "I64", i32 = "I32", i16 = "I16", i8 = "I8"
    case u64 = "U64", u32 = "U32", u16 = "U16", u8 = "U8", bool = "BOOL"
    case f8e4m3 = "F8_E4M3", f8e5m2 = "F8_E5M2"

    public var size: Int {
        switch self {
        case .f64, .i64, .u64: 8
        case .f32, .i32, .u32: 4
        case .f16, .bf16, .i16, .u16: 2
        case .i8, .u8, .bool, .f8e4m3, .f8e5m2: 1
        }
    }

    /// The dtypes libtesseraq converts to float32.
    public var isFloat: Bool { self == .f32 || self == .f16 || self == .bf16 }
}

/// One tensor of a safetensors file: where its bytes are, already validated.
public struct TensorInfo: Sendable {
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    /// Byte range in the file (absolute, header included).
    public let begin: Int
    public let end: Int
    public var count: Int { shape.reduce(1, *) }
}

/// A memory-mapped safetensors file whose header has been checked against the file before
/// any data is touched: offsets inside the buffer, no overlaps, byte counts that match shapes.
public final class SafeTensorsFile: @unchecked Sendable {
    public let path: String
    public let tensors: [String: TensorInfo]
    public let metadata: [String: String]
    let file: MappedFile

    public init(path: String) throws {
        self.path = path
        file = try MappedFile(path: path)
        guard file.size >= 8 else { throw TQError.format("\(path): file too short for a safetensors header (\(file.size) bytes)") }
        let headerLen = file.base.loadUnaligned(as: UInt64.self).littleEndian
        guard headerLen <= UInt64(file.size - 8) else {
            throw TQError.format("\(path): header length \(headerLen) runs past the end of the file (\(file.size) bytes)")
        }
        guard headerLen <= 100_000_000 else { throw TQError.format("\(path): header length \(headerLen) is unreasonably large") }
        let dataStart = 8 + Int(headerLen)
        let headerData = Data(bytes: file.base + 8, count: Int(headerLen))
        file.release(0, dataStart)   // copied: its pages need not stay resident
        let json = try JSONValue.parse(headerData, what: "\(path) header")
        guard let obj = json.object else { throw TQError.format("\(path): header is not a JSON object") }
        var tensors: [String: TensorInfo] = [:]
        var meta: [String: String] = [:]
        for (name, value) in obj {
            if name == "__metadata__" {
                guard let m = value.object else { throw TQError.format("\(path): __metadata__ is not an object") }
                for (k, v) in m { meta[k] = v.string ?? "" }
                continue
            }
            tensors[name] = try Self.parseEntry(name, value, path: path, dataStart: dataStart, fileSize: file.size)
        }
        let sorted = tensors.values.sorted { ($0.begin, $0.end) < ($1.begin, $1.end) }
        for (a, b) in zip(sorted, sorted.dropFirst()) where b.begin < a.end {
            throw TQError.format("\(path): tensors \(a.name) and \(b.name) overlap")
        }
        self.tensors = tensors
        metadata = meta
    }

    private static func parseEntry(_ name: String, _ e: JSONValue, path: String, dataStart: Int, fileSize: Int) throws -> TensorInfo {
        guard e.object != nil else { throw TQError.format("\(path): entry \(name) is not an object") }
        guard let dt = e["dtype"]?.string else { throw TQError.format("\(path): tensor \(name) has no dtype") }
        guard let dtype = DType(rawValue: dt) else { throw TQError.unsupported("\(path): tensor \(name) has unsupported dtype \(dt)") }
        guard let shape = integers(e["shape"]), shape.allSatisfy({ $0 >= 0 }) else {
            throw TQError.format("\(path): tensor \(name) has a malformed shape")
        }
        guard let off = integers(e["data_offsets"]), off.count == 2, off[0] >= 0, off[0] <= off[1] else {
            throw TQError.format("\(path): tensor \(name) has malformed data_offsets")
        }
        guard off[1] <= fileSize - dataStart else {
            throw TQError.format("\(path): tensor \(name) data_offsets [\(off[0]), \(off[1])] run past the end of the file")
        }
        var bytes = dtype.size
        for d in shape {
            let (m, overflow) = bytes.multipliedReportingOverflow(by: d)
            guard !overflow, m <= fileSize else { throw TQError.format("\(path): tensor \(name) shape \(shape) is larger than the file") }
            bytes = m
        }
        guard bytes == off[1] - off[0] else {
            throw TQError.format("\(path): tensor \(name) shape \(shape) of \(dt) needs \(bytes) bytes but data_offsets give \(off[1] - off[0])")
        }
        return TensorInfo(name: name, dtype: dtype, shape: shape, begin: dataStart + off[0], end: dataStart + off[1])
    }

    private static func integers(_ v: JSONValue?) -> [Int]? {
        guard let a = v?.array else { return nil }
        var out: [Int] = []
        for x in a {
            guard case .int(let i) = x else { return nil }
            out.append(i)
        }
        return out
    }

    /// Raw bytes of a tensor inside the map (valid while this object lives).
    public func bytes(_ t: TensorInfo) -> UnsafeRawPointer { file.base + t.begin }

    /// Converts a float tensor (F32, F16, BF16) into `out`, which holds `t.count` floats. The tensor
    /// is read in slices whose mapped pages are dropped as soon as they are converted, so a large
    /// tensor (an embedding) is never resident twice.
    public func readFloats(_ t: TensorInfo, into out: UnsafeMutablePointer<Float>) throws {
        guard let width = [DType.f32: 4, .f16: 2, .bf16: 2][t.dtype] else {
            throw TQError.unsupported("\(path): tensor \(t.name) has dtype \(t.dtype.rawValue); expected F32, F16 or BF16")
        }
        forEachSlice(t, width: width) { done, n, src in
            switch t.dtype {
            case .f32: memcpy(out + done, src, n * 4)
            // Raw pointers: a 2-byte tensor may start at an odd offset, so it is no UInt16 array.
            case .f16: tqk_f16_to_f32(src, out + done, Int64(n))
            default: tqk_bf16_to_f32(src, out + done, Int64(n))
            }
        }
    }

    /// Copies a tensor's bytes as stored into `out` (t.end - t.begin bytes), dropping the mapped
    /// pages as it goes like `readFloats`.
    public func copyBytes(_ t: TensorInfo, into out: UnsafeMutableRawPointer) {
        forEachSlice(t, width: t.dtype.size) { done, n, src in memcpy(out + done * t.dtype.size, src, n * t.dtype.size) }
    }

    /// Writes a tensor's bytes as stored through `handle`, dropping the mapped pages as it goes like
    /// `readFloats` (a checkpoint's copied embeddings are never resident whole).
    func write(_ t: TensorInfo, to handle: FileHandle) throws {
        try forEachSlice(t, width: t.dtype.size) { _, n, src in
            try handle.write(contentsOf: Data(bytesNoCopy: UnsafeMutableRawPointer(mutating: src), count: n * t.dtype.size,
                                              deallocator: .none))
        }
    }

    /// Calls `body(first, count, bytes)` on slices of 1M elements, then drops their mapped pages.
    private func forEachSlice(_ t: TensorInfo, width: Int, _ body: (Int, Int, UnsafeRawPointer) throws -> Void) rethrows {
        let slice = 1 << 20
        var done = 0
        while done < t.count {
            let n = min(slice, t.count - done)
            try body(done, n, bytes(t) + done * width)
            file.release(t.begin + done * width, t.begin + (done + n) * width)
            done += n
        }
    }

    /// Lets the kernel drop the map's pages of a tensor that has been copied out (see MappedFile.release).
    public func releasePages(_ t: TensorInfo) { file.release(t.begin, t.end) }
}
