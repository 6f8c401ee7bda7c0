//! Text generation: chat prompts, stop tokens, streamed text
//! What an engine's loop around tq_session and tq_sampler needs besides them, the code `tesseraq
//! generate` and the Python bindings run. tq_chat_prompt wraps a prompt as one user turn of the
//! model's ChatML chat template; tq_stop_tokens lists the ids generation stops at; a tq_text_stream
//! turns generated ids into text pieces that hold only whole UTF-8 characters and join to the text
//! of all the ids, each step decoding a few tokens rather than all of them. Thread safety: the
//! functions without a handle may run on any thread; a text stream per thread (calls on one stream
//! are serialised by a lock).
import Foundation
import TesseraQ

/// A text stream, the last piece it handed out (NUL-terminated, in memory the handle owns until the
/// next call on the stream) and the lock that serialises calls on it.
final class TextStreamHandle: HandleObject, @unchecked Sendable {
    static let handleKind = HandleKind.textStream

    var stream: TextStream
    private var piece = UnsafeMutablePointer<CChar>.allocate(capacity: 1)
    let lock = NSLock()

    init(_ tokenizer: Tokenizer) { stream = TextStream(tokenizer: tokenizer) }

    deinit { piece.deallocate() }

    /// `text` copied (NUL bytes inside included) into the piece buffer, which it returns with its length.
    func keep(_ text: String) -> (UnsafePointer<CChar>, Int) {
        let bytes = Array(text.utf8)
        piece.deallocate()
        piece = .allocate(capacity: bytes.count + 1)
        for (i, b) in bytes.enumerated() { piece[i] = CChar(bitPattern: b) }
        piece[bytes.count] = 0
        return (UnsafePointer(piece), bytes.count)
    }
}

/// The body of tq_text_stream_push / _finish: `next` gives the new piece (nil: none yet), which is
/// kept in the handle and returned through `piece` and `n_bytes`.
private func onTextStream(_ stream: TQTextStreamHandle?, _ piece: UnsafeMutablePointer<UnsafePointer<CChar>?>?,
                          _ n_bytes: UnsafeMutablePointer<Int64>?, _ next: (inout TextStream) -> String?) -> Int32 {
    guarded {
        let h = try borrowHandle(stream, "stream", as: TextStreamHandle.self)
        let out = try required(piece, "piece"), count = try required(n_bytes, "n_bytes")
        h.lock.withLock {
            let (p, n) = h.keep(next(&h.stream) ?? "")
            out.pointee = p
            count.pointee = Int64(n)
        }
    }
}

/// Opens a text stream over a tokenizer (which it keeps alive); free with tq_text_stream_free.
@c public func tq_text_stream_open(_ tok: TQTokenizerHandle?, _ stream: UnsafeMutablePointer<TQTextStreamHandle?>?) -> Int32 {
    createHandle(stream, "stream") { TextStreamHandle(try borrowHandle(tok, "tok", as: TokenizerHandle.self).tokenizer) }
}

/// Frees a text stream; NULL is accepted.
@c public func tq_text_stream_free(_ stream: TQTextStreamHandle?) {
    releaseHandle(stream, as: TextStreamHandle.self)
}

/// Adds one generated id. `*piece` receives the new text it completes (UTF-8, NUL-terminated,
/// `*n_bytes` long; "" while the text ends in an incomplete character or in a run of ByteFallback
/// byte tokens, which a later byte can still turn into U+FFFDs, or when the id adds none), valid
/// until the next call on this stream. Special tokens decode to nothing, as in tq_detokenize.
@c public func tq_text_stream_push(_ stream: TQTextStreamHandle?, _ token: UInt32,
                                   _ piece: UnsafeMutablePointer<UnsafePointer<CChar>?>?,
                                   _ n_bytes: UnsafeMutablePointer<Int64>?) -> Int32 {
    onTextStream(stream, piece, n_bytes) { $0.push(token) }
}

/// The text still held back (an incomplete character at the end, decoded as U+FFFD), as
/// tq_text_stream_push returns pieces; call once after the last id. The pieces of all calls join to
/// tq_detokenize of all the ids.
@c public func tq_text_stream_finish(_ stream: TQTextStreamHandle?, _ piece: UnsafeMutablePointer<UnsafePointer<CChar>?>?,
                                     _ n_bytes: UnsafeMutablePointer<Int64>?) -> Int32 {
    onTextStream(stream, piece, n_bytes) { $0.finish() }
}

/// `prompt` as one user turn of the chat template in `model_dir`/tokenizer_config.json, which must
/// be ChatML-shaped (it holds <|im_start|>: SmolLM2, Qwen2), with the system message the template
/// hard-codes, if any; other templates give TQ_ERR_UNSUPPORTED (no general Jinja engine). The text
/// comes back under tq_detokenize's capacity convention.
@c public func tq_chat_prompt(_ model_dir: UnsafePointer<CChar>?, _ prompt: UnsafePointer<CChar>?,
                              _ text_out: UnsafeMutablePointer<CChar>?, _ capacity: Int64,
                              _ n_bytes: UnsafeMutablePointer<Int64>?) -> Int32 {
    guarded {
        let dir = String(cString: try required(model_dir, "model_dir")), text = String(cString: try required(prompt, "prompt"))
        let count = try required(n_bytes, "n_bytes")
        count.pointee = 0
        try writeText(try Generation.chatPrompt(directory: dir, prompt: text), text_out, capacity, count)
    }
}

/// The ids generation stops at: `model_dir`/config.json's eos_token_id (one id or a list), and with
/// `chat` non-zero also the tokenizer's <|im_end|>. `*count` always receives how many; with
/// `ids_out` NULL nothing else is written, and a `capacity` below the count fails with
/// TQ_ERR_INVALID_ARGUMENT.
@c public func tq_stop_tokens(_ model_dir: UnsafePointer<CChar>?, _ tok: TQTokenizerHandle?, _ chat: Int32,
                              _ ids_out: UnsafeMutablePointer<UInt32>?, _ capacity: Int64,
                              _ count: UnsafeMutablePointer<Int64>?) -> Int32 {
    guarded {
        let dir = String(cString: try required(model_dir, "model_dir"))
        let tokenizer = try borrowHandle(tok, "tok", as: TokenizerHandle.self).tokenizer
        let n = try required(count, "count")
        n.pointee = 0
        let ids = try Generation.stopTokens(directory: dir, tokenizer: tokenizer, chat: chat != 0)
        n.pointee = Int64(ids.count)
        guard let out = ids_out else { return }
        guard capacity >= Int64(ids.count) else {
            throw invalid("ids_out holds \(capacity) ids but there are \(ids.count) (*count is set to that number)")
        }
        ids.withUnsafeBufferPointer { out.update(from: $0.baseAddress!, count: ids.count) }
    }
}
