import Foundation

/// Token files: little-endian uint32 ids, no header (`tesseraq eval --tokens`, `calib_tokens`).
public enum TokenFile {
    /// Reads a token file.
    public static func read(_ path: String) throws -> [UInt32] { try readTokenFile(path) }

    /// Writes `ids` as a token file, replacing `path`.
    public static func write(_ ids: [UInt32], to path: String) throws {
        let data = ids.map { $0.littleEndian }.withUnsafeBytes { Data($0) }
        do { try data.write(to: URL(fileURLWithPath: path), options: .atomic) } catch {
            throw TQError.io("\(path): cannot write (\(error.localizedDescription))")
        }
    }

    /// The ids of a UTF-8 text file encoded as one string (as `tokenizers` would encode the
    /// file's whole content) with the tokenizer at `tokenizerPath`: a tokenizer.json, or a
    /// directory holding one such as the model's.
    public static func encodeText(_ textPath: String, tokenizerPath: String, addSpecialTokens: Bool = true) throws -> [UInt32] {
        try Tokenizer(path: tokenizerPath).encode(file: textPath, addSpecialTokens: addSpecialTokens)
    }
}
