import Foundation
import TQKernels

/// Method "awq" (ALGORITHM.md section 4): AWQ's scales and clipping on each block, then round to
/// nearest on the grid of the transformed, clipped weights. The folded norms are exported.
struct AWQMethod: BlockQuantizer {
    let options: AWQOptions
    var calibration: CalibrationOptions { options.calibration }
    var computeDType: ComputeDType { options.computeDType }
    var optionsJSON: [String: Any] { options.json }

    func quantize(layer: Int, model: LlamaConfig, block: BlockWeights, inputs: ActivationCache, targets: ActivationCache,
                  spec: QuantSpec, progress: QuantProgressHandler?) throws -> (linears: [QuantizedLinear], report: [String: Any]) {
        let report = try AWQTransform(config: model, settings: options.settings, spec: spec, batch: calibration.batch, layer: layer,
                                      dtype: options.computeDType, tokenCap: options.massiveTokenCap)
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
    /// The precision of the scale search's candidate forwards (the statistics pass and the clip
    /// search stay float32): bf16 is the reference's own regime, llm-awq searching in fp16.
    var dtype: ComputeDType = .f32
    /// The scale search's `massive_token_cap` (0: the plain MSE): a run's AWQ start weighs the
    /// massive tokens of the modules' outputs as its training does.
    var tokenCap: Double = 0

    /// The groups this model can scale (v -> o only without GQA).
    var groups: [AWQGroup] {
        AWQGroup.allCases.filter { $0 != .vo || config.kvDim == config.qDim }
    }

    /// The calibration sequences the searches use.
    func sampleCount(_ inputs: ActivationCache) -> Int {
        settings.samples > 0 ? min(settings.samples, inputs.samples) : inputs.samples
    }

    /// Transforms `block` in place from its inputs `inputs`; returns the report fields.
    func apply(to block: BlockWeights, inputs: ActivationCache) throws -> [String: Any] {
        let t0 = Date()
        guard settings.scale || settings.clip else { return ["awq_seconds": 0.0] }
        let stats = try AWQStatistics(self, block: block, inputs: inputs)
        var report: [String: Any] = [:]
        if settings.scale {
            let tokens = stats.plan.samples * stats.plan.length
            let (scales, ratios, losses) = try searchScales(block: block, set: stats.scaleSet!, absSum: stats.absSum, tokens: tokens)
            // In a fixed order: up_proj (and v_proj) are scaled by two groups, and float rounding is order-dependent.
            for gr in groups {
                guard let s = scales[gr] else { continue }
                fold(gr, s, into: block)
                // The clip search sees the transformed block's inputs: x / s.
                stats.rescaleClipGram(gr, by: s, group: spec.group(forInput: gr.width(config)))
            }
            report["awq_ratios"] = Dictionary(uniqueKeysWithValues: ratios.map { ($0.key.rawValue, $0.value) })
            report["awq_scale_loss"] = Dictionary(uniqueKeysWithValues: losses.map { ($0.key.rawValue, $0.value) })
        }
        if settings.clip {
            let shrinks = settings.shrinks
            var clipReport: [String: Double] = [:]
            for kind in [LinearKind.v, .o, .gate, .up, .down] {
                let (o, i) = kind.shape(config)
                let group = spec.group(forInput: i), nGroups = (i + group - 1) / group
                var factors = [Float](repeating: 1, count: o * nGroups)
                tqk_awq_clip_search_gram(block[kind].p, Int64(o), Int64(i), Int64(group), Int32(spec.bits), spec.sym ? 1 : 0,
                                         stats.clipGram[AWQGroup.of(kind)]!.p, Int64(stats.plan.clipTokens), shrinks,
                                         Int64(shrinks.count), &factors, nil, nil)
                clipReport[kind.module.split(separator: ".").last.map(String.init) ?? "\(kind)"] =
                    factors.reduce(0.0) { $0 + Double($1) } / Double(factors.count)
            }
            report["awq_clip"] = clipReport
        }
        report["awq_seconds"] = Date().timeIntervalSince(t0)
        return report
    }

    /// Scale search: per group and each ratio `search` visits, quantize the consumers' scaled weights
    /// once and compare the inspected module's output with its full-precision output on the evaluation set.
    /// `absSum` over `tokens` calibration tokens gives x_mean. Returns the best scales, ratios, losses.
    func searchScales(block: BlockWeights, set: AWQScaleSet, absSum: [AWQGroup: [Double]],
                      tokens: Int) throws -> ([AWQGroup: [Float]], [AWQGroup: Double], [AWQGroup: Double]) {
        let c = config, ratios = settings.ratios
        var candidates: [AWQGroup: [[Float]]] = [:]
        for gr in groups {
            let xMean = absSum[gr]!.map { Float($0 / Double(tokens)) }
            let wMean = weightMean(gr, block)
            candidates[gr] = ratios.map { Self.scales(xMean: xMean, wMean: wMean, ratio: $0) }
        }
        let fq = try LinearKind.allCases.map { k -> FloatBuffer in let (o, i) = k.shape(c); return try FloatBuffer(count: o * i) }
        var best: [AWQGroup: [Float]] = [:], bestRatio: [AWQGroup: Double] = [:], bestLoss: [AWQGroup: Double] = [:]
        for gr in groups {
            // Mean over the module's output elements, as the reference.
            func loss(_ k: Int) -> Double {
                let s = candidates[gr]![k]
                for kind in gr.consumers {
                    let (o, i) = kind.shape(c)
                    tqk_awq_fake_quant(block[kind].p, s, Int64(o), Int64(i), Int64(spec.group(forInput: i)), Int32(spec.bits),
                                       spec.sym ? 1 : 0, fq[kind.rawValue].p)
                }
                // The consumers quantized, every other linear of the inspected module in full precision.
                let w = { (kind: LinearKind) in UnsafePointer(gr.consumers.contains(kind) ? fq[kind.rawValue].p : block[kind].p) }
                return set.squaredError(gr, w, block: block) / Double(set.elements(gr))
            }
            guard let (k, l) = settings.search.best(count: ratios.count, loss: loss) else {
                throw TQError(.numeric, "block \(layer): AWQ scale search for \(gr.rawValue) found no finite loss")
            }
            best[gr] = candidates[gr]![k]
            bestRatio[gr] = Double(k) / Double(settings.nGrid)
            bestLoss[gr] = l
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
