import Foundation
import TQKernels

/// A linear layer under TesseraQ training (ALGORITHM.md section 3): the frozen grid (s, z),
/// the rounding variables `a` (PAR) with their hard/soft state, and the DST variables `v`.
/// Per-group arrays are [out x nGroups] here; the export transposes them to GPTQ's orientation.
public final class FakeQuantLinear: TrainableLinear, @unchecked Sendable {
    public let out: Int
    public let inFeatures: Int
    public let spec: QuantSpec
    public let group: Int
    public let nGroups: Int
    let fl, a, s, z, v: FloatBuffer
    var state: [UInt8]
    /// The soft-quantised weight (out x in), refreshed by `materialize`.
    public let wHat: FloatBuffer
    let da, dv: FloatBuffer
    let adamA: AdamState, adamV: AdamState

    /// Starts from `weight` (out x in) on the grid of `grid` (e.g. RTN's): soft weights equal
    /// the originals, DST factors are 1.
    public init(weight: UnsafePointer<Float>, grid: QuantizedLinear, stateDType: StateDType = .f32, seed: UInt64 = 0) throws {
        out = grid.out
        inFeatures = grid.inFeatures
        spec = grid.spec
        group = grid.group
        nGroups = grid.nGroups
        let n = out * inFeatures, ng = out * nGroups
        fl = try FloatBuffer(count: n); a = try FloatBuffer(count: n); state = [UInt8](repeating: 0, count: n)
        s = try FloatBuffer(count: ng); z = try FloatBuffer(count: ng); v = try FloatBuffer(count: ng)
        for o in 0..<out {
            for g in 0..<nGroups {
                s.p[o * nGroups + g] = grid.scales[g * out + o]
                z.p[o * nGroups + g] = Float(grid.zeros[g * out + o])
            }
        }
        // h(v) = 0.5 gives the factor 2 h(v) = 1: v = logit((0.5 + 0.1) / 1.2) = 0.
        wHat = try FloatBuffer(count: n)
        da = try FloatBuffer(count: n); dv = try FloatBuffer(count: ng)
        adamA = try AdamState(count: n, dtype: stateDType, seed: seed)
        adamV = try AdamState(count: ng, dtype: stateDType, seed: ~seed)
        tqk_fq_init(weight, s.p, Int64(out), Int64(inFeatures), Int64(group), fl.p, a.p, &state)
    }

    /// wHat = (clamp(fl + h + z) - z) * s * 2 h(v).
    public func materialize() {
        tqk_fq_weights(fl.p, a.p, state, s.p, z.p, v.p, Int64(out), Int64(inFeatures), Int64(group), Int32(spec.bits), wHat.p)
    }

    /// dL/da and dL/dv from dL/dwHat.
    public func backward(_ dW: UnsafePointer<Float>) {
        tqk_fq_backward(fl.p, a.p, state, s.p, z.p, v.p, dW, Int64(out), Int64(inFeatures), Int64(group),
                        Int32(spec.bits), da.p, dv.p)
    }

    /// One Adam step on the rounding and DST variables (hard rounding variables are ignored by
    /// the forward pass, so moving them is harmless).
    public func step(_ t: Int, lr: Float, scaleLR: Float, scaleWD: Float) {
        adamA.step(a, da, lr: lr, wd: 0, t: t)
        adamV.step(v, dv, lr: scaleLR, wd: scaleWD, t: t)
    }

    public func resetOptimizer() {
        adamA.reset()
        adamV.reset()
    }

    /// PAR hardening with quantile `q` (or everything, when `final`). Returns the threshold.
    @discardableResult
    public func harden(quantile q: Double, final: Bool = false) -> Float {
        tqk_fq_harden(a.p, &state, Int64(out * inFeatures), Float(q), final ? 1 : 0)
    }

    /// PAR hardening by a threshold found elsewhere (`BlockShard.harden`): `lo` and `hi` the scores
    /// ranked k and k + 1 over the whole linear, `gamma` the fraction between them.
    @discardableResult
    func harden(between lo: Double, _ hi: Double, gamma: Double) -> Float {
        tqk_fq_harden_between(a.p, &state, Int64(out * inFeatures), lo, hi, gamma)
    }

    public var softFraction: Double { Double(state.lazy.filter { $0 == 0 }.count) / Double(state.count) }

    /// The final layer: hard codes, scales s * 2 h(v), zero points z (GPTQ orientation).
    public func export() -> QuantizedLinear {
        var codes = [UInt8](repeating: 0, count: out * inFeatures)
        tqk_fq_codes(fl.p, a.p, state, z.p, Int64(out), Int64(inFeatures), Int64(group), Int32(spec.bits), &codes)
        var scales = [Float](repeating: 0, count: nGroups * out), zeros = [UInt8](repeating: 0, count: nGroups * out)
        for o in 0..<out {
            for g in 0..<nGroups {
                scales[g * out + o] = s.p[o * nGroups + g] * dstFactor(v.p[o * nGroups + g])
                zeros[g * out + o] = UInt8(z.p[o * nGroups + g])
            }
        }
        return QuantizedLinear(out: out, inFeatures: inFeatures, spec: spec, codes: codes, scales: scales, zeros: zeros)
    }

    /// The DST factors 2 h(v), smallest and largest.
    public var dstRange: (Float, Float) {
        let f = (0..<(out * nGroups)).map { dstFactor(v.p[$0]) }
        return (f.min()!, f.max()!)
    }
}

/// 2 h(v), h the rectified sigmoid.
func dstFactor(_ v: Float) -> Float {
    2 * min(max(1.2 / (1 + expf(-v)) - 0.1, 0), 1)
}

/// Adam moments for one parameter tensor (beta1 0.9, beta2 0.999, eps 1e-8), in float32 or, to
/// halve their memory, bfloat16 with stochastic rounding seeded by `seed` (`state_dtype`).
final class AdamState: @unchecked Sendable {
    let count: Int
    let dtype: StateDType
    let seed: UInt64
    /// float32 moments, or bfloat16 ones in the first half of each buffer's bytes.
    private let m: UnsafeMutableRawPointer, v: UnsafeMutableRawPointer

    init(count: Int, dtype: StateDType = .f32, seed: UInt64 = 0) throws {
        self.count = count
        self.dtype = dtype
        self.seed = seed
        m = UnsafeMutableRawPointer(try allocateZeroed(count * dtype.bytes, of: UInt8.self))
        v = UnsafeMutableRawPointer(try allocateZeroed(count * dtype.bytes, of: UInt8.self))
    }

    deinit { free(m); free(v) }

    func reset() {
        m.initializeMemory(as: UInt8.self, repeating: 0, count: count * dtype.bytes)
        v.initializeMemory(as: UInt8.self, repeating: 0, count: count * dtype.bytes)
    }

    func step(_ p: FloatBuffer, _ g: FloatBuffer, lr: Float, wd: Float, t: Int) {
        switch dtype {
        case .f32:
            tqk_adam(p.p, g.p, m.assumingMemoryBound(to: Float.self), v.assumingMemoryBound(to: Float.self), Int64(p.count),
                     lr, 0.9, 0.999, 1e-8, wd, Int64(t))
        case .bf16:
            tqk_adam_bf16(p.p, g.p, m.assumingMemoryBound(to: UInt16.self), v.assumingMemoryBound(to: UInt16.self),
                          Int64(p.count), lr, 0.9, 0.999, 1e-8, wd, Int64(t), seed &+ UInt64(t) &* 0x9e37_79b9)
        }
    }
}

/// How TesseraQ keeps its training state (`state_dtype`): float32, or lean (bf16 Adam moments).
public enum StateDType: String, Sendable {
    case f32, bf16
    var bytes: Int { self == .f32 ? 4 : 2 }
}
