import Foundation
import TQKernels

/// Where a quantization run is: the block being worked on (0-based) of `blocks`, the round
/// (1-based, 0 for methods without rounds) of `rounds`, the step of `steps`, and the current
/// loss (NaN when the method has none).
public struct QuantProgress: Sendable {
    public var block: Int
    public var blocks: Int
    public var round: Int = 0
    public var rounds: Int = 0
    public var step: Int = 0
    public var steps: Int = 0
    public var loss: Double = .nan

    /// Share of the whole run done, for progress bars.
    public var fraction: Double {
        guard rounds > 0 else { return Double(block + 1) / Double(blocks) }
        let inBlock = (Double(round - 1) + Double(step) / Double(max(steps, 1))) / Double(rounds)
        return (Double(block) + inBlock) / Double(blocks)
    }
}

/// Returns false to cancel the run.
public typealias QuantProgressHandler = (QuantProgress) -> Bool

func checkQuantProgress(_ handler: QuantProgressHandler?, _ p: QuantProgress) throws {
    var go = handler?(p) ?? true
    // Under mpirun every rank passes here in step: a cancel on any rank cancels all of them.
    let world = Communicator.world
    if world.size > 1 { go = world.allReduce([go ? 0 : 1])[0] == 0 }
    if !go {
        throw TQError(.cancelled, "cancelled by the progress callback at block \(p.block), round \(p.round), step \(p.step)")
    }
}

/// Quantizes every block of `model` with the configured method and writes a GPTQ checkpoint
/// to `outDir` (FORMATS.md), with `quantize_report.json` beside the weights. Calibrated
/// methods read their tokens from `calibration` or the `calib_tokens` file; the tokens are
/// consumed, so a long calibration text is not held once its windows are cut.
@discardableResult
public func quantizeModel(_ model: LlamaModel, config: QuantizeConfig, outDir: String, calibration: consuming [UInt32]? = nil,
                          progress: QuantProgressHandler? = nil) throws -> [String: Any] {
    let world = try Communicator.joinWorld()
    defer { tqk_scratch_release() }   // the scratch this thread's kernels kept for their next call
    do {
        return try quantizeOnRanks(model, config: config, outDir: outDir, calibration: consume calibration, progress: progress)
    } catch {
        // Under mpirun a rank that fails must not leave the others waiting in a collective; a cancel
        // is every rank's at once (checkQuantProgress), so it returns as usual.
        guard world.size > 1, (error as? TQError)?.kind != .cancelled else { throw error }
        FileHandle.standardError.write(Data("tesseraq: rank \(world.rank) of \(world.size): \(error)\n".utf8))
        world.abort(code: 1)
    }
}

/// `quantizeModel` on every rank of the MPI world (one outside mpirun): the blocks' TesseraQ training
/// is split over the ranks (`BlockShard`), everything else runs on each; rank 0 writes.
private func quantizeOnRanks(_ model: LlamaModel, config: QuantizeConfig, outDir: String, calibration: consuming [UInt32]?,
                             progress: QuantProgressHandler?) throws -> [String: Any] {
    let world = Communicator.world
    guard model.packed == nil else { throw TQError.invalid("\(model.directory) is already quantized") }
    var config = config
    try config.fit(to: model.config)
    guard !outDir.isEmpty else { throw TQError.invalid("out_dir is empty") }
    if FileManager.default.fileExists(atPath: outDir) && !config.overwrite {
        throw TQError.invalid("\(outDir) already exists (set \"overwrite\": true to replace it)")
    }
    if world.size > 1 {
        guard config.method == "tesseraq" else {
            throw TQError.invalid("under mpirun only method tesseraq is split over the ranks; run \(config.method) without mpirun")
        }
        guard config.rotationSeed == nil else {
            throw TQError.invalid("tensor parallelism does not rotate (rotate): the online Hadamard spans the ranks; run without mpirun")
        }
        var trained = model.config.floatActivations   // as the method sees it (CalibratedRun)
        trained.activationQuant = config.activations
        _ = try BlockShard(config: trained, spec: config.spec, world: world)   // refuse a bad split before any work
    }
    let start = Date()
    guard let seed = config.rotationSeed else { return try quantizeModel(model, config: config, outDir: outDir, start: start,
                                                                         calibration: consume calibration, progress: progress) }
    // QuaRot: quantize the rotated float model, written beside the output and removed after.
    let rotatedDir = outDir + ".rotated"
    defer { try? FileManager.default.removeItem(atPath: rotatedDir) }
    try ModelRotation(model: model, seed: seed).write(to: rotatedDir)
    return try quantizeModel(try LlamaModel(directory: rotatedDir), config: config, outDir: outDir, start: start,
                             calibration: consume calibration, progress: progress)
}

/// `quantizeModel` once the model is the one to quantize (rotated where asked).
private func quantizeModel(_ model: LlamaModel, config: QuantizeConfig, outDir: String, start: Date, calibration: consuming [UInt32]?,
                           progress: QuantProgressHandler?) throws -> [String: Any] {
    let allocations = Runtime.allocationFailures
    let staging = outDir + ".partial"
    let quantization = GPTQConfig(bits: config.spec.bits, groupSize: config.spec.groupSize, sym: config.spec.sym,
                                  descAct: config.descAct, checkpointFormat: config.format)
    var report: [String: Any] = ["method": config.method, "bits": config.spec.bits, "group_size": config.spec.groupSize,
                                 "sym": config.spec.sym]
    if !config.notices.isEmpty { report["notices"] = config.notices }
    report.merge(config.activationJSON) { $1 }
    let linears: CheckpointWriter.PackedBlocks
    var floats: [String: [Float]] = [:]
    switch config.method {
    case "rtn":
        try? FileManager.default.removeItem(atPath: staging)
        let rtn = try quantizeRTN(model, spec: config.spec, progress: progress)
        (linears, report["blocks"]) = (CheckpointWriter.PackedBlocks(rtn.0), rtn.1)
    default:
        let method = try makeBlockQuantizer(config)
        var tokens = try (consume calibration) ?? calibrationFile(config)
        let run = CalibratedRun(model: model, config: config, method: method, quantization: quantization, staging: staging)
        (linears, report["blocks"], floats) = try Runtime.checkingAllocations("quantize") {
            try run.quantize(tokens: exchange(&tokens, with: []), progress: progress)
        }
        report["options"] = method.optionsJSON
        report["memory"] = run.memory.json
    }
    report["seconds"] = Date().timeIntervalSince(start)
    var writer = CheckpointWriter(model: model, quantization: quantization)
    writer.extraConfig = ["method": config.method]
    if let a = config.activations { writer.extraConfig["activations"] = a.json }
    writer.floatOverrides = floats
    writer.extraFiles["quantize_report.json"] = try JSONSerialization.data(withJSONObject: report, options: [.prettyPrinted, .sortedKeys])
    try Runtime.checkAllocations(since: allocations, "quantize")  // nothing incomplete is written
    if Communicator.world.isRoot {
        try writer.write(linears: linears, to: outDir, staging: staging, overwrite: config.overwrite)
    }
    Communicator.world.barrier()   // the checkpoint is in place when any rank returns
    return report
}

func calibrationFile(_ config: QuantizeConfig) throws -> [UInt32] {
    guard let path = config.options["calib_tokens"]?.string else {
        throw TQError.invalid("method \(config.method) needs calibration tokens: set config key calib_tokens (a uint32 token file) or pass tokens")
    }
    return try readTokenFile(path)
}

/// Round to nearest, block by block.
func quantizeRTN(_ model: LlamaModel, spec: QuantSpec, progress: QuantProgressHandler?) throws -> ([PackedLinear], [[String: Any]]) {
    let c = model.config
    var linears: [PackedLinear] = []
    var reports: [[String: Any]] = []
    for layer in 0..<c.layers {
        let t0 = Date()
        let grids = try roundToNearest(block: try model.loadBlock(layer), layer: layer, config: c, spec: spec)
        for (kind, q) in zip(LinearKind.allCases, grids) {
            linears.append(PackedLinear(name: kind.prefix(layer: layer), q, groupSize: spec.groupSize))
        }
        reports.append(["block": layer, "seconds": Date().timeIntervalSince(t0)])
        try checkQuantProgress(progress, QuantProgress(block: layer, blocks: c.layers))
    }
    return (linears, reports)
}

/// RTN of one weight matrix, refusing non-finite weights (they would make a silent garbage grid).
func roundToNearest(_ w: FloatBuffer, out: Int, inFeatures: Int, spec: QuantSpec, name: String) throws -> QuantizedLinear {
    guard UnsafeBufferPointer(start: w.p, count: w.count).allSatisfy(\.isFinite) else {
        throw TQError(.numeric, "\(name).weight holds a NaN or infinite value")
    }
    return QuantizedLinear.roundToNearest(w.p, out: out, inFeatures: inFeatures, spec: spec)
}

/// RTN grids of a block's seven linears.
func roundToNearest(block: BlockWeights, layer: Int, config c: LlamaConfig, spec: QuantSpec) throws -> [QuantizedLinear] {
    try LinearKind.allCases.map { kind in
        let (o, i) = kind.shape(c)
        return try roundToNearest(block[kind], out: o, inFeatures: i, spec: spec, name: kind.prefix(layer: layer))
    }
}
