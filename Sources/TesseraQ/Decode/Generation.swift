import Foundation

/// Text generation over a session: the prompt's chat form, the end-of-text tokens, the loop.
public enum Generation {
    /// `prompt` as one user turn of the model's chat template, which must be ChatML-shaped
    /// (tokenizer_config.json's chat_template holds <|im_start|>, as SmolLM2's and Qwen2's), with the
    /// system message the template hard-codes if it has one. No general Jinja engine: other
    /// templates are refused.
    public static func chatPrompt(directory: String, prompt: String) throws -> String {
        let path = directory + "/tokenizer_config.json"
        let template = FileManager.default.fileExists(atPath: path) ? try JSONValue.parseFile(path)["chat_template"]?.string : nil
        guard let template, template.contains("<|im_start|>") else {
            throw TQError.unsupported("\(directory): the chat template is not ChatML-shaped (no <|im_start|>); "
                                      + "only ChatML templates are supported (no general Jinja engine)")
        }
        var system = ""
        // The template writes the newline either as a character or as the two characters \n.
        if let start = template.range(of: "<|im_start|>system") {
            var rest = template[start.upperBound...]
            for newline in ["\\n", "\n"] where rest.hasPrefix(newline) { rest = rest.dropFirst(newline.count) }
            if let end = rest.range(of: "<|im_end|>") { system = "<|im_start|>system\n\(rest[..<end.lowerBound])<|im_end|>\n" }
        }
        return system + "<|im_start|>user\n\(prompt)<|im_end|>\n<|im_start|>assistant\n"
    }

    /// config.json's eos_token_id (one id or a list; none when absent).
    public static func eosTokens(directory: String) throws -> [UInt32] {
        let v = try JSONValue.parseFile(directory + "/config.json")["eos_token_id"]
        let ids = v?.array ?? (v.map { [$0] } ?? [])
        return ids.compactMap { $0.int.flatMap { $0 >= 0 ? UInt32($0) : nil } }
    }

    /// The ids generation stops at: eosTokens, and in chat mode the tokenizer's <|im_end|> (the end of
    /// a ChatML turn) when it has one.
    public static func stopTokens(directory: String, tokenizer: Tokenizer, chat: Bool) throws -> [UInt32] {
        var ids = try eosTokens(directory: directory)
        if chat, let end = tokenizer.tokenID("<|im_end|>"), !ids.contains(end) { ids.append(end) }
        return ids
    }

    public enum StopReason: String { case eos, maxTokens = "max_tokens" }

    public struct Result {
        public var tokens: [UInt32] = []
        public var stop = StopReason.maxTokens
        public var promptSeconds = 0.0, generateSeconds = 0.0
    }

    /// Runs `prompt` then samples up to `maxNew` tokens (stopping before a token of `stop`),
    /// handing each new piece of text to `onPiece` as soon as it holds whole characters.
    /// `cancelled` is polled once per token; returning true stops with TQ_ERR_CANCELLED.
    public static func run(session: DecodingSession, sampler: Sampler, tokenizer: Tokenizer, prompt: [UInt32], maxNew: Int,
                           stop: Set<UInt32>, cancelled: () -> Bool = { false },
                           onPiece: (String) -> Void) throws -> Result {
        guard maxNew > 0 else { throw TQError.invalid("max_tokens must be positive (got \(maxNew))") }
        var logits = [Float](repeating: 0, count: session.model.config.vocab)
        var result = Result(), text = TextStream(tokenizer: tokenizer)
        prompt.forEach(sampler.accept)
        let t0 = Date()
        try prompt.withUnsafeBufferPointer { p in try logits.withUnsafeMutableBufferPointer { try session.prefill(p, into: $0.baseAddress!) } }
        let t1 = Date()
        result.promptSeconds = t1.timeIntervalSince(t0)
        while result.tokens.count < maxNew, session.position < session.capacity {
            if cancelled() { throw TQError(.cancelled, "cancelled") }
            let token = try logits.withUnsafeBufferPointer { try sampler.sample($0) }
            if stop.contains(token) {
                result.stop = .eos
                break
            }
            result.tokens.append(token)
            if let piece = text.push(token) { onPiece(piece) }
            if result.tokens.count < maxNew, session.position < session.capacity {
                try logits.withUnsafeMutableBufferPointer { try session.decode(token, into: $0.baseAddress!) }
            }
        }
        if let rest = text.finish() { onPiece(rest) }
        result.generateSeconds = Date().timeIntervalSince(t1)
        return result
    }
}

/// Text of a growing token list, piece by piece. A token alone loses the spaces and the UTF-8 bytes
/// it shares with its neighbours, so ids are decoded from the last handed-out piece's first token
/// (the context that fixes its spacing): the new text is what decoding ids[prefix...] adds to
/// decoding ids[prefix..<read] (the streaming detokenizer of Hugging Face's
/// text-generation-inference), so each step decodes a few tokens, not the whole list. It is held
/// back while it ends in an incomplete UTF-8 character (decoded as U+FFFD until the token with its
/// remaining bytes arrives) or in a ByteFallback run of byte tokens (which the next byte can still
/// turn into U+FFFDs), so the pieces join to the decoding of all the ids.
public struct TextStream {
    let tokenizer: Tokenizer
    public private(set) var ids: [UInt32] = []
    private var prefix = 0  // first token of the context decoded with the new ones
    private var read = 0    // tokens whose text has been handed out
    private var inByteRun = false  // the last decoded id is a ByteFallback byte
    private var readBytes: Int? = nil  // UTF-8 length of decoding ids[prefix..<read], once known

    public init(tokenizer: Tokenizer) { self.tokenizer = tokenizer }

    /// The new complete text after `id`, or nil when there is none yet.
    public mutating func push(_ id: UInt32) -> String? {
        ids.append(id)
        if let byte = tokenizer.isFallbackByte(id) { inByteRun = byte }
        return inByteRun ? nil : piece(final: false)
    }

    /// Whatever is left, incomplete characters included.
    public mutating func finish() -> String? { piece(final: true) }

    private mutating func piece(final: Bool) -> String? {
        let before = readBytes ?? tokenizer.decode(Array(ids[prefix..<read])).utf8.count
        readBytes = before
        let text = tokenizer.decode(Array(ids[prefix...]))
        guard final || !text.hasSuffix("\u{FFFD}") else { return nil }
        let bytes = Array(text.utf8)
        guard bytes.count > before else { return nil }
        prefix = read
        read = ids.count
        readBytes = nil
        return String(decoding: bytes[before...], as: UTF8.self)
    }
}
