import TQKernels

/// Bits, group size and symmetry of a uniform group quantizer (ALGORITHM.md section 2).
public struct QuantSpec: Sendable, Equatable {
    public var bits: Int
    /// Columns per group along the input dimension; -1 means one group per row (per-channel).
    public var groupSize: Int
    public var sym: Bool

    public init(bits: Int, groupSize: Int, sym: Bool = false) {
        self.bits = bits
        self.groupSize = groupSize
        self.sym = sym
    }

    /// The group size for a layer with `inFeatures` inputs.
    public func group(forInput inFeatures: Int) -> Int { groupSize <= 0 ? inFeatures : groupSize }
    public var qmax: Int { (1 << bits) - 1 }
}

/// One linear layer on its integer grid: codes [out x in], and per group (GPTQ orientation,
/// [nGroups x out]) the dequantisation scale and the zero point. W_hat = (code - zero) * scale.
public struct QuantizedLinear: Sendable {
    public let out: Int
    public let inFeatures: Int
    public let spec: QuantSpec
    public var codes: [UInt8]
    public var scales: [Float]
    public var zeros: [UInt8]
    /// The group of each input column (act-order, GPTQ's g_idx); nil means input i is in group i / group.
    public var gIdx: [Int32]?

    public var group: Int { spec.group(forInput: inFeatures) }
    public var nGroups: Int { (inFeatures + group - 1) / group }

    public init(out: Int, inFeatures: Int, spec: QuantSpec, codes: [UInt8], scales: [Float], zeros: [UInt8],
                gIdx: [Int32]? = nil) {
        precondition(gIdx == nil || gIdx!.count == inFeatures, "g_idx needs one entry per input")
        self.out = out
        self.inFeatures = inFeatures
        self.spec = spec
        self.codes = codes
        self.scales = scales
        self.zeros = zeros
        self.gIdx = gIdx
    }

    /// The group of every input column: g_idx if set, else i / group.
    public var groupIndex: [Int32] { gIdx ?? (0..<inFeatures).map { Int32($0 / group) } }

    /// Round to nearest on the min/max grid of `weight` [out x in].
    public static func roundToNearest(_ weight: UnsafePointer<Float>, out: Int, inFeatures: Int, spec: QuantSpec) -> QuantizedLinear {
        let group = spec.group(forInput: inFeatures)
        let nGroups = (inFeatures + group - 1) / group
        var scales = [Float](repeating: 0, count: nGroups * out)
        var zeros = [UInt8](repeating: 0, count: nGroups * out)
        tqk_quant_grid(weight, Int64(out), Int64(inFeatures), Int64(group), Int32(spec.bits), spec.sym ? 1 : 0, &scales, &zeros)
        var q = QuantizedLinear(out: out, inFeatures: inFeatures, spec: spec, codes: [], scales: scales, zeros: zeros)
        q.codes = q.encode(weight)
        return q
    }

    /// Codes of `weight` on this layer's grid (input-order groups: not for a layer with g_idx).
    public func encode(_ weight: UnsafePointer<Float>) -> [UInt8] {
        precondition(gIdx == nil, "encode does not support g_idx")
        var codes = [UInt8](repeating: 0, count: out * inFeatures)
        tqk_quant_codes(weight, scales, zeros, Int64(out), Int64(inFeatures), Int64(group), Int32(spec.bits), &codes)
        return codes
    }

    /// W_hat [out x in] in float32.
    public func dequantized() throws -> FloatBuffer {
        let w = try FloatBuffer(count: out * inFeatures)
        if let gIdx {
            tqk_dequant_codes_gidx(codes, scales, zeros, gIdx, Int64(out), Int64(inFeatures), w.p)
        } else {
            tqk_dequant_codes(codes, scales, zeros, Int64(out), Int64(inFeatures), Int64(group), w.p)
        }
        return w
    }
}
