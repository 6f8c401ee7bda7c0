import Foundation
import Testing
import TQKernels
@testable import TesseraQ

/// The memory estimate against what the kernels take: attention backward's scratch, in the
/// compute dtype the run trains in.
@Suite(.serialized) struct MemoryEstimateTests {
    /// Each attention backward allocates the scratch tqk_attention_backward_scratch_bytes states on
    /// the calling thread (besides its smaller buffers: the softmax's statistics, the GEMMs' packing).
    @Test(arguments: [false, true])
    func attentionBackwardTakesTheStatedScratch(bf16: Bool) {
        var rng = TestRNG(7)
        let T = 300, H = 6, KVH = 2, D = 64
        let Q = rng.floats(T * H * D), K = rng.floats(T * KVH * D), V = rng.floats(T * KVH * D), dO = rng.floats(T * H * D)
        var dQ = [Float](repeating: 0, count: T * H * D), dK = [Float](repeating: 0, count: T * KVH * D), dV = dK
        let scratch = Int64(tqk_attention_backward_scratch_bytes(bf16 ? 1 : 0, Int64(T), Int64(H), Int64(KVH), Int64(D)))
        let before = tqk_alloc_bytes_on_thread()
        let backward = bf16 ? tqk_attention_backward_bf16 : tqk_attention_backward
        backward(Q, K, V, dO, &dQ, &dK, &dV, Int64(T), Int64(H), Int64(KVH), Int64(D), 0.125, 0, 0)
        let allocated = tqk_alloc_bytes_on_thread() - before
        // P and dS of the group's 3 heads; or K and V transposed, padded to 304 keys.
        #expect(scratch == (bf16 ? 2 * 3 * 300 * 300 * 4 : 2 * 2 * 64 * 304 * 4))
        #expect(allocated >= scratch, "allocated \(allocated), scratch \(scratch)")
    }

    /// At seq_len 2048 bf16 attention's P and dS (about 100 MB on SmolLM2) outgrow every GEMM's
    /// packing: a bf16 run's estimate counts them, a float32 run's the K and V copies.
    @Test func estimateCountsAttentionScratchInTheComputeDType() throws {
        let c = try ConfigTests.smolConfig([:])
        let estimate = { (compute: ComputeDType) in
            MemoryEstimate(config: c, samples: 4, seqLen: 2048, batch: 1, cache: .bf16, bits: 2, groupSize: 64, compute: compute)
        }
        for compute in [ComputeDType.f32, .bf16] {
            #expect(estimate(compute).scratchBytes >= compute.attentionBackwardScratchBytes(c, seqLen: 2048), "\(compute)")
        }
        #expect(estimate(.bf16).scratchBytes == 2 * 3 * 2048 * 2048 * 4)
        #expect(estimate(.f32).scratchBytes < estimate(.bf16).scratchBytes / 4)
    }

    /// A run's estimate takes the compute dtype from its method's options.
    @Test func runEstimateFollowsTheMethodsComputeDType() throws {
        let c = try ConfigTests.smolConfig([:])
        let scratch = { (dtype: String) in
            let config = QuantizeConfig(method: "tesseraq", spec: QuantSpec(bits: 2, groupSize: 64),
                                        options: ["seq_len": .int(2048), "compute_dtype": .string(dtype)])
            return MemoryEstimate(config: c, method: try makeBlockQuantizer(config), spec: config.spec, ranks: 1).scratchBytes
        }
        #expect(try scratch("bf16") == 2 * 3 * 2048 * 2048 * 4)
        #expect(try scratch("f32") < scratch("bf16") / 4)
    }
}
