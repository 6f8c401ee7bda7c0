import Foundation
import TesseraQ
import TQKernels

/// Times TesseraQ optimisation steps on one synthetic block and prints JSON: milliseconds per
/// step for fake quantisation, forward, loss, backward, and the rounding/DST update, plus the
/// achieved GFLOP/s of the block's dense work. bench/step_bench.py runs it beside numpy.
/// With `--ranks P` it times one rank's tensor-parallel shard of the block (its heads, KV heads and
/// FFN channels, a P-th of each; with more ranks than KV heads, one KV head replicated on P / KV
/// ranks as BlockShard does) without communicating, and counts what the rank would all-reduce;
/// under `mpirun -np P` every rank runs its shard with the real all-reduces and times them apart.
/// bench/tp_scaling.py builds its scaling model from both. One process sums o's and down's outputs
/// and n2's gradient in the two halves two ranks would hold, as training does; `--whole-sums` times
/// one GEMM each instead.
@main
struct StepBench {
    static func main() throws {
        var args = CommandLine.arguments.dropFirst()
        func value(_ flag: String, _ def: Int) -> Int {
            guard let i = args.firstIndex(of: flag), i + 1 < args.endIndex, let v = Int(args[i + 1]) else { return def }
            return v
        }
        let hidden = value("--hidden", 576), heads = value("--heads", 9), kvHeads = value("--kv-heads", 3)
        let ffn = value("--ffn", 1536), batch = value("--batch", 4), seq = value("--seq", 512)
        let steps = value("--steps", 5), threads = value("--threads", 0), bits = value("--bits", 2), group = value("--group", 64)
        let dtype: ComputeDType = args.contains("--bf16") ? .bf16 : .f32
        let state: StateDType = args.contains("--lean") ? .bf16 : .f32
        let wholeSums = args.contains("--whole-sums")   // one GEMM per split sum, as before the halves
        let world = try Communicator.joinWorld()
        let ranks = world.size > 1 ? world.size : value("--ranks", 1)
        args = []
        Runtime.setThreads(threads)
        guard heads % ranks == 0, kvHeads % ranks == 0 || ranks % kvHeads == 0, ffn % ranks == 0 else {
            throw TQError(.invalidArgument, "--ranks \(ranks) must divide the heads and FFN channels, and divide or be a multiple of the KV heads")
        }
        let kvReplicas = max(1, ranks / kvHeads)
        // The whole block's head dimension, on this rank's share of heads and channels.
        let config = try LlamaConfig(json: .object([
            "hidden_size": .int(hidden), "intermediate_size": .int(ffn / ranks), "num_hidden_layers": .int(1),
            "num_attention_heads": .int(heads / ranks), "num_key_value_heads": .int(max(1, kvHeads / ranks)), "vocab_size": .int(16),
            "max_position_embeddings": .int(seq), "rms_norm_eps": .double(1e-5), "head_dim": .int(hidden / heads),
        ]), path: "synthetic")
        var rng = SeededGenerator(seed: 1)
        func random(_ n: Int, _ scale: Float) throws -> FloatBuffer {
            try FloatBuffer((0..<n).map { _ in Float.random(in: -scale...scale, using: &rng) })
        }
        let fp = try BlockWeights(attnNorm: FloatBuffer([Float](repeating: 1, count: hidden)),
                              mlpNorm: FloatBuffer([Float](repeating: 1, count: hidden)),
                              linears: LinearKind.allCases.map { let (o, i) = $0.shape(config); return try random(o * i, 0.05) },
                              biases: nil)
        let spec = QuantSpec(bits: bits, groupSize: group)
        let fq = try LinearKind.allCases.map { k -> FakeQuantLinear in
            let (o, i) = k.shape(config)
            return try FakeQuantLinear(weight: fp[k].p, grid: QuantizedLinear.roundToNearest(fp[k].p, out: o, inFeatures: i, spec: spec),
                                       stateDType: state)
        }
        for l in fq { l.harden(quantile: 0.8) }
        let train = BlockWeights(attnNorm: fp.attnNorm, mlpNorm: fp.mlpNorm, linears: fq.map(\.wHat), biases: nil)
        let rows = batch * seq
        let grads = try BlockGradients(config: config, rows: rows)
        let x = try random(rows * hidden, 1), target = try random(rows * hidden, 1)
        let y = try FloatBuffer(count: rows * hidden), dY = try FloatBuffer(count: rows * hidden)
        var t = [String: Double]()
        func timed(_ key: String, _ body: () -> Void) {
            let t0 = DispatchTime.now().uptimeNanoseconds
            body()
            t[key, default: 0] += Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6
        }
        // Tensor parallel: o's and down's outputs and n2's gradient are summed over the ranks. One
        // process sums the halves two ranks would hold, as TesseraQ's training does (BlockShard).
        var reduced = (count: 0, floats: 0)
        let reduction: PartialReduction
        if ranks > 1 {
            reduction = .ranks { p, n in
                reduced.count += 1
                reduced.floats += n
                guard world.size > 1 else { return }
                let t0 = DispatchTime.now().uptimeNanoseconds
                world.allReduce(p, count: n)
                t["allreduce", default: 0] += Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6
            }
        } else if wholeSums {
            reduction = .whole
        } else {
            reduction = .twoRankHalves(config: config, spec: spec)
        }
        let work = try BlockWorkspace(config: config, sequences: batch, length: seq, compute: dtype, reduction: reduction)
        if kvReplicas > 1 {
            // A replicated KV head's dk and dv are summed over its replicas, through one all-reduce
            // of every KV head's columns (BlockShard.kvSums).
            let fullKV = kvHeads * config.headDim
            work.kvSums = { p, n in
                let padded = n / config.kvDim * fullKV
                reduced.count += 1
                reduced.floats += padded
                guard world.size > 1 else { return }
                let t0 = DispatchTime.now().uptimeNanoseconds
                let all = UnsafeMutablePointer<Float>.allocate(capacity: padded)
                all.initialize(repeating: 0, count: padded)
                world.allReduce(all, count: padded)
                all.deallocate()
                t["allreduce", default: 0] += Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6
            }
        }
        for step in 0...steps {   // step 0 warms up and is not counted
            if step == 1 { t = [:]; reduced = (0, 0) }
            timed("fakequant") { for l in fq { l.materialize() } }
            timed("forward") { work.forward(x.p, weights: train, into: y.p) }
            timed("loss") { _ = tqk_l2_loss(y.p, target.p, Int64(rows), Int64(hidden), nil, dY.p) }
            timed("backward") { work.backward(dY.p, weights: train, into: grads) }
            timed("update") {
                for (k, l) in fq.enumerated() {
                    l.backward(grads.dW[k].p)
                    l.step(step + 1, lr: 1e-3, scaleLR: 1e-3, scaleWD: 1e-4)
                }
            }
        }
        let params = LinearKind.allCases.reduce(0) { let (o, i) = $1.shape(config); return $0 + o * i }
        // Dense work: forward 2*rows*params; backward dX and dW, 4*rows*params (the first linears'
        // dX is skipped, ignored here); causal attention about 2*rows*seq*headDim*heads forward, twice that backward.
        let linearFlops = 6.0 * Double(rows) * Double(params)
        let attnFlops = 6.0 * Double(rows) * Double(seq) * Double(config.headDim * config.heads)
        var out: [String: Any] = t.mapValues { $0 / Double(steps) }
        // The all-reduces are timed inside forward and backward: the step is the phases' sum.
        let total = t.filter { $0.key != "allreduce" }.values.reduce(0, +) / Double(steps)
        out["total"] = total
        out["ranks"] = ranks
        out["sums"] = ranks > 1 ? "ranks" : wholeSums ? "whole" : "halves"
        out["mpi"] = world.size > 1
        out["allreduces_per_step"] = Double(reduced.count) / Double(steps)
        out["allreduce_bytes_per_step"] = Double(reduced.floats * 4) / Double(steps)
        out["params_per_rank"] = params
        out["peak_rss_mb"] = peakResidentMB()
        out["gflops_per_step"] = (linearFlops + attnFlops) / 1e9
        out["gflop_per_s"] = (linearFlops + attnFlops) / 1e9 / (total / 1000)
        out["threads"] = Runtime.threads
        out["compute_dtype"] = dtype.rawValue
        out["bf16_gemm"] = tqk_use_amx() != 0 ? "amx" : tqk_use_dpbf16() != 0 ? "vdpbf16ps" : "rounded-f32"
        out["shape"] = ["hidden": hidden, "heads": heads, "kv_heads": kvHeads, "ffn": ffn, "batch": batch, "seq": seq, "bits": bits, "group": group]
        let data = try JSONSerialization.data(withJSONObject: out, options: [.sortedKeys])
        if world.isRoot { print(String(decoding: data, as: UTF8.self)) }
    }

    /// VmHWM of /proc/self/status: the process's peak resident set, in MB.
    static func peakResidentMB() -> Double {
        let text = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        let line = text.split(separator: "\n").first { $0.hasPrefix("VmHWM:") } ?? ""
        let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
        return (Double(fields.dropFirst().first ?? "") ?? 0) / 1024
    }
}
