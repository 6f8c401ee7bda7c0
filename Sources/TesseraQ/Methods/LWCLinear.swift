import Foundation
import TQKernels

/// A linear layer under OmniQuant's learnable weight clipping (lwc.c): the float weights, and per
/// group ([out x nGroups]) the factors gamma (on the max) and beta (on the min) of the clipped
/// range [sig(beta) min, sig(gamma) max], kept in one buffer so one Adam state steps both.
final class LWCLinear: TrainableLinear {
    let weight: FloatBuffer
    let out: Int
    let inFeatures: Int
    let spec: QuantSpec
    let group: Int
    let nGroups: Int
    /// gamma ([out x nGroups]) followed by beta, and their gradients.
    let factors, dFactors: FloatBuffer
    let adam: AdamState
    let wHat: FloatBuffer

    /// OmniQuant's initial factor: sig(4) = 0.982, a 1.8% clip of both ends.
    static let initialFactor: Float = 4

    /// Starts from `weight` (out x in, read on every step: it must stay unchanged) with every
    /// factor `initial`.
    init(weight: FloatBuffer, out: Int, inFeatures: Int, spec: QuantSpec, initial: Float = initialFactor) throws {
        self.weight = weight
        self.out = out
        self.inFeatures = inFeatures
        self.spec = spec
        group = spec.group(forInput: inFeatures)
        nGroups = (inFeatures + group - 1) / group
        factors = try FloatBuffer(count: 2 * out * nGroups)
        factors.p.update(repeating: initial, count: factors.count)
        dFactors = try FloatBuffer(count: 2 * out * nGroups)
        adam = try AdamState(count: 2 * out * nGroups)
        wHat = try FloatBuffer(count: out * inFeatures)
    }

    private var gamma: UnsafeMutablePointer<Float> { factors.p }
    private var beta: UnsafeMutablePointer<Float> { factors.p + out * nGroups }

    func materialize() {
        tqk_lwc_weights(weight.p, gamma, beta, Int64(out), Int64(inFeatures), Int64(group), Int32(spec.bits),
                        spec.sym ? 1 : 0, wHat.p)
    }

    func backward(_ dW: UnsafePointer<Float>) {
        tqk_lwc_backward(weight.p, gamma, beta, dW, Int64(out), Int64(inFeatures), Int64(group), Int32(spec.bits),
                         spec.sym ? 1 : 0, dFactors.p, dFactors.p + out * nGroups)
    }

    /// One Adam step (OmniQuant's AdamW with weight decay 0 on these factors: plain Adam).
    func step(_ t: Int, lr: Float) {
        adam.step(factors, dFactors, lr: lr, wd: 0, t: t)
    }

    /// The clipped grid with the weights rounded to nearest on it: the codes `materialize` used.
    func grid() -> QuantizedLinear {
        var scales = [Float](repeating: 0, count: nGroups * out), zeros = [UInt8](repeating: 0, count: nGroups * out)
        tqk_lwc_grid(weight.p, gamma, beta, Int64(out), Int64(inFeatures), Int64(group), Int32(spec.bits),
                     spec.sym ? 1 : 0, &scales, &zeros)
        var q = QuantizedLinear(out: out, inFeatures: inFeatures, spec: spec, codes: [], scales: scales, zeros: zeros)
        q.codes = q.encode(weight.p)
        return q
    }

    /// The clip factors sig(gamma), sig(beta), smallest and largest.
    var clipRange: (Float, Float) {
        let s = (0..<factors.count).map { 1 / (1 + expf(-factors.p[$0])) }
        return (s.min()!, s.max()!)
    }
}
