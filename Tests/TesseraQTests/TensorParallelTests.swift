// Tensor-parallel block reconstruction (BlockShard) with threads of this process standing in for MPI
// ranks: the sharded forward and backward against the whole block's, the distributed hardening
// against the kernel's, grids split and gathered back, and a whole TesseraQ block trained on two
// ranks against one. (bindings/python/tests/test_tensor_parallel.py runs the same under mpirun.)

import Foundation
import Testing
import TQKernels
@testable import TesseraQ

/// Ranks as threads of one process: every collective is an exchange through shared slots between
/// two barriers; sums run in rank order, so every rank gets the same bits (as MPI's).
final class ThreadGroup: @unchecked Sendable {
    let size: Int
    private let lock = NSCondition()
    private var arrived = 0, generation = 0
    private var slots: [[UInt8]]

    init(size: Int) {
        self.size = size
        slots = Array(repeating: [], count: size)
    }

    private func barrier() {
        lock.lock()
        let g = generation
        arrived += 1
        if arrived == size {
            arrived = 0
            generation += 1
            lock.broadcast()
        } else {
            while g == generation { lock.wait() }
        }
        lock.unlock()
    }

    func exchange(_ rank: Int, _ bytes: [UInt8]) -> [[UInt8]] {
        lock.lock(); slots[rank] = bytes; lock.unlock()
        barrier()
        lock.lock(); let all = slots; lock.unlock()
        barrier()
        return all
    }

    /// `body(rank)` on `size` threads at once; the results in rank order.
    func run<T>(_ body: @escaping @Sendable (ThreadRank) throws -> T) throws -> [T] {
        let results = Results<T>(size)
        let done = DispatchGroup()
        for r in 0..<size {
            done.enter()
            let t = Thread { results.set(r, Result { try body(ThreadRank(group: self, rank: r)) }); done.leave() }
            t.stackSize = 8 << 20
            t.start()
        }
        done.wait()
        return try results.values.map { try $0!.get() }
    }

    private final class Results<T>: @unchecked Sendable {
        private let lock = NSLock()
        private(set) var values: [Result<T, Error>?]
        init(_ n: Int) { values = Array(repeating: nil, count: n) }
        func set(_ i: Int, _ r: Result<T, Error>) { lock.lock(); values[i] = r; lock.unlock() }
    }
}

struct ThreadRank: Collectives {
    let group: ThreadGroup
    let rank: Int
    var size: Int { group.size }

    func allReduce(_ x: UnsafeMutablePointer<Float>, count: Int) {
        let parts = group.exchange(rank, Array(UnsafeRawBufferPointer(start: x, count: count * 4)))
        x.update(repeating: 0, count: count)
        for p in parts { p.withUnsafeBytes { b in for i in 0..<count { x[i] += b.load(fromByteOffset: i * 4, as: Float.self) } } }
    }

    func allReduce(_ x: [Double]) -> [Double] {
        allGather(x).reduce(into: [Double](repeating: 0, count: x.count)) { s, p in for i in s.indices { s[i] += p[i] } }
    }

    func allGather(_ bytes: [UInt8]) -> [[UInt8]] { group.exchange(rank, bytes) }
}

@Suite(.serialized) struct TensorParallelTests {
    /// SmolLM2's block shape ("smol-block", random weights) splits its 3 KV heads unevenly: 1 and 2.
    static let models = ["tiny-llama", "tiny-qwen2-gqa", "tiny-qwen3", "tiny-gemma2", "stories260K", "smol-block"]

    func open(_ name: String) throws -> LlamaModel {
        try LlamaModel(directory: name == "smol-block" ? try writeRandomModel(RotationTests.smolBlock, seed: 5, tag: "tp-smol")
                                                       : Fixtures.model(name))
    }

    /// Random block inputs [rows x hidden].
    func inputs(_ c: LlamaConfig, rows: Int, seed: UInt64) throws -> FloatBuffer {
        var rng = TestRNG(seed)
        return try FloatBuffer(rng.floats(rows * c.hidden))
    }

    /// Whether BlockShard takes `P` ranks for `c`: by KV heads, or past them by q heads with each
    /// KV head replicated on P / KV ranks.
    static func splits(_ c: LlamaConfig, _ P: Int) -> Bool { P <= c.kvHeads || (P % c.kvHeads == 0 && c.heads % P == 0) }

    @Test("a block split over 2, 3, 4 and 8 ranks computes the whole block's output and weight gradients (KV heads replicated past their count); on 2 ranks, the single process's bits",
          arguments: models)
    func shardedForwardAndBackwardMatch(_ name: String) throws {
        let model = try open(name)
        let c = model.config, fp = try model.loadBlock(0), spec = QuantSpec(bits: 2, groupSize: -1)
        let B = 2, L = 16, T = B * L
        let x = try inputs(c, rows: T, seed: 1), dY = try inputs(c, rows: T, seed: 2)
        /// The whole block's output and weight gradients, its split sums formed as `reduction` forms them.
        func whole(_ reduction: PartialReduction) throws -> ([Float], [[Float]]) {
            let work = try BlockWorkspace(config: c, sequences: B, length: L, reduction: reduction)
            let y = try FloatBuffer(count: T * c.hidden), grads = try BlockGradients(config: c, rows: T)
            work.forward(x.p, weights: fp, into: y.p)
            work.backward(dY.p, weights: fp, into: grads)
            return (y.array, grads.dW.map(\.array))
        }
        let (y, dW1) = try whole(.whole)
        let halves = try BlockShard(config: c, spec: spec, world: Communicator.world).reduction
        let (yHalves, dWHalves) = try whole(halves)
        if case .halves = halves {   // (so that the bit-for-bit checks below are not the whole block's sums)
            #expect(relativeMaxError(yHalves, y) < 1e-5 && yHalves != y, "\(name): halves sum in another order")
        } else {
            #expect(!Self.splits(c, 2), "\(name): one process sums in halves wherever two ranks split the block")
        }
        for P in [2, 3, 4, 8] where Self.splits(c, P) {
            let results = try ThreadGroup(size: P).run { world -> ([Float], [[Float]], BlockShard) in
                let shard = try BlockShard(config: c, spec: spec, world: world)
                let local = try shard.block(fp)
                let work = try BlockWorkspace(config: shard.config, sequences: B, length: L, reduction: shard.reduction)
                work.kvSums = shard.kvSums
                let ys = try FloatBuffer(count: T * c.hidden), g = try BlockGradients(config: shard.config, rows: T)
                work.forward(x.p, weights: local, into: ys.p)
                work.backward(dY.p, weights: local, into: g)
                return (ys.array, g.dW.map(\.array), shard)
            }
            for (yr, dW, shard) in results {
                let rank = "\(name) P=\(P) rank \(shard.world.rank)"
                #expect(relativeMaxError(yr, y) < 1e-5, "\(rank): y")
                if P == 2 { #expect(yr == yHalves, "\(rank): y bit for bit") }
                for kind in LinearKind.allCases {
                    let (o, i) = kind.shape(c), r = shard.range(kind)
                    func slice(_ full: [Float]) -> [Float] {
                        BlockShard.splitsColumns(kind)
                            ? (0..<o).flatMap { row in full[(row * i + r.lowerBound)..<(row * i + r.upperBound)] }
                            : Array(full[(r.lowerBound * i)..<(r.upperBound * i)])
                    }
                    #expect(relativeMaxError(dW[kind.rawValue], slice(dW1[kind.rawValue])) < 1e-4, "\(rank) \(kind): dW")
                    if P == 2 { #expect(dW[kind.rawValue] == slice(dWHalves[kind.rawValue]), "\(rank) \(kind): dW bit for bit") }
                }
            }
        }
    }

    /// Hardening split over ranks finds the whole linear's quantile exactly: the states equal the
    /// kernel's bit for bit, ties (many hard weights scoring 0.5, repeated values) included.
    @Test func distributedHardeningEqualsTheKernels() throws {
        let stories = try LlamaModel(directory: Fixtures.model("stories260K")).config   // 4 KV heads: up to 4 ranks
        var rng = TestRNG(11)
        let out = 24, inFeatures = 40, n = out * inFeatures
        let w = rng.floats(n)
        let grid = QuantizedLinear.roundToNearest(w, out: out, inFeatures: inFeatures, spec: QuantSpec(bits: 2, groupSize: 8))
        for (trial, q) in [0.8, 0.5, 0.27, 0.05, 0.005, 0.0, 1.0].enumerated() {
            let whole = try FakeQuantLinear(weight: w, grid: grid)
            var values = rng.floats(n, -3, 3)
            for i in stride(from: 0, to: n, by: 7) { values[i] = values[(i + 3) % n] }          // repeated scores
            let a = values
            whole.a.p.update(from: a, count: n)
            for i in 0..<n where rng.int(3) == 0 { whole.state[i] = UInt8(1 + rng.int(2)) }   // a third hard
            let state0 = whole.state
            whole.harden(quantile: q)
            for P in [2, 3] {
                let bounds = (0...P).map { $0 * out / P }
                let states = try ThreadGroup(size: P).run { world -> [UInt8] in
                    let rows = bounds[world.rank]..<bounds[world.rank + 1]
                    let part = try FakeQuantLinear(weight: Array(w[(rows.lowerBound * inFeatures)..<(rows.upperBound * inFeatures)]),
                                                   grid: grid.rows(rows))
                    part.a.p.update(from: Array(a[(rows.lowerBound * inFeatures)..<(rows.upperBound * inFeatures)]),
                                    count: rows.count * inFeatures)
                    part.state = Array(state0[(rows.lowerBound * inFeatures)..<(rows.upperBound * inFeatures)])
                    let shard = try BlockShard(config: stories, spec: QuantSpec(bits: 2, groupSize: -1), world: world)
                    try shard.harden([part], quantile: q)
                    return part.state
                }
                #expect(states.flatMap { $0 } == whole.state, "trial \(trial) q=\(q) P=\(P)")
            }
        }
    }

    /// The trajectory forwards dealt over the ranks by chunks: every rank's cache ends with the single
    /// process's bytes and the loss is the same bits (7 samples in chunks of 2: a short last chunk, and
    /// at 3 ranks a round where two ranks have none). Each rank is given only its own chunks' inputs
    /// and targets (NaN elsewhere), so a rank that ran another's chunk would spoil the result.
    @Test(arguments: [(2, CacheDType.f32), (3, CacheDType.bf16)])
    func dealtForwardsEqualOneProcess(_ P: Int, _ dtype: CacheDType) throws {
        let model = try LlamaModel(directory: Fixtures.model("stories260K"))
        let c = model.config, L = 16, samples = 7, fp = try model.loadBlock(1)
        let xs = try (0..<samples).map { try inputs(c, rows: L, seed: UInt64(200 + $0)).array }
        let ys = try (0..<samples).map { try inputs(c, rows: L, seed: UInt64(300 + $0)).array }
        let nan = [Float](repeating: .nan, count: L * c.hidden)
        let caches = { @Sendable (rank: Int, size: Int) throws -> (ActivationCache, ActivationCache) in
            let x = try ActivationCache(samples: samples, rowsPerSample: L, width: c.hidden, dtype: dtype)
            let y = try ActivationCache(samples: samples, rowsPerSample: L, width: c.hidden, dtype: dtype)
            for i in 0..<samples {
                let mine = (i / 2) % size == rank
                x.write(i, from: mine ? xs[i] : nan)
                y.write(i, from: mine ? ys[i] : nan)
            }
            return (x, y)
        }
        let (x1, y1) = try caches(0, 1)
        let loss1 = try BlockRunner(config: c, length: L, chunk: 2).run(fp, inputs: x1, targets: y1, advance: true)
        let results = try ThreadGroup(size: P).run { world -> (Double, [UInt8]) in
            let (x, y) = try caches(world.rank, world.size)
            var runner = try BlockRunner(config: c, length: L, chunk: 2)
            runner.world = world
            let loss = try runner.run(fp, inputs: x, targets: y, advance: true)
            return (loss, x.storedBytes(0..<samples))
        }
        let expected = x1.storedBytes(0..<samples)
        #expect(loss1.isFinite)
        for (loss, bytes) in results {
            #expect(loss == loss1)
            #expect(bytes == expected)
        }
    }

    /// With KV heads replicated (tiny-llama's 2 on 4 ranks), k's replicas count once: the quantile
    /// of q (split by heads) and of k (each KV head on two ranks) is the whole linear's, bit for bit.
    @Test func replicatedKVHardeningCountsOnce() throws {
        let c = try LlamaModel(directory: Fixtures.model("tiny-llama")).config
        var rng = TestRNG(13)
        let spec = QuantSpec(bits: 2, groupSize: 8), kinds = [LinearKind.q, .k]
        let weights = kinds.map { let (o, i) = $0.shape(c); return rng.floats(o * i) }
        let scores = kinds.map { let (o, i) = $0.shape(c); return rng.floats(o * i, -3, 3) }
        let grids = zip(kinds, weights).map { kind, w in
            QuantizedLinear.roundToNearest(w, out: kind.shape(c).out, inFeatures: kind.shape(c).in, spec: spec)
        }
        let wholes = try kinds.indices.map { i in
            let l = try FakeQuantLinear(weight: weights[i], grid: grids[i])
            l.a.p.update(from: scores[i], count: scores[i].count)
            return l
        }
        let states = try ThreadGroup(size: 4).run { world -> [[UInt8]] in
            let shard = try BlockShard(config: c, spec: spec, world: world)
            #expect(shard.kvShare == 2)
            let parts = try kinds.indices.map { i in
                let rows = shard.range(kinds[i]), n = kinds[i].shape(c).in, span = (rows.lowerBound * n)..<(rows.upperBound * n)
                let part = try FakeQuantLinear(weight: Array(weights[i][span]), grid: shard.grid(grids[i], kinds[i]))
                part.a.p.update(from: Array(scores[i][span]), count: span.count)
                return part
            }
            try shard.harden(parts, quantile: 0.37)
            return parts.map(\.state)
        }
        for l in wholes { l.harden(quantile: 0.37) }
        #expect(states.flatMap { $0[0] } == wholes[0].state, "q")
        #expect(states[0][1] + states[2][1] == wholes[1].state, "k: the owners' rows")
        #expect(states[1][1] == states[0][1] && states[3][1] == states[2][1], "k: replicas agree")
    }

    @Test("grids split per rank and gathered back are the whole grids", arguments: [(-1, 2), (4, 2), (-1, 8), (4, 8)])
    func gridsRoundTrip(_ group: Int, _ P: Int) throws {
        let model = try LlamaModel(directory: Fixtures.model("stories260K"))   // 8 ranks: each KV head on 2
        let c = model.config, spec = QuantSpec(bits: 3, groupSize: group)
        let grids = try roundToNearest(block: try model.loadBlock(1), layer: 1, config: c, spec: spec)
        let gathered = try ThreadGroup(size: P).run { world -> [QuantizedLinear] in
            let shard = try BlockShard(config: c, spec: spec, world: world)
            return shard.gather(LinearKind.allCases.map { shard.grid(grids[$0.rawValue], $0) })
        }
        for g in gathered {
            for (a, b) in zip(g, grids) {
                #expect(a.out == b.out && a.inFeatures == b.inFeatures && a.codes == b.codes && a.scales == b.scales && a.zeros == b.zeros)
            }
        }
    }

    /// A TesseraQ block trained on 2 ranks against the same block trained whole, same seed: the
    /// loss within 1e-4, the exported codes nearly all equal, and every rank with the same result.
    /// On 2 ranks with every group on one rank, the single process's loss, codes and scales exactly.
    @Test("TesseraQ on 2 ranks (4: KV heads replicated) trains the block the single process trains",
          arguments: [("tiny-llama", -1, 2), ("tiny-qwen3", 16, 2), ("stories260K", -1, 2), ("stories260K", 4, 2),
                      ("tiny-llama", -1, 4), ("tiny-qwen3", 16, 4)])
    func shardedTesseraQMatchesWhole(_ name: String, _ group: Int, _ P: Int) throws {
        let model = try LlamaModel(directory: Fixtures.model(name))
        let c = model.config, spec = QuantSpec(bits: 2, groupSize: group), L = 16, samples = 8
        let fp = try model.loadBlock(0)
        let xq = try ActivationCache(samples: samples, rowsPerSample: L, width: c.hidden, dtype: .f32)
        let yfp = try ActivationCache(samples: samples, rowsPerSample: L, width: c.hidden, dtype: .f32)
        let work = try BlockWorkspace(config: c, sequences: 1, length: L)
        for i in 0..<samples {
            let x = try inputs(c, rows: L, seed: UInt64(100 + i)), y = try FloatBuffer(count: L * c.hidden)
            work.forward(x.p, weights: fp, into: y.p)
            xq.write(i, from: x.p)
            yfp.write(i, from: y.p)
        }
        let options = TesseraQOptions(calibration: CalibrationOptions(nSamples: samples, seqLen: L, batch: 2, seed: 42, cacheDType: .f32),
                                      iters: 6, thresholds: [0.75, 0.4, 0.1], lr: 1e-2, scaleLR: 5e-3, scaleWD: 1e-4,
                                      initMethod: .rtn, lwc: LWCSettings(steps: 1, lr: 0.1))
        let grids = try roundToNearest(block: fp, layer: 0, config: c, spec: spec)
        let (single, report) = try TesseraQBlock(config: c, options: options, layer: 0)
            .run(fp: fp, grids: grids, xq: xq, yfp: yfp, progress: nil)
        let ranks = try ThreadGroup(size: P).run { world in
            try TesseraQBlock(config: c, options: options, layer: 0, world: world).run(fp: fp, grids: grids, xq: xq, yfp: yfp, progress: nil)
        }
        let loss = try #require(report["last_step_loss"] as? Double)
        for (linears, r) in ranks {
            #expect(abs(try #require(r["last_step_loss"] as? Double) / loss - 1) < 1e-4)
            for (a, b) in zip(linears, ranks[0].0) { #expect(a.codes == b.codes && a.scales == b.scales) }
            let codes = zip(linears, single).flatMap { zip($0.codes, $1.codes) }
            #expect(Double(codes.filter { $0 != $1 }.count) / Double(codes.count) < 1e-3)
            let scales = zip(linears, single).flatMap { zip($0.scales, $1.scales) }
            #expect(scales.allSatisfy { abs($0 - $1) <= 1e-4 * abs($1) })
            if P == 2 && group > 0 {
                #expect(r["last_step_loss"] as? Double == loss)
                #expect(zip(linears, single).allSatisfy { $0.codes == $1.codes && $0.scales == $1.scales && $0.zeros == $1.zeros })
            }
        }
    }

    @Test func shardRefusesWhatWouldSplitAGroupOrAStatistic() throws {
        let c = try LlamaModel(directory: Fixtures.model("stories260K")).config
        var wide = try LlamaModel(directory: Fixtures.model("tiny-llama")).config   // 2 KV heads of 2 x 16 columns
        wide.intermediate = 256
        var quantized = c
        quantized.activationQuant = ActivationQuantSpec(bits: 4)
        let cases: [(LlamaConfig, QuantSpec, Int, String)] = [
            (c, QuantSpec(bits: 2, groupSize: 16), 2, "does not split"),     // 172 channels
            (wide, QuantSpec(bits: 2, groupSize: 64), 2, "straddle"),       // 32 attention columns per rank
            (c, QuantSpec(bits: 2, groupSize: -1), 5, "KV heads"),
            (quantized, QuantSpec(bits: 2, groupSize: -1), 2, "activations"),
        ]
        for (config, spec, P, message) in cases {
            let errors = try ThreadGroup(size: P).run { world -> String in
                do { _ = try BlockShard(config: config, spec: spec, world: world); return "" } catch let e as TQError { return e.message }
            }
            #expect(errors.allSatisfy { $0.contains(message) }, "\(errors)")
        }
    }
}

