import Foundation
import TQKernels

/// The `quantization_config` of a GPTQ checkpoint (FORMATS.md).
public struct GPTQConfig: Sendable, Equatable {
    public var bits: Int
    public var groupSize: Int
    public var sym: Bool
    public var descAct: Bool
    /// "gptq_v2" stores zero points as they are; "gptq" (v1) stores zero - 1.
    public var checkpointFormat: String

    public static let supportedBits = [2, 3, 4, 8]

    public init(bits: Int, groupSize: Int, sym: Bool, descAct: Bool = false, checkpointFormat: String = "gptq_v2") {
        self.bits = bits
        self.groupSize = groupSize
        self.sym = sym
        self.descAct = descAct
        self.checkpointFormat = checkpointFormat
    }

    /// Reads `quantization_config` from a parsed config.json; nil when the model is not quantized.
    public init?(configJSON json: JSONValue, path: String) throws {
        guard let q = json["quantization_config"], !q.isNull else { return nil }
        guard q.object != nil else { throw TQError.format("\(path): quantization_config is not an object") }
        let method = q["quant_method"]?.string ?? ""
        guard method == "gptq" else { throw TQError.unsupported("\(path): quant_method \(method) is not supported (only gptq)") }
        guard let bits = q["bits"]?.int, Self.supportedBits.contains(bits) else {
            throw TQError.unsupported("\(path): quantization_config.bits must be one of 2, 3, 4, 8")
        }
        guard let g = q["group_size"]?.int, g == -1 || g > 0 else {
            throw TQError.format("\(path): quantization_config.group_size must be -1 or positive")
        }
        let format = q["checkpoint_format"]?.string ?? "gptq"
        guard format == "gptq" || format == "gptq_v2" else {
            throw TQError.unsupported("\(path): checkpoint_format \(format) is not supported (gptq, gptq_v2)")
        }
        if let pack = q["pack_dtype"]?.string, pack != "int32" {
            throw TQError.unsupported("\(path): pack_dtype \(pack) is not supported (int32)")
        }
        self.init(bits: bits, groupSize: g, sym: q["sym"]?.bool ?? false, descAct: q["desc_act"]?.bool ?? false,
                  checkpointFormat: format)
    }

    public var json: [String: Any] {
        ["quant_method": "gptq", "bits": bits, "group_size": groupSize, "desc_act": descAct, "sym": sym,
         "checkpoint_format": checkpointFormat, "pack_dtype": "int32"]
    }
}

/// A linear layer in the GPTQ packed layout, as stored on disk.
public struct PackedLinear: Sendable {
    /// Module prefix, e.g. "model.layers.0.self_attn.q_proj".
    public let name: String
    public let out: Int
    public let inFeatures: Int
    public let bits: Int
    /// -1 for per-channel, as in quantization_config.
    public let groupSize: Int
    public let sym: Bool
    public var qweight: [UInt32]
    /// Zero points as they are (v2 semantics, whatever the file's format).
    public var qzeros: [UInt32]
    /// float16 bit patterns.
    public var scales: [UInt16]
    public var gIdx: [Int32]
    /// gIdx[i] == i / group for every i: kernels take the grouped fast path.
    public let trivialGIdx: Bool

    public var group: Int { groupSize <= 0 ? inFeatures : groupSize }
    public var nGroups: Int { (inFeatures + group - 1) / group }
    public var packedBytes: Int { (qweight.count + qzeros.count) * 4 + scales.count * 2 + gIdx.count * 4 }

    public init(name: String, out: Int, inFeatures: Int, bits: Int, groupSize: Int, sym: Bool,
                qweight: [UInt32], qzeros: [UInt32], scales: [UInt16], gIdx: [Int32]) {
        self.name = name
        self.out = out
        self.inFeatures = inFeatures
        self.bits = bits
        self.groupSize = groupSize
        self.sym = sym
        self.qweight = qweight
        self.qzeros = qzeros
        self.scales = scales
        self.gIdx = gIdx
        let g = groupSize <= 0 ? inFeatures : groupSize
        trivialGIdx = gIdx.enumerated().allSatisfy { Int($0.element) == $0.offset / g }
    }

    /// Packs a quantized layer (codes in input order; g_idx from the layer, i / group when it has none).
    public init(name: String, _ q: QuantizedLinear, groupSize: Int) {
        let b = Int32(q.spec.bits)
        var qweight = [UInt32](repeating: 0, count: Int(tqk_packed_len(Int64(q.inFeatures), b)) * q.out)
        tqk_pack_qweight(q.codes, Int64(q.out), Int64(q.inFeatures), b, &qweight)
        let qzeros = Self.packZeros(q.zeros, nGroups: q.nGroups, out: q.out, bits: q.spec.bits)
        var scales = [UInt16](repeating: 0, count: q.scales.count)
        tqk_f32_to_f16(q.scales, &scales, Int64(q.scales.count))
        self.init(name: name, out: q.out, inFeatures: q.inFeatures, bits: q.spec.bits, groupSize: groupSize, sym: q.spec.sym,
                  qweight: qweight, qzeros: qzeros, scales: scales, gIdx: q.groupIndex)
    }

    /// Adds qweight, qzeros (as given: v2 or v1 words), scales and g_idx to a safetensors writer.
    public func addTensors(to writer: inout SafeTensorsWriter, zeros: [UInt32]) {
        writer.add(name + ".qweight", .i32, [qweight.count / out, out], qweight)
        writer.add(name + ".qzeros", .i32, [nGroups, qzeros.count / nGroups], zeros)
        writer.add(name + ".scales", .f16, [nGroups, out], scales)
        writer.add(name + ".g_idx", .i32, [inFeatures], gIdx)
    }

    /// Zero points [nGroups x out] packed along the output dimension.
    public static func packZeros(_ zeros: [UInt8], nGroups: Int, out: Int, bits: Int) -> [UInt32] {
        var packed = [UInt32](repeating: 0, count: nGroups * Int(tqk_packed_len(Int64(out), Int32(bits))))
        tqk_pack_qzeros(zeros, Int64(nGroups), Int64(out), Int32(bits), &packed)
        return packed
    }

    private func withKernelArgs<R>(_ body: (UnsafePointer<UInt32>, UnsafePointer<UInt32>, UnsafePointer<UInt16>, UnsafePointer<Int32>?) -> R) -> R {
        qweight.withUnsafeBufferPointer { qw in
            qzeros.withUnsafeBufferPointer { qz in
                scales.withUnsafeBufferPointer { sc in
                    gIdx.withUnsafeBufferPointer { gi in
                        body(qw.baseAddress!, qz.baseAddress!, sc.baseAddress!, trivialGIdx ? nil : gi.baseAddress)
                    }
                }
            }
        }
    }

    /// Codes [out x in].
    public func unpack(into codes: UnsafeMutablePointer<UInt8>) {
        qweight.withUnsafeBufferPointer { tqk_unpack_qweight($0.baseAddress, Int64(out), Int64(inFeatures), Int32(bits), codes) }
    }

    /// Zero points [nGroups x out].
    public func unpackZeros() -> [UInt8] {
        var z = [UInt8](repeating: 0, count: nGroups * out)
        qzeros.withUnsafeBufferPointer { tqk_unpack_qzeros($0.baseAddress, Int64(nGroups), Int64(out), Int32(bits), &z) }
        return z
    }

    /// Rows [rowBegin, rowEnd) of W into out [(rowEnd - rowBegin) x in].
    public func dequantize(rows: Range<Int>, into w: UnsafeMutablePointer<Float>) {
        withKernelArgs { qw, qz, sc, gi in
            tqk_packed_dequantize(qw, qz, sc, gi, Int64(out), Int64(inFeatures), Int32(bits), Int64(group),
                                  Int64(rows.lowerBound), Int64(rows.upperBound), w)
        }
    }

    public func dequantized() throws -> FloatBuffer {
        let w = try FloatBuffer(count: out * inFeatures)
        dequantize(rows: 0..<out, into: w.p)
        return w
    }

    /// y[out] = W x.
    public func gemv(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>) {
        withKernelArgs { qw, qz, sc, gi in
            tqk_packed_gemv(qw, qz, sc, gi, Int64(out), Int64(inFeatures), Int32(bits), Int64(group), x, y)
        }
    }

    /// y_k[out_k] = W_k x for layers sharing their input (the same inFeatures; ys[k] holds out_k
    /// floats), in one kernel call: a block's q/k/v or gate/up at the cost of one fork and join.
    public static func gemvMany(_ layers: [PackedLinear], _ x: UnsafePointer<Float>, _ ys: [UnsafeMutablePointer<Float>]) {
        precondition(layers.count == ys.count, "one output per layer")
        guard let inF = layers.first?.inFeatures else { return }
        precondition(layers.allSatisfy { $0.inFeatures == inF }, "the layers must share in_features")
        var tensors: [tqk_packed_tensor] = []
        func collect(_ k: Int) { // keeps every layer's arrays pinned while the kernel runs
            guard k < layers.count else {
                let yp: [UnsafeMutablePointer<Float>?] = ys
                tqk_packed_gemv_many(tensors, Int64(tensors.count), Int64(inF), x, yp)
                return
            }
            let l = layers[k]
            l.withKernelArgs { qw, qz, sc, gi in
                tensors.append(tqk_packed_tensor(qweight: qw, qzeros: qz, scales: sc, g_idx: gi, out: Int64(l.out),
                                                 group_size: Int64(l.group), bits: Int32(l.bits)))
                collect(k + 1)
            }
        }
        collect(0)
    }

    /// Y[batch x out] = X[batch x in] W^T.
    public func gemm(_ x: UnsafePointer<Float>, batch: Int, _ y: UnsafeMutablePointer<Float>) {
        withKernelArgs { qw, qz, sc, gi in
            tqk_packed_gemm(qw, qz, sc, gi, Int64(out), Int64(inFeatures), Int32(bits), Int64(group), x, Int64(batch), y)
        }
    }
}
