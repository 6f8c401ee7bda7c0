import Foundation
import TQKernels

/// Peak memory of a calibrated run, known before it starts: one block's weights, grid and training
/// state, the two activation caches, one batch's activations, the kernels' largest transient scratch
/// in the block's step, the model's float tensors kept resident (embeddings, head: float32 unless
/// the run says what it holds), and one block's packed result (the checkpoint is written a block at
/// a time from the run's resume state).
public struct MemoryEstimate: Sendable {
    public var blockBytes: Int
    public var cacheBytes: Int
    public var activationBytes: Int
    /// The largest buffer a kernel allocates and frees within one step or hardening: a GEMM's packed
    /// operands, the hardening scores of the largest linear, attention backward's scratch (copies of
    /// K and V in float32; P and dS of a sequence in bf16 compute).
    public var scratchBytes: Int
    public var residentBytes: Int
    public var resultBytes: Int
    /// The caches' bytes when held in memory; `cacheBytes` is 0 when they go to scratch files
    /// (their pages leave the resident set after each sample).
    public var cacheBytesInMemory: Int
    public var total: Int { saturatingSum(blockBytes, cacheBytes, activationBytes, scratchBytes, residentBytes, resultBytes) }

    /// Under tensor parallelism (`ranks` > 1) the figures are one rank's: each holds the whole float
    /// block (its initialisation runs on every rank), the caches, and its shard of the training state
    /// and of the block's activations.
    public var ranks = 1

    /// `groupSize` as QuantSpec's (-1: one group per row).
    public init(config c: LlamaConfig, samples: Int, seqLen: Int, batch: Int, cache: CacheDType, bits: Int, groupSize: Int = -1,
                ranks: Int = 1, compute: ComputeDType = .f32) {
        let blockParams = LinearKind.allCases.reduce(0) { let (o, i) = $1.shape(c); return $0 + o * i }
        let groups = LinearKind.allCases.reduce(0) { let (o, i) = $1.shape(c); return $0 + o * (groupSize > 0 ? (i + groupSize - 1) / groupSize : 1) }
        let share = { (n: Int) in (n + ranks - 1) / ranks }
        self.ranks = ranks
        // fp32 weight and the starting grid (a code per weight, scale and zero per group: the report
        // compares the result with it); on the rank's shard: floor, rounding variable, soft weight,
        // its gradient, dL/dW, Adam m and v, hard/soft state.
        blockBytes = blockParams * (4 + 1) + groups * 5 + share(blockParams) * (7 * 4 + 1)
        cacheBytesInMemory = saturatingProduct(2, ActivationCache.bytes(samples: samples, rowsPerSample: seqLen, width: c.hidden, dtype: cache))
        cacheBytes = cacheBytesInMemory
        // Past the KV heads, each rank holds one replicated KV head (BlockShard).
        let (qDim, kvDim, ffn) = (share(c.qDim), ranks > c.kvHeads ? c.headDim : share(c.kvDim), share(c.intermediate))
        let perRow = 3 * c.hidden + 2 * qDim + 2 * kvDim + 3 * ffn   // forward
            + 3 * ffn + 2 * c.hidden + 2 * qDim + 2 * kvDim             // backward
            + 4 * c.hidden                                              // inputs, targets, outputs, dY
            + (ranks == 1 ? c.hidden : 0)                               // one process's second half of a split sum
            + (c.qkNorm ? qDim + kvDim : 0)                             // q, k before their norms
            + (c.sandwichNorms ? 4 * c.hidden : 0)                      // sub-layer outputs before post-norms, and their gradients
        activationBytes = saturatingProduct(batch, seqLen, perRow, 4)
        scratchBytes = Self.scratch(config: c, rows: saturatingProduct(batch, seqLen), seqLen: seqLen, ranks: ranks, compute: compute)
        residentBytes = c.vocab * c.hidden * 4 * (c.tiedEmbeddings ? 1 : 2)
        resultBytes = blockParams * (bits + 1) / 8
    }

    /// The largest transient scratch of one training step or hardening on a rank's shard (`scratchBytes`):
    /// the packing buffers of the step's GEMMs (forward, dX and dW of each linear over `rows` tokens,
    /// in float32 or bfloat16, whichever needs more), the hardening's scores (a float per weight of
    /// the largest linear), and attention backward's scratch for one sequence in the run's compute dtype.
    static func scratch(config c: LlamaConfig, rows: Int, seqLen: Int, ranks: Int, compute: ComputeDType) -> Int {
        var most = 0
        for kind in LinearKind.allCases {
            var (o, i) = kind.shape(c)
            if ranks > 1 {
                if BlockShard.splitsColumns(kind) { i = (i + ranks - 1) / ranks } else { o = (o + ranks - 1) / ranks }
            }
            for bf16: Int32 in [0, 1] {
                for (m, n, k) in [(rows, o, i), (rows, i, o), (o, i, rows)] {
                    most = max(most, Int(clamping: tqk_gemm_scratch_bytes(bf16, Int64(m), Int64(n), Int64(k))))
                }
            }
            most = max(most, o * i * 4)
        }
        // The whole heads' figure: a rank's share of them needs no more.
        return max(most, compute.attentionBackwardScratchBytes(c, seqLen: seqLen))
    }

    /// The estimate of a calibrated run of `method`, its caches out of core where the budget says so.
    init(config c: LlamaConfig, method: BlockQuantizer, spec: QuantSpec, ranks: Int = Communicator.world.size) {
        let calibration = method.calibration
        self.init(config: c, samples: calibration.nSamples, seqLen: calibration.seqLen, batch: calibration.batch,
                  cache: calibration.cacheDType, bits: spec.bits, groupSize: spec.groupSize, ranks: ranks,
                  compute: method.computeDType)
        if calibration.cachesOutOfCore(bytes: cacheBytesInMemory) { cacheBytes = 0 }
    }

    public var json: [String: Any] {
        ["block_bytes": blockBytes, "cache_bytes": cacheBytes, "cache_out_of_core": cacheBytes < cacheBytesInMemory,
         "cache_file_bytes": cacheBytes < cacheBytesInMemory ? cacheBytesInMemory : 0, "activation_bytes": activationBytes, "scratch_bytes": scratchBytes,
         "resident_bytes": residentBytes, "result_bytes": resultBytes, "total_bytes": total, "ranks": ranks]
    }

    public var summary: String {
        func mb(_ b: Int) -> String { String(format: "%.0f MB", Double(b) / 1e6) }
        let caches = cacheBytes < cacheBytesInMemory ? "caches on disk \(mb(cacheBytesInMemory))" : "caches \(mb(cacheBytes))"
        return "peak memory about \(mb(total))\(ranks > 1 ? " per rank of \(ranks)" : "") (block \(mb(blockBytes)), \(caches), activations \(mb(activationBytes)), scratch \(mb(scratchBytes)), embeddings \(mb(residentBytes)), result \(mb(resultBytes)))"
    }

    /// What this process can still get: MemAvailable from /proc/meminfo, lowered to the room left
    /// under an address-space limit (ulimit -v) when one is set; nil where neither is known.
    public static var available: Int? {
        let physical = kilobytes(file: "/proc/meminfo", field: "MemAvailable:")
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_AS.rawValue), &limit) == 0, limit.rlim_cur != rlim_t.max,
              let used = kilobytes(file: "/proc/self/status", field: "VmSize:") else { return physical }
        let room = max(0, Int(clamping: limit.rlim_cur) - used)
        return physical.map { min($0, room) } ?? room
    }

    /// A "Field:   N kB" line of a /proc file, in bytes.
    private static func kilobytes(file: String, field: String) -> Int? {
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix(field) {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            if parts.count >= 2, let kb = Int(parts[1]) { return kb * 1024 }
        }
        return nil
    }

    /// Throws when the run cannot fit in the memory available now (or under ulimit -v).
    public func check() throws {
        if let avail = Self.available, total > avail {
            throw TQError(.outOfMemory, "the run needs \(summary), but only \(avail / 1_000_000) MB are available (free memory, or the room left under ulimit -v): lower n_samples, seq_len or batch, use cache_dtype bf16, or move the activation caches to disk with cache_budget_mb")
        }
    }
}
