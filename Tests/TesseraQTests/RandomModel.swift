import Foundation
import TQKernels
@testable import TesseraQ

/// A randomly initialised checkpoint of any supported shape, written by the tests themselves:
/// config.json from `fields` and float32 model.safetensors with every tensor the config implies
/// (biases and an untied head included). Linears are uniform in +-sqrt(3 / in) (unit-variance
/// outputs), norms near 1, biases in +-0.5 so that they matter.
func writeRandomModel(_ fields: [String: JSONValue], seed: UInt64, tag: String) throws -> String {
    let dir = temporaryDirectory(tag)
    let json = JSONValue.object(fields)
    let c = try LlamaConfig(json: json, path: dir + "/config.json")
    var rng = TestRNG(seed)
    var w = SafeTensorsWriter()
    func tensor(_ name: String, _ shape: [Int], _ lo: Float, _ hi: Float, offset: Float = 0) {
        w.add(name, .f32, shape, rng.floats(shape.reduce(1, *), lo, hi).map { $0 + offset })
    }
    tensor("model.embed_tokens.weight", [c.vocab, c.hidden], -1, 1)
    for l in 0..<c.layers {
        let p = "model.layers.\(l)."
        tensor(p + "input_layernorm.weight", [c.hidden], -0.2, 0.2, offset: 1)
        tensor(p + "post_attention_layernorm.weight", [c.hidden], -0.2, 0.2, offset: 1)
        for kind in LinearKind.allCases {
            let (o, i) = kind.shape(c), r = Float(3 / Double(i)).squareRoot()
            tensor(kind.prefix(layer: l) + ".weight", [o, i], -r, r)
        }
        if c.qkvBias {
            for kind in [LinearKind.q, .k, .v] { tensor(kind.prefix(layer: l) + ".bias", [kind.shape(c).out], -0.5, 0.5) }
        }
    }
    tensor("model.norm.weight", [c.hidden], -0.2, 0.2, offset: 1)
    if !c.tiedEmbeddings { tensor("lm_head.weight", [c.vocab, c.hidden], -0.2, 0.2) }
    try w.write(to: dir + "/model.safetensors")
    guard FileManager.default.createFile(atPath: dir + "/config.json", contents: Data(json.description.utf8)) else {
        throw TQError(.io, "\(dir)/config.json: cannot write")
    }
    return dir
}

/// Logits [tokens x vocab] of one sequence.
func logits(_ m: LlamaModel, _ tokens: [UInt32]) throws -> [Float] {
    var out = [Float](repeating: .nan, count: tokens.count * m.config.vocab)
    try tokens.withUnsafeBufferPointer { t in
        try out.withUnsafeMutableBufferPointer { try m.logits(t, into: $0.baseAddress!) }
    }
    return out
}

/// max |a - b| / max |b|.
func relativeMaxError(_ a: [Float], _ b: [Float]) -> Float {
    precondition(a.count == b.count)
    let scale = b.map(abs).max() ?? 0
    return zip(a, b).map { abs($0 - $1) }.max()! / max(scale, .leastNormalMagnitude)
}

/// The block's dL/dW (BlockWorkspace.backward, loss: the mean squared error of work.forward(x)
/// against `target`) against central finite differences at `samples` random entries of each linear
/// in `kinds` of `w` (perturbed in place and restored): per kind, |dW - FD| and |FD| over the entries.
func finiteDifferenceErrors(_ work: BlockWorkspace, _ w: BlockWeights, x: FloatBuffer, target: FloatBuffer,
                            kinds: [LinearKind] = LinearKind.allCases, rng: inout TestRNG, samples: Int = 12,
                            eps: Float = 1e-2) throws -> [(kind: LinearKind, err: Double, size: Double)] {
    let c = work.config, rows = work.rows
    let y = try FloatBuffer(count: rows * c.hidden), dY = try FloatBuffer(count: rows * c.hidden)
    func loss() -> Double {
        work.forward(x.p, weights: w, into: y.p)
        return tqk_l2_loss(y.p, target.p, Int64(rows), Int64(c.hidden), nil, nil)
    }
    work.forward(x.p, weights: w, into: y.p)
    _ = tqk_l2_loss(y.p, target.p, Int64(rows), Int64(c.hidden), nil, dY.p)
    let grads = try BlockGradients(config: c, rows: rows)
    work.backward(dY.p, weights: w, into: grads)
    return kinds.map { kind in
        var analytic: [Double] = [], numeric: [Double] = []
        for _ in 0..<samples {
            let i = rng.int(w[kind].count), keep = w[kind].p[i]
            w[kind].p[i] = keep + eps
            let plus = loss()
            w[kind].p[i] = keep - eps
            let minus = loss()
            w[kind].p[i] = keep
            numeric.append((plus - minus) / Double(2 * eps))
            analytic.append(Double(grads[kind].p[i]))
        }
        let err = zip(analytic, numeric).map { ($0 - $1) * ($0 - $1) }.reduce(0, +).squareRoot()
        return (kind, err, numeric.map { $0 * $0 }.reduce(0, +).squareRoot())
    }
}
