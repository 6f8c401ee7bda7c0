import Foundation
import TQKernels

/// The packed linears of a GPTQ checkpoint directory, validated on open: dtypes, every shape
/// against the bits and group size, g_idx range, finite scales. Everything a reader may index
/// is checked here, so the kernels never see an inconsistent tensor.
public final class PackedCheckpoint: @unchecked Sendable {
    public let directory: String
    public let quantization: GPTQConfig
    public let store: TensorStore
    public let linears: [PackedLinear]
    private let byName: [String: Int]

    public convenience init(directory: String) throws {
        try Runtime.requireSupportedCPU()
        let path = directory + "/config.json"
        let json = try JSONValue.parseFile(path)
        guard let q = try GPTQConfig(configJSON: json, path: path) else {
            throw TQError.format("\(path): no quantization_config: not a packed checkpoint")
        }
        try self.init(store: try TensorStore(directory: directory), quantization: q)
    }

    public init(store: TensorStore, quantization q: GPTQConfig) throws {
        directory = store.directory
        quantization = q
        self.store = store
        let prefixes = store.names.filter { $0.hasSuffix(".qweight") }.map { String($0.dropLast(".qweight".count)) }
        linears = try prefixes.map { try Self.load($0, store: store, q: q) }
        byName = Dictionary(uniqueKeysWithValues: linears.enumerated().map { ($1.name, $0) })
    }

    public func linear(named prefix: String) -> PackedLinear? { byName[prefix].map { linears[$0] } }

    private static func tensor(_ store: TensorStore, _ name: String, _ dtype: DType) throws -> (SafeTensorsFile, TensorInfo) {
        let (file, info) = try store.require(name)
        guard info.dtype == dtype else {
            throw TQError.format("\(file.path): \(name) has dtype \(info.dtype.rawValue), expected \(dtype.rawValue)")
        }
        return (file, info)
    }

    private static func copy<T>(_ file: SafeTensorsFile, _ info: TensorInfo, as: T.Type) -> [T] {
        [T](unsafeUninitializedCapacity: info.count) { buf, n in
            memcpy(buf.baseAddress!, file.bytes(info), info.end - info.begin)
            n = info.count
            file.releasePages(info)
        }
    }

    static func load(_ prefix: String, store: TensorStore, q: GPTQConfig) throws -> PackedLinear {
        let b = q.bits
        let (qwFile, qwInfo) = try tensor(store, prefix + ".qweight", .i32)
        let (giFile, giInfo) = try tensor(store, prefix + ".g_idx", .i32)
        let (qzFile, qzInfo) = try tensor(store, prefix + ".qzeros", .i32)
        let (scFile, scInfo) = try tensor(store, prefix + ".scales", .f16)
        let path = qwFile.path
        guard qwInfo.shape.count == 2, giInfo.shape.count == 1 else {
            throw TQError.format("\(path): \(prefix).qweight must be 2-D and g_idx 1-D")
        }
        let inF = giInfo.shape[0], out = qwInfo.shape[1]
        guard inF > 0, out > 0 else { throw TQError.format("\(path): \(prefix) has an empty dimension") }
        let rows = Int(tqk_packed_len(Int64(inF), Int32(b)))
        guard qwInfo.shape[0] == rows else {
            throw TQError.format("\(path): \(prefix).qweight has \(qwInfo.shape[0]) rows but \(inF) inputs at \(b) bits need \(rows) (do config.json's bits match the tensors?)")
        }
        let group = q.groupSize <= 0 ? inF : q.groupSize
        let nGroups = (inF + group - 1) / group
        let zcols = Int(tqk_packed_len(Int64(out), Int32(b)))
        guard qzInfo.shape == [nGroups, zcols] else {
            throw TQError.format("\(path): \(prefix).qzeros has shape \(qzInfo.shape), expected [\(nGroups), \(zcols)]")
        }
        guard scInfo.shape == [nGroups, out] else {
            throw TQError.format("\(path): \(prefix).scales has shape \(scInfo.shape), expected [\(nGroups), \(out)]")
        }
        let gIdx = copy(giFile, giInfo, as: Int32.self)
        if let bad = gIdx.firstIndex(where: { $0 < 0 || Int($0) >= nGroups }) {
            throw TQError.format("\(path): \(prefix).g_idx[\(bad)] = \(gIdx[bad]) is outside [0, \(nGroups))")
        }
        let scales = copy(scFile, scInfo, as: UInt16.self)
        if let bad = scales.firstIndex(where: { ($0 & 0x7c00) == 0x7c00 }) {
            throw TQError.format("\(path): \(prefix).scales[\(bad)] is not finite")
        }
        var linear = PackedLinear(name: prefix, out: out, inFeatures: inF, bits: b, groupSize: q.groupSize, sym: q.sym,
                                  qweight: copy(qwFile, qwInfo, as: UInt32.self), qzeros: copy(qzFile, qzInfo, as: UInt32.self),
                                  scales: scales, gIdx: gIdx)
        if q.checkpointFormat == "gptq" {
            // v1 stores zero - 1: convert once to the stored-as-is (v2) form the kernels use.
            let z = linear.unpackZeros().map { Int($0) + 1 }
            guard z.allSatisfy({ $0 <= (1 << b) - 1 }) else {
                throw TQError.unsupported("\(path): \(prefix).qzeros holds a v1 zero of \(1 << b), which \(b)-bit codes cannot use")
            }
            linear.qzeros = PackedLinear.packZeros(z.map { UInt8($0) }, nGroups: nGroups, out: out, bits: b)
        }
        return linear
    }
}
