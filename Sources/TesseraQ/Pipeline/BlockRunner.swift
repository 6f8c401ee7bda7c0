import TQKernels

/// Runs a block over every sample of an activation cache, `chunk` samples at a time.
struct BlockRunner {
    let config: LlamaConfig
    let length: Int
    let chunk: Int
    let rope: RopeTables

    init(config: LlamaConfig, length: Int, chunk: Int) throws {
        self.config = config
        self.length = length
        self.chunk = chunk
        rope = try RopeTables(config: config, positions: length)
    }

    /// Mean over tokens of the squared error of block(inputs) against `targets` (if given);
    /// with `advance`, the outputs replace the inputs in the cache.
    @discardableResult
    func run(_ weights: BlockWeights, inputs: ActivationCache, targets: ActivationCache?, advance: Bool) throws -> Double {
        let d = config.hidden, rowsPer = length
        let x = try FloatBuffer(count: chunk * rowsPer * d), t = try FloatBuffer(count: chunk * rowsPer * d)
        var works: [Int: BlockWorkspace] = [:]
        var sum = 0.0
        var start = 0
        while start < inputs.samples {
            let m = min(chunk, inputs.samples - start)
            let idx = Array(start..<(start + m))
            let work = try works[m] ?? BlockWorkspace(config: config, sequences: m, length: length, rope: rope)
            works[m] = work
            inputs.gather(idx, into: x.p)
            work.forward(x.p, weights: weights, into: x.p)
            if let targets {
                targets.gather(idx, into: t.p)
                sum += tqk_l2_loss(x.p, t.p, Int64(m * rowsPer), Int64(d), nil) * Double(m * rowsPer)
            }
            if advance {
                for (k, i) in idx.enumerated() { inputs.write(i, from: x.p + k * rowsPer * d) }
            }
            start += m
        }
        return sum / Double(inputs.samples * rowsPer)
    }
}
