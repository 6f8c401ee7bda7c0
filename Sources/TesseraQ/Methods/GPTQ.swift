import Foundation
import TQKernels

/// GPTQ (Frantar et al., 2022) as a block method, with the reference's --true-sequential order:
/// each group of linears gets its Hessian H = 2 X^T X / tokens from its inputs on the quantized
/// trajectory, recomputed with the groups before it already quantized; then every linear of the
/// group is quantized column by column with error feedback through the inverse Hessian.
/// The Hessians come from float activations even where the model quantizes them (QuaRot's order).
struct GPTQMethod: BlockQuantizer {
    let options: GPTQOptions
    var calibration: CalibrationOptions { options.calibration }
    var computeDType: ComputeDType { .f32 }
    var optionsJSON: [String: Any] { options.json }

    /// Groups of linears sharing an input, in the order they are quantized.
    static let sequence: [[LinearKind]] = [[.q, .k, .v], [.o], [.gate, .up], [.down]]

    func quantize(layer: Int, model c: LlamaConfig, block: BlockWeights, inputs: ActivationCache, targets: ActivationCache,
                  spec: QuantSpec, progress: QuantProgressHandler?) throws -> (linears: [QuantizedLinear], report: [String: Any]) {
        let t0 = Date()
        // The block as quantized so far: float linears replaced group by group (`block` stays float).
        let current = block.replacingLinears(block.linears)
        // Hessians of float activations, as QuaRot's GPTQ (its input quantizers are set up after it).
        let hessians = try GPTQHessians(config: c.floatActivations, inputs: inputs, batch: options.calibration.batch)
        var result = [QuantizedLinear?](repeating: nil, count: LinearKind.allCases.count)
        var errors: [String: Double] = [:]
        var total = 0.0, dead = 0, dampUsed = options.damp
        for (step, kinds) in Self.sequence.enumerated() {
            let h = try hessians.accumulate(input: kinds[0], weights: current)
            let name = kinds.map { $0.prefix(layer: layer) }.joined(separator: ", ")
            let solver = try GPTQSolver(hessian: h, n: kinds[0].shape(c).in, tokens: hessians.tokens, damp: options.damp,
                                        actOrder: options.actOrder, name: name)
            dead += solver.deadCount
            dampUsed = max(dampUsed, solver.damp)
            for kind in kinds {
                let (q, err) = try solver.quantize(block[kind].p, out: kind.shape(c).out, spec: spec, blockSize: options.blockSize)
                guard err.isFinite else { throw TQError(.numeric, "\(kind.prefix(layer: layer)): GPTQ error is \(err)") }
                result[kind.rawValue] = q
                current[kind] = try q.dequantized()
                errors[kind.module] = err
                total += err
            }
            try checkQuantProgress(progress, QuantProgress(block: layer, blocks: c.layers, round: step + 1, rounds: Self.sequence.count,
                                                           step: 1, steps: 1, loss: total))
        }
        return (result.map { $0! }, ["gptq_error": total, "gptq_errors": errors, "gptq_seconds": Date().timeIntervalSince(t0),
                                     "dead_inputs": dead, "damp": dampUsed])
    }
}

/// Runs a block over the calibration inputs, `batch` sequences at a time, and sums X^T X of the
/// inputs of one of its linears.
struct GPTQHessians {
    let config: LlamaConfig
    let inputs: ActivationCache
    let batch: Int
    let rope: RopeTables

    init(config: LlamaConfig, inputs: ActivationCache, batch: Int) throws {
        self.config = config
        self.inputs = inputs
        self.batch = max(1, min(batch, inputs.samples))
        rope = try RopeTables(config: config, positions: inputs.rowsPerSample)
    }

    var tokens: Int { inputs.samples * inputs.rowsPerSample }

    /// sum over every calibration token of x x^T, x the input of `kind` in the block `weights`.
    func accumulate(input kind: LinearKind, weights: BlockWeights) throws -> FloatBuffer {
        let c = config, L = inputs.rowsPerSample, n = kind.shape(c).in
        let h = try FloatBuffer(count: n * n)
        let x = try FloatBuffer(count: batch * L * c.hidden), y = try FloatBuffer(count: batch * L * c.hidden)
        var works: [Int: BlockWorkspace] = [:]
        var start = 0
        while start < inputs.samples {
            let m = min(batch, inputs.samples - start)
            let work = try works[m] ?? BlockWorkspace(config: c, sequences: m, length: L, rope: rope)
            works[m] = work
            inputs.gather(Array(start..<(start + m)), into: x.p)
            if kind == .q || kind == .k || kind == .v {
                // Their input is RMSNorm_1(X): no need to run the block.
                tqk_rmsnorm(x.p, weights.attnNorm.p, work.n1.p, Int64(m * L), Int64(c.hidden), c.rmsEps)
            } else {
                work.forward(x.p, weights: weights, into: y.p)
            }
            tqk_gptq_accumulate(h.p, Self.input(of: kind, in: work), Int64(m * L), Int64(n))
            start += m
        }
        return h
    }

    /// The activation `forward` keeps that feeds `kind`.
    static func input(of kind: LinearKind, in work: BlockWorkspace) -> UnsafeMutablePointer<Float> {
        switch kind {
        case .q, .k, .v: work.n1.p
        case .o: work.attn.p
        case .gate, .up: work.n2.p
        case .down: work.act.p
        }
    }
}

/// The inverse-Hessian factor of one input space, shared by the linears that read it.
struct GPTQSolver {
    let n: Int
    /// Dead inputs (diag(H) == 0): their weight columns are zeroed.
    let dead: [UInt8]
    let deadCount: Int
    /// Processing order (act-order), nil for input order.
    let perm: [Int64]?
    /// Upper Cholesky factor of the damped inverse Hessian, in processing order.
    let u: FloatBuffer
    /// The damp actually used (more than asked when the Hessian needed it).
    let damp: Double

    /// `hessian` is sum x x^T over `tokens` calibration tokens (overwritten with H = 2 X^T X / tokens).
    init(hessian h: FloatBuffer, n: Int, tokens: Int, damp: Double, actOrder: Bool, name: String) throws {
        self.n = n
        var dead = [UInt8](repeating: 0, count: n)
        deadCount = Int(tqk_gptq_hessian_finish(h.p, Int64(n), Float(2.0 / Double(tokens)), &dead))
        self.dead = dead
        let diag = (0..<n).map { h.p[$0 * n + $0] }
        let mean = diag.reduce(0.0) { $0 + Double($1) } / Double(n)
        guard mean.isFinite, diag.allSatisfy(\.isFinite) else {
            throw TQError(.numeric, "\(name): the Hessian of the calibration inputs is not finite")
        }
        if actOrder {
            // Descending diag(H); ties keep input order.
            perm = (0..<n).sorted { diag[$0] != diag[$1] ? diag[$0] > diag[$1] : $0 < $1 }.map { Int64($0) }
        } else {
            perm = nil
        }
        let order = perm, factor = try FloatBuffer(count: n * n)
        u = factor
        var d = damp
        while true {
            let rc = order.map { tqk_gptq_inverse_factor(h.p, Int64(n), d * mean, $0, factor.p) }
                ?? tqk_gptq_inverse_factor(h.p, Int64(n), d * mean, nil, factor.p)
            if rc == 0 { break }
            if rc < 0 { throw TQError(.outOfMemory, "\(name): no memory for the inverse Hessian (\(n) x \(n) doubles)") }
            d += GPTQOptions.dampIncrement
            guard d < 1 else {
                throw TQError(.numeric, "\(name): the Hessian is not positive definite even with damp \(d - GPTQOptions.dampIncrement)")
            }
        }
        self.damp = d
    }

    /// Quantizes `weight` [out x n]; returns the layer (codes in input order, g_idx under act-order)
    /// and the reference's error proxy.
    func quantize(_ weight: UnsafePointer<Float>, out: Int, spec: QuantSpec, blockSize: Int) throws -> (QuantizedLinear, Double) {
        let w = try FloatBuffer(count: out * n)
        if let perm {
            tqk_gptq_gather_columns(weight, perm, Int64(out), Int64(n), w.p)
        } else {
            w.p.update(from: weight, count: out * n)
        }
        if deadCount > 0 {
            for j in 0..<n where dead[perm.map { Int($0[j]) } ?? j] != 0 {
                for o in 0..<out { w.p[o * n + j] = 0 }
            }
        }
        let group = spec.group(forInput: n), nGroups = (n + group - 1) / group
        var codes = [UInt8](repeating: 0, count: out * n)
        var scales = [Float](repeating: 0, count: nGroups * out)
        var zeros = [UInt8](repeating: 0, count: nGroups * out)
        let err = tqk_gptq_quantize(w.p, Int64(out), Int64(n), u.p, Int64(group), Int32(spec.bits), spec.sym ? 1 : 0,
                                    Int64(blockSize), &codes, &scales, &zeros)
        var gIdx: [Int32]? = nil
        if let perm {
            var inOrder = [UInt8](repeating: 0, count: out * n)
            tqk_gptq_scatter_codes(codes, perm, Int64(out), Int64(n), &inOrder)
            codes = inOrder
            var g = [Int32](repeating: 0, count: n)
            for (j, p) in perm.enumerated() { g[Int(p)] = Int32(j / group) }
            gIdx = g
        }
        return (QuantizedLinear(out: out, inFeatures: n, spec: spec, codes: codes, scales: scales, zeros: zeros, gIdx: gIdx), err)
    }
}
