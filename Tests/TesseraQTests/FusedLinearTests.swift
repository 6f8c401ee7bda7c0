import Testing
@testable import TesseraQ

/// Stacking packed linears (Phi-3's qkv_proj, gate_up_proj) is exact for every bit width, with
/// output counts that split packing units (zero points straddle words) and a partial last group.
@Suite struct FusedLinearTests {
    @Test(arguments: [2, 3, 4, 8])
    func stackedRowsAreThePartsRows(bits: Int) throws {
        var rng = TestRNG(UInt64(90 + bits))
        let spec = QuantSpec(bits: bits, groupSize: 16), inFeatures = 40
        let parts = [5, 7, 20].enumerated().map { k, out in
            let w = rng.floats(out * inFeatures)
            return PackedLinear(name: "p\(k)", QuantizedLinear.roundToNearest(w, out: out, inFeatures: inFeatures, spec: spec),
                                groupSize: spec.groupSize)
        }
        let fused = try PackedLinear.stacking(parts, name: "fused")
        #expect(fused.name == "fused" && fused.out == 32 && fused.inFeatures == inFeatures)
        var codes = [UInt8](repeating: 0, count: fused.out * inFeatures)
        fused.unpack(into: &codes)
        var expectedCodes: [UInt8] = [], expectedW: [Float] = []
        var zeros: [[UInt8]] = Array(repeating: [], count: fused.nGroups)
        for p in parts {
            var c = [UInt8](repeating: 0, count: p.out * inFeatures)
            p.unpack(into: &c)
            expectedCodes += c
            expectedW += try p.dequantized().array
            let z = p.unpackZeros()
            for g in 0..<p.nGroups { zeros[g] += z[(g * p.out)..<((g + 1) * p.out)] }
        }
        #expect(codes == expectedCodes)
        #expect(fused.unpackZeros() == zeros.flatMap { $0 })
        #expect(try fused.dequantized().array == expectedW)
        // A part's rows read back from the stacked tensor, as loading a fused checkpoint does.
        let w = try FloatBuffer(count: 7 * inFeatures)
        fused.dequantize(rows: 5..<12, into: w.p)
        #expect(try w.array == parts[1].dequantized().array)
    }

    @Test func partsWithDifferentGroupsAreRefused() throws {
        var rng = TestRNG(7)
        let a = PackedLinear(name: "a", QuantizedLinear.roundToNearest(rng.floats(64), out: 2, inFeatures: 32,
                                                                      spec: QuantSpec(bits: 4, groupSize: 16)), groupSize: 16)
        let b = PackedLinear(name: "b", QuantizedLinear.roundToNearest(rng.floats(64), out: 2, inFeatures: 32,
                                                                      spec: QuantSpec(bits: 4, groupSize: 32)), groupSize: 32)
        #expect(throws: TQError.self) { try PackedLinear.stacking([a, b], name: "ab") }
    }

    @Test func storageOfFusedAndPlainLinears() throws {
        let c = try LlamaConfig(directory: Fixtures.model("tiny-phi3"))
        #expect(LinearKind.q.storage(layer: 1, config: c) == ("model.layers.1.self_attn.qkv_proj", 0, 64))
        #expect(LinearKind.k.storage(layer: 1, config: c) == ("model.layers.1.self_attn.qkv_proj", 32, 64))
        #expect(LinearKind.v.storage(layer: 1, config: c) == ("model.layers.1.self_attn.qkv_proj", 48, 64))
        #expect(LinearKind.up.storage(layer: 0, config: c) == ("model.layers.0.mlp.gate_up_proj", 64, 128))
        #expect(LinearKind.down.storage(layer: 0, config: c) == ("model.layers.0.mlp.down_proj", 0, 32))
        let plain = try LlamaConfig(directory: Fixtures.model("tiny-llama"))
        #expect(LinearKind.k.storage(layer: 0, config: plain) == ("model.layers.0.self_attn.k_proj", 0, 32))
    }
}
