import Foundation

/// Writes a safetensors file. Tensors are laid out 4-byte ones first so every tensor starts
/// 4-byte aligned (the format allows no gaps), after a header padded to a multiple of 8.
/// A tensor is given as bytes or as a stream that writes them when its turn comes, so a
/// checkpoint larger than memory is written without being held whole.
public struct SafeTensorsWriter {
    public struct Entry {
        public let name: String
        public let dtype: DType
        public let shape: [Int]
        public var bytes: Int { shape.reduce(dtype.size, *) }
        let source: Source
        /// The bytes, when given as bytes.
        var data: Data? { if case .data(let d) = source { d } else { nil } }
    }

    enum Source {
        case data(Data)
        /// Writes exactly the entry's bytes through the handle (checked).
        case stream((FileHandle) throws -> Void)
    }

    public private(set) var entries: [Entry] = []
    public var metadata: [String: String] = ["format": "pt"]

    public init() {}

    public mutating func add(_ name: String, _ dtype: DType, _ shape: [Int], _ data: Data) {
        precondition(shape.reduce(dtype.size, *) == data.count, "\(name): shape does not match byte count")
        entries.append(Entry(name: name, dtype: dtype, shape: shape, source: .data(data)))
    }

    /// A tensor whose bytes `write` puts through the handle when the file is written.
    mutating func add(_ name: String, _ dtype: DType, _ shape: [Int], stream write: @escaping (FileHandle) throws -> Void) {
        entries.append(Entry(name: name, dtype: dtype, shape: shape, source: .stream(write)))
    }

    public mutating func add<T>(_ name: String, _ dtype: DType, _ shape: [Int], _ values: [T]) {
        add(name, dtype, shape, values.withUnsafeBytes { Data($0) })
    }

    /// Writes the file at `path` (the caller renames a temporary file into place).
    public func write(to path: String) throws { try write(to: path, crashPoint: nil) }

    /// `crashPoint` is reached halfway through the tensor data (see CrashPoint).
    func write(to path: String, crashPoint: CrashPoint?) throws {
        let ordered = entries.sorted { ($1.dtype.size, $0.name) < ($0.dtype.size, $1.name) }
        var header: [String: Any] = ["__metadata__": metadata]
        var offset = 0
        for e in ordered {
            header[e.name] = ["dtype": e.dtype.rawValue, "shape": e.shape, "data_offsets": [offset, offset + e.bytes]]
            offset += e.bytes
        }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while (json.count + 8) % 8 != 0 { json.append(0x20) }
        guard FileManager.default.createFile(atPath: path, contents: nil),
              let fh = FileHandle(forWritingAtPath: path) else {
            throw TQError.io("\(path): cannot create")
        }
        defer { try? fh.close() }
        do {
            var len = UInt64(json.count).littleEndian
            try fh.write(contentsOf: Data(bytes: &len, count: 8))
            try fh.write(contentsOf: json)
            for (i, e) in ordered.enumerated() {
                if i == ordered.count / 2, crashPoint != nil {
                    try fh.synchronize()
                    crashPoint?.reach()
                }
                switch e.source {
                case .data(let d): try fh.write(contentsOf: d)
                case .stream(let write):
                    let before = try fh.offset()
                    try write(fh)
                    guard try fh.offset() - before == UInt64(e.bytes) else {
                        throw TQError(.internal, "\(path): tensor \(e.name) was streamed with the wrong number of bytes")
                    }
                }
            }
            try fh.synchronize()
        } catch let error as TQError {
            throw error
        } catch {
            throw TQError.io("\(path): write failed (\(error))")
        }
    }
}
