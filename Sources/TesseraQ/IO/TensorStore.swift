import Foundation

/// All tensors of a checkpoint directory: `model.safetensors`, or the shards that
/// `model.safetensors.index.json` names. Lookups go to the shard that holds the name.
public final class TensorStore: @unchecked Sendable {
    public let directory: String
    public let files: [SafeTensorsFile]
    private let index: [String: (file: SafeTensorsFile, info: TensorInfo)]

    public init(directory: String) throws {
        self.directory = directory
        let single = directory + "/model.safetensors"
        let indexPath = directory + "/model.safetensors.index.json"
        let fm = FileManager.default
        var files: [SafeTensorsFile] = []
        var index: [String: (file: SafeTensorsFile, info: TensorInfo)] = [:]
        if fm.fileExists(atPath: single) {
            files = [try SafeTensorsFile(path: single)]
        } else if fm.fileExists(atPath: indexPath) {
            let json = try JSONValue.parseFile(indexPath)
            guard let map = json["weight_map"]?.object else {
                throw TQError.format("\(indexPath): no weight_map object")
            }
            var shardNames: [String] = []
            for (tensor, shard) in map {
                guard let s = shard.string, !s.contains("/") else {
                    throw TQError.format("\(indexPath): weight_map entry \(tensor) is not a file name in the directory")
                }
                if !shardNames.contains(s) { shardNames.append(s) }
            }
            files = try shardNames.sorted().map { try SafeTensorsFile(path: directory + "/" + $0) }
            for (tensor, shard) in map {
                let file = files.first { $0.path.hasSuffix("/" + shard.string!) }!
                guard let info = file.tensors[tensor] else {
                    throw TQError.format("\(file.path): tensor \(tensor), named by the index, is missing")
                }
                index[tensor] = (file, info)
            }
        } else {
            throw TQError.io("\(directory): neither model.safetensors nor model.safetensors.index.json exists")
        }
        for f in files {
            for (name, info) in f.tensors where index[name] == nil { index[name] = (f, info) }
        }
        self.files = files
        self.index = index
    }

    public var names: [String] { index.keys.sorted() }

    public func info(_ name: String) -> TensorInfo? { index[name]?.info }

    /// The tensor or an error naming the directory and the tensor.
    public func require(_ name: String) throws -> (file: SafeTensorsFile, info: TensorInfo) {
        guard let e = index[name] else { throw TQError.format("\(directory): missing tensor \(name)") }
        return e
    }

    /// Checks a tensor's shape (and that it is a float tensor) without reading data.
    public func requireFloat(_ name: String, shape: [Int]) throws {
        let (file, info) = try require(name)
        guard info.dtype.isFloat else {
            throw TQError.unsupported("\(file.path): tensor \(name) has dtype \(info.dtype.rawValue); expected F32, F16 or BF16")
        }
        guard info.shape == shape else {
            throw TQError.format("\(file.path): tensor \(name) has shape \(info.shape) but config.json implies \(shape)")
        }
    }

    /// The tensor converted to float32, read straight into a buffer (no intermediate array: large
    /// tensors such as embeddings are not held twice while loading).
    public func floatBuffer(_ name: String) throws -> FloatBuffer {
        let (file, info) = try require(name)
        let out = try FloatBuffer(count: info.count)
        try file.readFloats(info, into: out.p)
        return out
    }

    /// The tensor converted to float32.
    public func floats(_ name: String) throws -> [Float] {
        let (file, info) = try require(name)
        var out = [Float](repeating: 0, count: info.count)
        try out.withUnsafeMutableBufferPointer { try file.readFloats(info, into: $0.baseAddress!) }
        return out
    }
}
