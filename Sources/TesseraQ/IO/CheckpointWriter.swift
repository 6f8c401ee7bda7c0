import Foundation
import TQKernels

/// Writes a quantized model as a GPTQ checkpoint directory (FORMATS.md): config.json with
/// quantization_config, model.safetensors with the packed linears and every other tensor in
/// the input's dtype, the tokenizer files copied. The directory is assembled under a temporary
/// name and renamed into place, so an interrupted run never leaves a readable half-checkpoint.
public struct CheckpointWriter {
    /// The packed linears of a checkpoint, loaded a block at a time while it is written, so the
    /// writer never holds them all (a calibrated run's finished blocks are on disk).
    public struct PackedBlocks {
        public let count: Int
        public let load: (Int) throws -> [PackedLinear]

        public init(count: Int, load: @escaping (Int) throws -> [PackedLinear]) {
            self.count = count
            self.load = load
        }

        /// Linears held in memory, as one block.
        public init(_ linears: [PackedLinear]) { self.init(count: 1) { _ in linears } }
    }

    public static let copiedFiles = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                     "tokenizer.model", "tok512.bin", "generation_config.json", "vocab.json", "merges.txt"]

    public let model: LlamaModel
    public let quantization: GPTQConfig
    /// Extra keys written under config.json's "tesseraq" key (merged with the input's).
    public var extraConfig: [String: Any] = [:]
    /// Float tensors whose values a method may have changed (AWQ's folded norms and biases), by
    /// name; written in the input tensor's dtype. Every name must be a tensor of the input.
    public var floatOverrides: [String: [Float]] = [:]
    /// Further files written into the checkpoint (name -> contents), e.g. the run report.
    public var extraFiles: [String: Data] = [:]

    public init(model: LlamaModel, quantization: GPTQConfig) {
        self.model = model
        self.quantization = quantization
    }

    /// Writes the checkpoint to `outDir` through `staging` (created here, renamed at the end).
    /// `linears` are the seven per block; a model that fuses some (Phi-3) gets them fused back.
    public func write(linears: PackedBlocks, to outDir: String, staging: String, overwrite: Bool) throws {
        let fm = FileManager.default
        if fm.fileExists(atPath: outDir) && !overwrite {
            throw TQError.invalid("\(outDir) already exists (set \"overwrite\": true to replace it)")
        }
        try? fm.createDirectory(atPath: staging, withIntermediateDirectories: true)
        guard fm.fileExists(atPath: staging) else { throw TQError.io("\(staging): cannot create directory") }

        if let stray = floatOverrides.keys.sorted().first(where: { model.store.info($0) == nil }) {
            throw TQError(.internal, "\(stray) is not a tensor of \(model.directory)")
        }
        // Every tensor is streamed in the file's order: a packed block is loaded when one of its
        // tensors is due (twice per block: its 4-byte tensors, then its f16 scales), the copied
        // tensors come straight from the input's map.
        var writer = SafeTensorsWriter()
        var replaced = Set<String>()
        let stored = StoredBlock(blocks: linears, writer: self)
        for b in 0..<linears.count {
            let block = try stored.block(b)
            for e in block.entries {
                writer.add(e.name, e.dtype, e.shape) { try $0.write(contentsOf: try stored.data(b, e.name)) }
            }
            replaced.formUnion(block.linearNames.map { $0 + ".weight" })
        }
        for name in model.store.names where !replaced.contains(name) {
            let (file, info) = try model.store.require(name)
            if let values = floatOverrides[name] {
                writer.add(name, info.dtype, info.shape, try encodeFloats(values, as: info.dtype, name: name))
            } else {
                writer.add(name, info.dtype, info.shape) { try file.write(info, to: $0) }
            }
        }
        try writer.write(to: staging + "/model.safetensors", crashPoint: .checkpointWrite)

        let configPath = model.directory + "/config.json"
        guard let data = fm.contents(atPath: configPath),
              var config = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw TQError.io("\(configPath): cannot read")
        }
        config["quantization_config"] = quantization.json
        // Merged: a rotated input already records its rotation there.
        if !extraConfig.isEmpty { config["tesseraq"] = (config["tesseraq"] as? [String: Any] ?? [:]).merging(extraConfig) { $1 } }
        let out = try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys])
        guard fm.createFile(atPath: staging + "/config.json", contents: out) else {
            throw TQError.io("\(staging)/config.json: cannot write")
        }
        for f in Self.copiedFiles where fm.fileExists(atPath: model.directory + "/" + f) {
            try? fm.removeItem(atPath: staging + "/" + f)
            do { try fm.copyItem(atPath: model.directory + "/" + f, toPath: staging + "/" + f) } catch {
                throw TQError.io("\(staging)/\(f): cannot copy (\(error))")
            }
        }
        for (name, contents) in extraFiles {
            guard fm.createFile(atPath: staging + "/" + name, contents: contents) else {
                throw TQError.io("\(staging)/\(name): cannot write")
            }
        }
        // What else the staging directory holds (a resumable run's blocks) goes before the rename,
        // so the checkpoint never appears with it. A kill between this and the rename costs a
        // recomputation, never a wrong or littered result.
        let written = Set(["model.safetensors", "config.json"] + Self.copiedFiles + extraFiles.keys)
        for entry in (try? fm.contentsOfDirectory(atPath: staging)) ?? [] where !written.contains(entry) {
            try? fm.removeItem(atPath: staging + "/" + entry)
        }
        CrashPoint.checkpointRename.reach()
        try Self.moveIntoPlace(staging, outDir)
    }

    private func encodeFloats(_ v: [Float], as dtype: DType, name: String) throws -> Data {
        switch dtype {
        case .f32: return v.withUnsafeBytes { Data($0) }
        case .f16, .bf16:
            var h = [UInt16](repeating: 0, count: v.count)
            if dtype == .f16 { tqk_f32_to_f16(v, &h, Int64(v.count)) } else { tqk_f32_to_bf16(v, &h, Int64(v.count)) }
            return h.withUnsafeBytes { Data($0) }
        default: throw TQError.unsupported("\(name): cannot write dtype \(dtype.rawValue)")
        }
    }

    /// The tensors of one block as stored (fused where the model fuses, v1 zeros where asked), the
    /// last block asked for kept.
    private final class StoredBlock {
        struct Tensors {
            let index: Int
            let linearNames: [String]
            let entries: [SafeTensorsWriter.Entry]
            let data: [String: Data]
        }

        let blocks: PackedBlocks
        let writer: CheckpointWriter
        private var last: Tensors?

        init(blocks: PackedBlocks, writer: CheckpointWriter) {
            self.blocks = blocks
            self.writer = writer
        }

        func block(_ b: Int) throws -> Tensors {
            if let last, last.index == b { return last }
            last = nil   // one block resident at a time
            let linears = try PackedLinear.asStored(try blocks.load(b), config: writer.model.config)
            var w = SafeTensorsWriter()
            for l in linears {
                l.addTensors(to: &w, zeros: writer.quantization.checkpointFormat == "gptq" ? try writer.v1Zeros(l) : l.qzeros)
            }
            let tensors = Tensors(index: b, linearNames: linears.map(\.name), entries: w.entries,
                                  data: Dictionary(uniqueKeysWithValues: w.entries.compactMap { e in e.data.map { (e.name, $0) } }))
            last = tensors
            return tensors
        }

        func data(_ b: Int, _ name: String) throws -> Data {
            guard let data = try block(b).data[name] else { throw TQError(.internal, "block \(b) holds no tensor \(name)") }
            return data
        }
    }

    /// v1 stores zero - 1, so a zero point of 0 has no representation: refuse rather than corrupt.
    fileprivate func v1Zeros(_ l: PackedLinear) throws -> [UInt32] {
        let z = l.unpackZeros()
        let bad = z.filter { $0 == 0 }.count
        guard bad == 0 else {
            throw TQError.unsupported("format gptq (v1) cannot store a zero point of 0: \(l.name) has \(bad) such groups; use the default gptq_v2")
        }
        return PackedLinear.packZeros(z.map { $0 - 1 }, nGroups: l.nGroups, out: l.out, bits: l.bits)
    }

    /// Renames `staging` to `outDir`, replacing an existing directory only after the new one is complete.
    static func moveIntoPlace(_ staging: String, _ outDir: String) throws {
        let fm = FileManager.default
        let old = outDir + ".old-\(getpid())"
        let hadOld = fm.fileExists(atPath: outDir)
        if hadOld { guard rename(outDir, old) == 0 else { throw TQError.io("\(outDir): cannot move aside") } }
        guard rename(staging, outDir) == 0 else {
            if hadOld { _ = rename(old, outDir) }
            throw TQError.io("\(outDir): cannot rename \(staging) into place")
        }
        if hadOld { try? fm.removeItem(atPath: old) }
    }
}
