import Foundation
import Testing
@testable import TesseraQ

/// ALGORITHM.md section 2 written out naively, in double where it does not matter and in the
/// exported float16 precision for scales, as the library documents.
func referenceQuantize(_ w: [Float], out: Int, inF: Int, spec: QuantSpec) -> (codes: [UInt8], scales: [Float], zeros: [UInt8]) {
    let g = spec.group(forInput: inF), nG = (inF + g - 1) / g, qmax = Float(spec.qmax)
    var codes = [UInt8](repeating: 0, count: out * inF)
    var scales = [Float](repeating: 0, count: nG * out), zeros = [UInt8](repeating: 0, count: nG * out)
    for o in 0..<out {
        for gi in 0..<nG {
            let cols = (gi * g)..<min(inF, gi * g + g)
            let vals = cols.map { w[o * inF + $0] }
            let mn = vals.min()!, mx = vals.max()!
            var s: Float, z: Float
            if spec.sym {
                s = max(max(abs(mn), abs(mx)), 1e-5) / Float((1 << (spec.bits - 1)) - 1)
                z = Float(1 << (spec.bits - 1))
            } else {
                s = max(mx - mn, 1e-5) / qmax
            }
            s = Float(Float16(s))
            if s == 0 { s = Float(Float16.leastNonzeroMagnitude) }
            if !spec.sym { z = min(max(-(mn / s).rounded(.toNearestOrEven), 0), qmax) } else { z = Float(1 << (spec.bits - 1)) }
            scales[gi * out + o] = s
            zeros[gi * out + o] = UInt8(z)
            for c in cols {
                let q = (w[o * inF + c] / s).rounded(.toNearestOrEven) + z
                codes[o * inF + c] = UInt8(min(max(q, 0), qmax))
            }
        }
    }
    return (codes, scales, zeros)
}

func randomWeights(_ n: Int, seed: UInt64, scale: Float = 0.05) -> [Float] {
    var rng = SeededGenerator(seed: seed)
    return (0..<n).map { _ in Float.random(in: -scale...scale, using: &rng) * (Float.random(in: 0...1, using: &rng) < 0.02 ? 8 : 1) }
}

@Suite struct QuantizerTests {
    static let cases: [(Int, Int, Bool)] = [(2, 32, false), (3, 64, false), (4, 128, false), (8, -1, false), (4, 48, true), (2, -1, true), (3, 100, false)]

    @Test(arguments: cases)
    func roundToNearestMatchesReference(bits: Int, group: Int, sym: Bool) throws {
        let out = 13, inF = 172
        let w = randomWeights(out * inF, seed: UInt64(bits * 1000 + group))
        let spec = QuantSpec(bits: bits, groupSize: group, sym: sym)
        let q = w.withUnsafeBufferPointer { QuantizedLinear.roundToNearest($0.baseAddress!, out: out, inFeatures: inF, spec: spec) }
        let ref = referenceQuantize(w, out: out, inF: inF, spec: spec)
        #expect(q.scales == ref.scales)
        #expect(q.zeros == ref.zeros)
        #expect(q.codes == ref.codes)
        #expect(q.nGroups == (group <= 0 ? 1 : (inF + group - 1) / group))
        // Dequantisation is (code - zero) * scale, and the error is within half a step per group
        // except where clamping to the grid's ends applies.
        let wh = try q.dequantized().array
        for o in 0..<out {
            for i in 0..<inF {
                let gi = i / q.group
                let s = q.scales[gi * out + o]
                #expect(wh[o * inF + i] == Float(Int(q.codes[o * inF + i]) - Int(q.zeros[gi * out + o])) * s)
                if !sym { #expect(abs(wh[o * inF + i] - w[o * inF + i]) <= s * 0.5 + s * 1e-3 + 1e-6 || q.codes[o * inF + i] == 0 || Int(q.codes[o * inF + i]) == spec.qmax) }
            }
        }
    }

    @Test func moreBitsLessError() throws {
        let out = 32, inF = 256
        let w = randomWeights(out * inF, seed: 7)
        var last = Double.infinity
        for bits in [2, 3, 4, 8] {
            let q = w.withUnsafeBufferPointer { QuantizedLinear.roundToNearest($0.baseAddress!, out: out, inFeatures: inF, spec: QuantSpec(bits: bits, groupSize: 64)) }
            let err = zip(try q.dequantized().array, w).reduce(0.0) { $0 + Double(($1.0 - $1.1) * ($1.0 - $1.1)) }
            #expect(err < last / 3, "bits \(bits): \(err) vs \(last)")
            last = err
        }
    }
}

@Suite struct QuantizeConfigTests {
    @Test func defaultsAndValues() throws {
        let c = try QuantizeConfig.parse(#"{"method": "rtn", "bits": 3, "group_size": 64, "sym": true}"#)
        #expect(c.method == "rtn" && c.spec == QuantSpec(bits: 3, groupSize: 64, sym: true) && c.format == "gptq_v2")
        let d = try QuantizeConfig.parse("{}")
        #expect(d.spec == QuantSpec(bits: 4, groupSize: 128, sym: false))
    }

    @Test(arguments: [
        (#"{"bits": 5}"#, "bits"), (#"{"bits": "4"}"#, "bits"), (#"{"bits": 4.5}"#, "bits"),
        (#"{"group_size": 0}"#, "group_size"), (#"{"group_size": -2}"#, "group_size"), (#"{"sym": 1}"#, "sym"),
        (#"{"method": "magic"}"#, "method"), (#"{"method": 3}"#, "method"), (#"{"colour": "red"}"#, "colour"),
        (#"{"format": "awq"}"#, "format"), (#"[1, 2]"#, "not a JSON object"), (#"{"bits": "#, "malformed"),
    ])
    func rejectsBadConfigNamingTheKey(json: String, key: String) {
        #expect {
            try QuantizeConfig.parse(json)
        } throws: { error in
            guard let e = error as? TQError else { return false }
            return e.message.contains(key) && (e.kind == .invalidArgument || e.kind == .format)
        }
    }
}
