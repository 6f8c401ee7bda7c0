import TQKernels

/// Runs a block over every sample of an activation cache, `chunk` samples at a time. Under mpirun
/// the chunks are dealt over the ranks (round r: chunk r * P + rank), each chunk's forward runs whole
/// on its rank, and the outputs are all-gathered as the cache stores them: every rank ends with the
/// bytes one process computes, at a P-th of the forwards.
struct BlockRunner {
    let config: LlamaConfig
    let length: Int
    let chunk: Int
    let rope: RopeTables
    /// The forwards' GEMM and attention precision (the method's compute_dtype).
    let compute: ComputeDType
    var world: any Collectives = Communicator.world

    init(config: LlamaConfig, length: Int, chunk: Int, compute: ComputeDType = .f32) throws {
        self.config = config
        self.length = length
        self.chunk = chunk
        self.compute = compute
        rope = try RopeTables(config: config, positions: length)
    }

    /// Mean over tokens of the squared error of block(inputs) against `targets` (if given), over the
    /// first `lossSamples` samples (0: all); with `advance`, the outputs replace the inputs in the
    /// cache, else only those samples run.
    @discardableResult
    func run(_ weights: BlockWeights, inputs: ActivationCache, targets: ActivationCache?, advance: Bool,
             lossSamples: Int = 0) throws -> Double {
        let d = config.hidden, rowsPer = length, P = world.size
        let counted = lossSamples > 0 ? min(lossSamples, inputs.samples) : inputs.samples
        let x = try FloatBuffer(count: chunk * rowsPer * d), t = try FloatBuffer(count: chunk * rowsPer * d)
        var works: [Int: BlockWorkspace] = [:]
        let end = advance ? inputs.samples : counted
        let chunks = stride(from: 0, to: end, by: chunk).map { $0..<min($0 + chunk, end) }
        // Per chunk, summed in chunk order at the end: the same bits however the chunks were dealt.
        var sums = [Double](repeating: 0, count: chunks.count)
        for round in stride(from: 0, to: chunks.count, by: P) {
            var outputs: [UInt8] = []
            if round + world.rank < chunks.count {
                let c = round + world.rank, idx = Array(chunks[c]), m = idx.count
                let work = try works[m] ?? BlockWorkspace(config: config, sequences: m, length: length, rope: rope, compute: compute)
                works[m] = work
                inputs.gather(idx, into: x.p)
                work.forward(x.p, weights: weights, into: x.p)
                let rows = max(0, min(m, counted - idx[0])) * rowsPer
                if let targets, rows > 0 {
                    targets.gather(idx, into: t.p)
                    sums[c] = tqk_l2_loss(x.p, t.p, Int64(rows), Int64(d), nil, nil) * Double(rows)
                }
                if advance {
                    for (k, i) in idx.enumerated() { inputs.write(i, from: x.p + k * rowsPer * d) }
                    if P > 1 { outputs = inputs.storedBytes(chunks[c]) }
                }
            }
            if advance && P > 1 {
                for (r, stored) in world.allGather(outputs).enumerated() where r != world.rank && round + r < chunks.count {
                    inputs.setStoredBytes(chunks[round + r], stored)
                }
            }
        }
        if P > 1 && targets != nil { sums = world.allReduce(sums) }   // one rank's term per chunk, the others' 0
        return sums.reduce(0, +) / Double(counted * rowsPer)
    }
}
