import Foundation

/// Finished blocks of an interrupted run, kept in `<out>.partial/blocks/NNNN/`: the packed
/// linears and the block's float tensors, norms and biases (model.safetensors, so the packed reader loads them),
/// the block's report, and `block.sum`, the size and checksum of both, written last: a block is
/// finished only when its checksums verify, so a damaged file (a flipped byte, a truncated or
/// empty file) makes the block be computed again, never loaded.
/// `run.json` holds the run's fingerprint; a different run refuses to reuse the state.
struct ResumeState {
    let staging: String
    let fingerprint: [String: String]
    let quantization: GPTQConfig

    /// Under mpirun rank 0 keeps the state and the other ranks read it (the output's folder must be
    /// one every rank sees, as on one machine or a shared filesystem).
    let world = Communicator.world

    init(staging: String, fingerprint: [String: String], quantization: GPTQConfig) throws {
        self.staging = staging
        self.fingerprint = fingerprint
        self.quantization = quantization
        if world.isRoot { try Self.open(staging, fingerprint) }
        world.barrier()
        guard !world.isRoot else { return }
        let saved = FileManager.default.contents(atPath: staging + "/run.json")
            .flatMap { try? JSONSerialization.jsonObject(with: $0) } as? [String: String]
        guard saved == fingerprint else {
            throw TQError.io("\(staging): rank \(world.rank) does not see rank 0's run state; under mpirun the output folder must be on a filesystem every rank sees")
        }
    }

    /// Checks the state a run left in `staging`, or starts it afresh.
    private static func open(_ staging: String, _ fingerprint: [String: String]) throws {
        let fm = FileManager.default
        let runPath = staging + "/run.json"
        if let data = fm.contents(atPath: runPath),
           let saved = (try? JSONSerialization.jsonObject(with: data)) as? [String: String] {
            guard saved == fingerprint else {
                throw TQError.invalid("\(staging) holds the state of a different run (model, configuration or calibration data differ): remove it to start afresh")
            }
        } else {
            try? fm.removeItem(atPath: staging)
            try? fm.createDirectory(atPath: staging + "/blocks", withIntermediateDirectories: true)
            let data = try JSONSerialization.data(withJSONObject: fingerprint, options: [.sortedKeys])
            try writeAtomically(data, to: runPath)
        }
    }

    func blockDirectory(_ layer: Int) -> String { staging + "/blocks/" + String(format: "%04d", layer) }

    /// The persisted linears, float tensors (`floats`, by name) and report of a finished block, or nil.
    func load(_ layer: Int, floats: [String]) throws -> (linears: [PackedLinear], floats: BlockFloats, report: [String: Any])? {
        let dir = blockDirectory(layer)
        let report = Self.verify(dir) ? FileManager.default.contents(atPath: dir + "/report.json")
            .flatMap { try? JSONSerialization.jsonObject(with: $0) } as? [String: Any] : nil
        // Every rank must take the same path: all reuse the block or all compute it.
        let found = world.allReduce([report == nil ? 0 : 1])[0]
        guard found == 0 || Int(found) == world.size else {
            throw TQError.io("\(dir): finished on some ranks' view of the filesystem but not on others'")
        }
        guard let report else { return nil }
        let store = try TensorStore(directory: dir)
        return (try linears(layer, store: store),
                BlockFloats(tensors: Dictionary(uniqueKeysWithValues: try floats.map { ($0, try store.floats($0)) })), report)
    }

    /// The packed linears of a finished block, read back from disk (on this rank alone: the
    /// checkpoint writer's source).
    func linears(_ layer: Int) throws -> [PackedLinear] {
        try linears(layer, store: try TensorStore(directory: blockDirectory(layer)))
    }

    private func linears(_ layer: Int, store: TensorStore) throws -> [PackedLinear] {
        // Saved as they are (v2) whatever the output's format: the writer converts for v1.
        var asSaved = quantization
        asSaved.checkpointFormat = "gptq_v2"
        let ckpt = try PackedCheckpoint(store: store, quantization: asSaved)
        return try LinearKind.allCases.map { kind in
            guard let l = ckpt.linear(named: kind.prefix(layer: layer)) else {
                throw TQError.format("\(store.directory): resume state lacks \(kind.prefix(layer: layer))")
            }
            return l
        }
    }

    /// Persists a finished block; the checksums are written last, so a block counts as finished
    /// only when everything it needs is on disk and intact.
    func save(_ layer: Int, linears: [PackedLinear], floats: BlockFloats, report: [String: Any]) throws {
        guard world.isRoot else { return }
        let dir = blockDirectory(layer)
        try? FileManager.default.removeItem(atPath: dir)
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var w = SafeTensorsWriter()
        for l in linears { l.addTensors(to: &w, zeros: l.qzeros) }
        for (name, values) in floats.tensors { w.add(name, .f32, [values.count], values) }
        try w.write(to: dir + "/model.safetensors.tmp")
        guard rename(dir + "/model.safetensors.tmp", dir + "/model.safetensors") == 0 else {
            throw TQError.io("\(dir): cannot rename model.safetensors into place")
        }
        try Self.writeAtomically(try JSONSerialization.data(withJSONObject: report, options: [.sortedKeys]), to: dir + "/report.json")
        let sums = try Self.checkedFiles.map { name -> [String: Any] in
            guard let bytes = FileManager.default.contents(atPath: dir + "/" + name) else { throw TQError.io("\(dir)/\(name): cannot read back") }
            return ["file": name, "bytes": bytes.count, "fnv1a64": Self.checksum(bytes)]
        }
        try Self.writeAtomically(try JSONSerialization.data(withJSONObject: sums, options: [.sortedKeys]), to: dir + "/block.sum")
    }

    static let checkedFiles = ["model.safetensors", "report.json"]

    /// FNV-1a (64-bit) of the bytes, as hex: catches the damage a crash or a bad disk leaves.
    static func checksum(_ bytes: Data) -> String {
        let h = bytes.reduce(UInt64(0xcbf2_9ce4_8422_2325)) { ($0 ^ UInt64($1)) &* 0x100_0000_01b3 }
        return String(h, radix: 16)
    }

    /// True when `dir/block.sum` lists every checked file with its present size and checksum.
    static func verify(_ dir: String) -> Bool {
        guard let data = FileManager.default.contents(atPath: dir + "/block.sum"),
              let sums = (try? JSONSerialization.jsonObject(with: data)) as? [[String: Any]] else { return false }
        let expected = Dictionary(uniqueKeysWithValues: sums.compactMap { e -> (String, (Int, String))? in
            guard let f = e["file"] as? String, let n = e["bytes"] as? Int, let h = e["fnv1a64"] as? String else { return nil }
            return (f, (n, h))
        })
        return checkedFiles.allSatisfy { name in
            guard let (n, h) = expected[name], let bytes = FileManager.default.contents(atPath: dir + "/" + name) else { return false }
            return bytes.count == n && checksum(bytes) == h
        }
    }

    static func writeAtomically(_ data: Data, to path: String) throws {
        guard FileManager.default.createFile(atPath: path + ".tmp", contents: data), rename(path + ".tmp", path) == 0 else {
            throw TQError.io("\(path): cannot write")
        }
    }
}
