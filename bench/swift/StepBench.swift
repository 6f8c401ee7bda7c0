import Foundation
import TesseraQ
import TQKernels

/// Times TesseraQ optimisation steps on one synthetic block and prints JSON: milliseconds per
/// step for fake quantisation, forward, loss, backward, and the rounding/DST update, plus the
/// achieved GFLOP/s of the block's dense work. bench/step_bench.py runs it beside numpy.
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
        args = []
        Runtime.setThreads(threads)
        let config = try LlamaConfig(json: .object([
            "hidden_size": .int(hidden), "intermediate_size": .int(ffn), "num_hidden_layers": .int(1),
            "num_attention_heads": .int(heads), "num_key_value_heads": .int(kvHeads), "vocab_size": .int(16),
            "max_position_embeddings": .int(seq), "rms_norm_eps": .double(1e-5),
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
            return try FakeQuantLinear(weight: fp[k].p, grid: QuantizedLinear.roundToNearest(fp[k].p, out: o, inFeatures: i, spec: spec))
        }
        for l in fq { l.harden(quantile: 0.8) }
        let train = BlockWeights(attnNorm: fp.attnNorm, mlpNorm: fp.mlpNorm, linears: fq.map(\.wHat), biases: nil)
        let rows = batch * seq
        let work = try BlockWorkspace(config: config, sequences: batch, length: seq, compute: dtype)
        let grads = try BlockGradients(config: config, rows: rows)
        let x = try random(rows * hidden, 1), target = try random(rows * hidden, 1)
        let y = try FloatBuffer(count: rows * hidden), dY = try FloatBuffer(count: rows * hidden)
        var t = [String: Double]()
        func timed(_ key: String, _ body: () -> Void) {
            let t0 = DispatchTime.now().uptimeNanoseconds
            body()
            t[key, default: 0] += Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6
        }
        for step in 0...steps {   // step 0 warms up and is not counted
            if step == 1 { t = [:] }
            timed("fakequant") { for l in fq { l.materialize() } }
            timed("forward") { work.forward(x.p, weights: train, into: y.p) }
            timed("loss") { _ = tqk_l2_loss(y.p, target.p, Int64(rows), Int64(hidden), dY.p) }
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
        let attnFlops = 6.0 * Double(rows) * Double(seq) * Double(config.headDim * heads)
        var out: [String: Any] = t.mapValues { $0 / Double(steps) }
        let total = t.values.reduce(0, +) / Double(steps)
        out["total"] = total
        out["gflops_per_step"] = (linearFlops + attnFlops) / 1e9
        out["gflop_per_s"] = (linearFlops + attnFlops) / 1e9 / (total / 1000)
        out["threads"] = Runtime.threads
        out["compute_dtype"] = dtype.rawValue
        out["bf16_gemm"] = tqk_use_amx() != 0 ? "amx" : tqk_use_avx512_bf16() != 0 ? "vdpbf16ps" : "emulated"
        out["shape"] = ["hidden": hidden, "heads": heads, "kv_heads": kvHeads, "ffn": ffn, "batch": batch, "seq": seq, "bits": bits, "group": group]
        let data = try JSONSerialization.data(withJSONObject: out, options: [.sortedKeys])
        print(String(decoding: data, as: UTF8.self))
    }
}
