import Foundation

public struct PerplexityResult: Sendable {
    public let perplexity: Double
    /// Predicted positions (windows x (seq_len - 1)).
    public let tokens: Int
    public let windows: Int
    public let seconds: Double
}

/// WikiText-2 perplexity, GPTQ style (ALGORITHM.md section 5): floor(n / seqLen)
/// non-overlapping windows, at most `maxWindows` of them (0 = all), each run from position 0,
/// mean next-token NLL over every predicted position, exp of the mean.
public func evaluatePerplexity(model: LlamaModel, tokens: UnsafeBufferPointer<UInt32>, seqLen: Int,
                               maxWindows: Int = 0, progress: ProgressHandler? = nil) throws -> PerplexityResult {
    guard seqLen >= 2 else { throw TQError.invalid("seq_len must be at least 2 (got \(seqLen))") }
    guard seqLen <= model.config.maxPositions else {
        throw TQError.invalid("seq_len \(seqLen) exceeds the model's context (max_position_embeddings \(model.config.maxPositions))")
    }
    guard maxWindows >= 0 else { throw TQError.invalid("max_windows must be >= 0 (got \(maxWindows))") }
    var windows = tokens.count / seqLen
    guard windows > 0 else { throw TQError.invalid("\(tokens.count) tokens make no window of \(seqLen)") }
    if maxWindows > 0 { windows = min(windows, maxWindows) }
    try model.validate(tokens: UnsafeBufferPointer(rebasing: tokens[0..<(windows * seqLen)]))
    let start = Date()
    var nll = 0.0
    try checkProgress(progress, 0, windows)
    for w in 0..<windows {
        nll += try Runtime.checkingAllocations("perplexity window \(w)") {
            try model.nextTokenNLL(UnsafeBufferPointer(rebasing: tokens[(w * seqLen)..<((w + 1) * seqLen)]))
        }
        try checkProgress(progress, w + 1, windows)
    }
    let count = windows * (seqLen - 1)
    guard nll.isFinite else { throw TQError(.numeric, "the negative log-likelihood is not finite") }
    return PerplexityResult(perplexity: exp(nll / Double(count)), tokens: count, windows: windows,
                            seconds: Date().timeIntervalSince(start))
}

/// Reads a little-endian uint32 token file.
public func readTokenFile(_ path: String) throws -> [UInt32] {
    guard let data = readWholeFile(path) else { throw TQError.io("\(path): cannot read") }
    guard data.count % 4 == 0 else { throw TQError.format("\(path): size \(data.count) is not a multiple of 4 (uint32 tokens)") }
    return data.withUnsafeBytes { raw in (0..<(data.count / 4)).map { UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self)) } }
}
