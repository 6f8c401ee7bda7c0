import Foundation
import TQKernels

/// Method "awq" (ALGORITHM.md section 4): AWQ's scales and clipping on each block, then round to
/// nearest on the grid of the transformed, clipped weights. The folded norms are exported.
struct AWQMethod: BlockQuantizer {
    let options: AWQOptions
    var calibration: CalibrationOptions { options.calibration }
    var optionsJSON: [String: Any] { options.json }

    func quantize(layer: Int, model: LlamaConfig, block: BlockWeights, inputs: ActivationCache, targets: ActivationCache,
                  spec: QuantSpec, progress: QuantProgressHandler?) throws -> (linears: [QuantizedLinear], report: [String: Any]) {
        let report = try AWQTransform(config: model, settings: options.settings, spec: spec, batch: calibration.batch, layer: layer)
            .apply(to: block, inputs: inputs)
        return (try roundToNearest(block: block, layer: layer, config: model, spec: spec), report)
    }
}

/// A group of linears sharing one input, whose input columns AWQ scales by `s` while the op
/// producing that input divides its output by `s`.
enum AWQGroup: String, CaseIterable, Sendable {
    /// input_layernorm -> q, k, v; inspected: the whole self-attention (o_proj in full precision).
    case qkv
    /// v_proj rows -> o_proj; inspected: o_proj. Only when v's output size is o's input size (no GQA).
    case vo = "v_o"
    /// post_attention_layernorm -> gate, up; inspected: the whole MLP (down_proj in full precision).
    case gateUp = "gate_up"
    /// up_proj rows -> down_proj; inspected: down_proj.
    case upDown = "up_down"

    var consumers: [LinearKind] {
        switch self {
        case .qkv: [.q, .k, .v]
        case .vo: [.o]
        case .gateUp: [.gate, .up]
        case .upDown: [.down]
        }
    }

    func width(_ c: LlamaConfig) -> Int {
        switch self {
        case .qkv, .gateUp: c.hidden
        case .vo: c.qDim
        case .upDown: c.intermediate
        }
    }

    /// The group whose (scaled) input a linear reads, for the clip search.
    static func of(_ kind: LinearKind) -> AWQGroup {
        switch kind {
        case .q, .k, .v: .qkv
        case .o: .vo
        case .gate, .up: .gateUp
        case .down: .upDown
        }
    }
}

/// The full-precision forward of one chunk of calibration sequences (its intermediates are the
/// groups' inputs), plus scratch to evaluate the inspected sub-modules with other weights.
final class AWQProbe {
    let work: BlockWorkspace
    let config: LlamaConfig
    /// The attention half for candidate q/k/v weights (its own buffers: `work` keeps the group inputs).
    let attention: AttentionActivations
    let g, u, act, out, attnFP, mlpFP, y: FloatBuffer

    init(config c: LlamaConfig, sequences: Int, length: Int, rope: RopeTables) throws {
        config = c
        work = try BlockWorkspace(config: c, sequences: sequences, length: length, rope: rope)
        let T = sequences * length
        attention = try AttentionActivations(config: c, sequences: sequences, length: length)
        g = try FloatBuffer(count: T * c.intermediate); u = try FloatBuffer(count: T * c.intermediate)
        act = try FloatBuffer(count: T * c.intermediate)
        out = try FloatBuffer(count: T * c.hidden); attnFP = try FloatBuffer(count: T * c.hidden)
        mlpFP = try FloatBuffer(count: T * c.hidden); y = try FloatBuffer(count: T * c.hidden)
    }

    var rows: Int { work.rows }

    /// The input of `group` from the last `forwardFP`.
    func input(_ group: AWQGroup) -> UnsafeMutablePointer<Float> {
        switch group {
        case .qkv: work.n1.p
        case .vo: work.attn.p
        case .gateUp: work.n2.p
        case .upDown: work.act.p
        }
    }

    /// Full-precision block forward on x; keeps the groups' inputs and the self-attention and MLP outputs.
    func forwardFP(_ x: UnsafePointer<Float>, _ w: BlockWeights) {
        let c = config
        work.forward(x, weights: w, into: y.p)
        linearForward(work.attn.p, rows: rows, weight: w[.o].p, out: c.hidden, in: c.qDim, into: attnFP.p)
        linearForward(work.act.p, rows: rows, weight: w[.down].p, out: c.hidden, in: c.intermediate, into: mlpFP.p)
    }

    /// out = o(attention(rope(q(n1)), rope(k(n1)), v(n1))) with the given weights and the block's
    /// biases and q/k norms.
    func attention(_ n1: UnsafePointer<Float>, q wq: UnsafePointer<Float>, k wk: UnsafePointer<Float>,
                   v wv: UnsafePointer<Float>, o wo: UnsafePointer<Float>, block: BlockWeights) {
        attention.forward(n1, q: wq, k: wk, v: wv, block: block, rope: work.rope)
        linearForward(attention.attn.p, rows: rows, weight: wo, out: config.hidden, in: config.qDim, into: out.p)
    }

    /// out = down(act(gate(n2)) * up(n2)) with the given weights.
    func mlp(_ n2: UnsafePointer<Float>, gate wg: UnsafePointer<Float>, up wu: UnsafePointer<Float>, down wd: UnsafePointer<Float>) {
        let c = config, T = rows
        linearForward(n2, rows: T, weight: wg, out: c.intermediate, in: c.hidden, into: g.p)
        linearForward(n2, rows: T, weight: wu, out: c.intermediate, in: c.hidden, into: u.p)
        c.activation.forward(g.p, u.p, into: act.p, count: T * c.intermediate)
        linearForward(act.p, rows: T, weight: wd, out: c.hidden, in: c.intermediate, into: out.p)
    }

    /// Sum over the chunk of the squared difference between `out` and `target`.
    func squaredError(_ target: FloatBuffer) -> Double {
        tqk_l2_loss(out.p, target.p, Int64(rows), Int64(config.hidden), nil) * Double(rows)
    }
}

/// AWQ's search on one block (ALGORITHM.md section 4), applied to the block in place: the scales
/// are folded (consumer columns times s, the producing norm or linear rows divided by s), then the
/// linears other than q and k are clipped. Exact in full precision up to the clipping.
struct AWQTransform {
    let config: LlamaConfig
    let settings: AWQSettings
    let spec: QuantSpec
    /// Calibration sequences per forward chunk.
    let batch: Int
    let layer: Int

    /// The groups this model can scale (v -> o only without GQA).
    var groups: [AWQGroup] {
        AWQGroup.allCases.filter { $0 != .vo || config.kvDim == config.qDim }
    }

    /// The calibration sequences the searches use.
    func sampleCount(_ inputs: ActivationCache) -> Int {
        settings.samples > 0 ? min(settings.samples, inputs.samples) : inputs.samples
    }

    /// Runs `body` on every chunk of `batch` samples of `inputs` after the full-precision forward.
    func forEachChunk(_ inputs: ActivationCache, _ block: BlockWeights, rope: RopeTables,
                      _ body: (AWQProbe, _ firstSample: Int) throws -> Void) throws {
        let L = inputs.rowsPerSample, n = sampleCount(inputs)
        let x = try FloatBuffer(count: min(batch, n) * L * config.hidden)
        var probes: [Int: AWQProbe] = [:]
        var start = 0
        while start < n {
            let m = min(batch, n - start)
            let probe = try probes[m] ?? AWQProbe(config: config, sequences: m, length: L, rope: rope)
            probes[m] = probe
            inputs.gather(Array(start..<(start + m)), into: x.p)
            probe.forwardFP(x.p, block)
            try body(probe, start)
            start += m
        }
    }

    /// Transforms `block` in place from its inputs `inputs`; returns the report fields.
    func apply(to block: BlockWeights, inputs: ActivationCache) throws -> [String: Any] {
        let t0 = Date()
        let c = config
        guard settings.scale || settings.clip else { return ["awq_seconds": 0.0] }
        let rope = try RopeTables(config: c, positions: inputs.rowsPerSample)
        let L = inputs.rowsPerSample, total = sampleCount(inputs) * L
        // Clip subsample: every stride-th token of the calibration set (reference: x[0::n // n_sample]).
        let stride = max(1, total / settings.clipSamples)
        let nSub = (total + stride - 1) / stride
        let clipGroups: [AWQGroup] = settings.clip ? [.qkv, .vo, .gateUp, .upDown] : []
        let sub = Dictionary(uniqueKeysWithValues: try clipGroups.map { ($0, try FloatBuffer(count: nSub * $0.width(c))) })

        // Pass 1: mean |x| per input channel of every group, and the clip subsample.
        var absSum = Dictionary(uniqueKeysWithValues: groups.map { ($0, [Double](repeating: 0, count: $0.width(c))) })
        try forEachChunk(inputs, block, rope: rope) { probe, first in
            if settings.scale {
                for gr in groups { tqk_awq_abs_sum(probe.input(gr), Int64(probe.rows), Int64(gr.width(c)), &absSum[gr]!) }
            }
            for (gr, buf) in sub {
                let w = gr.width(c), src = probe.input(gr)
                for r in 0..<probe.rows where (first * L + r) % stride == 0 {
                    (buf.p + ((first * L + r) / stride) * w).update(from: src + r * w, count: w)
                }
            }
        }

        var report: [String: Any] = [:]
        var chosen: [AWQGroup: [Float]] = [:]
        if settings.scale {
            let (scales, ratios, losses) = try searchScales(block: block, inputs: inputs, rope: rope, absSum: absSum, tokens: total)
            // In a fixed order: up_proj (and v_proj) are scaled by two groups, and float rounding is order-dependent.
            for gr in groups { if let s = scales[gr] { fold(gr, s, into: block) } }
            chosen = scales
            report["awq_ratios"] = Dictionary(uniqueKeysWithValues: ratios.map { ($0.key.rawValue, $0.value) })
            report["awq_scale_loss"] = Dictionary(uniqueKeysWithValues: losses.map { ($0.key.rawValue, $0.value) })
        }
        if settings.clip {
            // The subsample as the transformed block sees it: inputs divided by the scales.
            for (gr, buf) in sub {
                guard let s = chosen[gr] else { continue }
                let w = gr.width(c)
                for t in 0..<nSub { for i in 0..<w { buf.p[t * w + i] /= s[i] } }
            }
            let shrinks = settings.shrinks
            var clipReport: [String: Double] = [:]
            for kind in [LinearKind.v, .o, .gate, .up, .down] {
                let (o, i) = kind.shape(c)
                let group = spec.group(forInput: i), nGroups = (i + group - 1) / group
                var factors = [Float](repeating: 1, count: o * nGroups)
                tqk_awq_clip_search(block[kind].p, Int64(o), Int64(i), Int64(group), Int32(spec.bits), spec.sym ? 1 : 0,
                                    sub[AWQGroup.of(kind)]!.p, Int64(nSub), shrinks, Int64(shrinks.count), 0, &factors, nil, nil)
                clipReport[kind.module.split(separator: ".").last.map(String.init) ?? "\(kind)"] =
                    factors.reduce(0.0) { $0 + Double($1) } / Double(factors.count)
            }
            report["awq_clip"] = clipReport
        }
        report["awq_seconds"] = Date().timeIntervalSince(t0)
        return report
    }

    /// Scale search: per group and ratio, quantize the consumers' scaled weights and compare the
    /// inspected module's output with its full-precision output. Returns the best scales, ratios, losses.
    func searchScales(block: BlockWeights, inputs: ActivationCache, rope: RopeTables, absSum: [AWQGroup: [Double]],
                      tokens: Int) throws -> ([AWQGroup: [Float]], [AWQGroup: Double], [AWQGroup: Double]) {
        let c = config, ratios = settings.ratios
        var candidates: [AWQGroup: [[Float]]] = [:]
        for gr in groups {
            let xMean = absSum[gr]!.map { Float($0 / Double(tokens)) }
            let wMean = weightMean(gr, block)
            candidates[gr] = ratios.map { Self.scales(xMean: xMean, wMean: wMean, ratio: $0) }
        }
        var losses = Dictionary(uniqueKeysWithValues: groups.map { ($0, [Double](repeating: 0, count: ratios.count)) })
        let fq = try LinearKind.allCases.map { k -> FloatBuffer in let (o, i) = k.shape(c); return try FloatBuffer(count: o * i) }
        func fakeQuant(_ kind: LinearKind, _ s: [Float]) {
            let (o, i) = kind.shape(c)
            tqk_awq_fake_quant(block[kind].p, s, Int64(o), Int64(i), Int64(spec.group(forInput: i)), Int32(spec.bits),
                               spec.sym ? 1 : 0, fq[kind.rawValue].p)
        }
        try forEachChunk(inputs, block, rope: rope) { probe, _ in
            for (k, _) in ratios.enumerated() {
                for gr in groups {
                    let s = candidates[gr]![k]
                    for kind in gr.consumers { fakeQuant(kind, s) }
                    switch gr {
                    case .qkv:
                        probe.attention(probe.input(.qkv), q: fq[0].p, k: fq[1].p, v: fq[2].p, o: block[.o].p, block: block)
                        losses[gr]![k] += probe.squaredError(probe.attnFP)
                    case .vo:
                        linearForward(probe.input(.vo), rows: probe.rows, weight: fq[LinearKind.o.rawValue].p, out: c.hidden,
                                      in: c.qDim, into: probe.out.p)
                        losses[gr]![k] += probe.squaredError(probe.attnFP)
                    case .gateUp:
                        probe.mlp(probe.input(.gateUp), gate: fq[LinearKind.gate.rawValue].p, up: fq[LinearKind.up.rawValue].p,
                                  down: block[.down].p)
                        losses[gr]![k] += probe.squaredError(probe.mlpFP)
                    case .upDown:
                        linearForward(probe.input(.upDown), rows: probe.rows, weight: fq[LinearKind.down.rawValue].p,
                                      out: c.hidden, in: c.intermediate, into: probe.out.p)
                        losses[gr]![k] += probe.squaredError(probe.mlpFP)
                    }
                }
            }
        }
        var best: [AWQGroup: [Float]] = [:], bestRatio: [AWQGroup: Double] = [:], bestLoss: [AWQGroup: Double] = [:]
        for gr in groups {
            // Mean over the module's output elements, as the reference; the first strict minimum wins.
            let l = losses[gr]!.map { $0 / Double(tokens * c.hidden) }
            var k = -1
            for j in l.indices where l[j].isFinite && (k < 0 || l[j] < l[k]) { k = j }
            guard k >= 0 else {
                throw TQError(.numeric, "block \(layer): AWQ scale search for \(gr.rawValue) found no finite loss")
            }
            best[gr] = candidates[gr]![k]
            bestRatio[gr] = Double(k) / Double(settings.nGrid)
            bestLoss[gr] = l[k]
        }
        return (best, bestRatio, bestLoss)
    }

    /// Mean over output rows of |W| / (its group's max |W|), over the rows of all the group's linears
    /// (llm-awq concatenates them: each linear counts by its rows).
    func weightMean(_ gr: AWQGroup, _ block: BlockWeights) -> [Float] {
        let n = gr.width(config)
        var acc = [Double](repeating: 0, count: n), m = [Float](repeating: 0, count: n), rows = 0
        for kind in gr.consumers {
            let (o, i) = kind.shape(config)
            tqk_awq_weight_mean(block[kind].p, Int64(o), Int64(i), Int64(spec.group(forInput: i)), &m)
            for j in 0..<n { acc[j] += Double(o) * Double(m[j]) }
            rows += o
        }
        return acc.map { Float($0 / Double(rows)) }
    }

    /// s = x_mean^ratio / w_mean^(1 - ratio), at least 1e-4, over sqrt(max(s) * min(s)).
    static func scales(xMean: [Float], wMean: [Float], ratio: Float) -> [Float] {
        // A column that is zero in every consumer would give w_mean = 0: floor it.
        var s = zip(xMean, wMean).map { x, w in max(powf(x, ratio) / powf(max(w, 1e-6), 1 - ratio), 1e-4) }
        let norm = (s.max()! * s.min()!).squareRoot()
        for i in s.indices { s[i] /= norm }
        return s
    }

    /// W' = W * s on the consumers' input columns; the producer's output divided by s.
    func fold(_ gr: AWQGroup, _ s: [Float], into block: BlockWeights) {
        let c = config
        for kind in gr.consumers {
            let (o, i) = kind.shape(c)
            let w = block[kind].p
            for r in 0..<o { for j in 0..<i { w[r * i + j] *= s[j] } }
        }
        func divideRows(_ kind: LinearKind, bias: Int?) {
            let (o, i) = kind.shape(c)
            let w = block[kind].p
            for r in 0..<o { for j in 0..<i { w[r * i + j] /= s[r] } }
            if let bias, let b = block.biases?[bias] { for r in 0..<o { b.p[r] /= s[r] } }
        }
        switch gr {
        case .qkv: for j in 0..<c.hidden { block.attnNorm.p[j] /= s[j] }
        case .vo: divideRows(.v, bias: 2)
        case .gateUp: for j in 0..<c.hidden { block.mlpNorm.p[j] /= s[j] }
        case .upDown: divideRows(.up, bias: nil)
        }
    }
}
