//! Decoding sessions: run a model token by token with a KV cache
//! A tq_session runs one sequence over a tq_model (float or packed): tq_session_prefill feeds a
//! prompt, tq_session_decode one token at a time, each giving logits. Its KV cache (keys after RoPE,
//! and values, in float32: 2 x layers x max_tokens x kv_heads x head_dim x 4 bytes) is allocated
//! once by tq_session_open; a call that would go past max_tokens is refused and writes nothing.
//! Packed linears stay packed (packed GEMV per token, packed GEMM for prompts); a float model's
//! linears are converted to float32 once per session. The session keeps its model alive: the
//! model may be freed with tq_model_free before the session, which goes on working.
//! Thread safety: one session per thread (calls on one session are serialised by a lock, but
//! interleaved calls from several threads make its position meaningless); many sessions may run
//! concurrently over one tq_model.
import Foundation
import TesseraQ

/// A session plus the lock that serialises calls on it.
final class SessionHandle: HandleObject, @unchecked Sendable {
    static let handleKind = HandleKind.session

    let session: DecodingSession
    private let lock = NSLock()

    init(_ session: DecodingSession) { self.session = session }

    func withSession<R>(_ body: (DecodingSession) throws -> R) rethrows -> R {
        try lock.withLock { try body(session) }
    }
}

/// The body of a call on a session: checks the handle, then runs `body` under the session's lock.
private func onSession(_ session: TQSessionHandle?, _ body: (DecodingSession) throws -> Void) -> Int32 {
    guarded {
        try borrowHandle(session, "session", as: SessionHandle.self).withSession(body)
    }
}

/// The tokens of a call as a buffer, after the NULL and count checks.
private func tokenBuffer(_ tokens: UnsafePointer<UInt32>?, _ n: Int64) throws -> UnsafeBufferPointer<UInt32> {
    let t = try required(tokens, "tokens")
    guard n > 0 else { throw invalid("n must be positive (got \(n))") }
    return UnsafeBufferPointer(start: t, count: Int(n))
}

/// Opens a session over `model` with a KV cache for max_tokens positions (1 ... the model's
/// max_position_embeddings); free with tq_session_free.
@c public func tq_session_open(_ model: TQModelHandle?, _ max_tokens: Int64,
                               _ session: UnsafeMutablePointer<TQSessionHandle?>?) -> Int32 {
    createHandle(session, "session") {
        let m = try borrowHandle(model, "model", as: LlamaModel.self)
        return SessionHandle(try DecodingSession(model: m, capacity: Int(clamping: max_tokens)))
    }
}

/// Frees a session and its KV cache; NULL is accepted.
@c public func tq_session_free(_ session: TQSessionHandle?) {
    releaseHandle(session, as: SessionHandle.self)
}

/// Runs n tokens at the session's next positions; logits_out receives the last position's logits
/// (vocab floats). Refused (nothing written, position unchanged) when a token is outside the
/// vocabulary or the tokens do not fit in the remaining positions.
@c public func tq_session_prefill(_ session: TQSessionHandle?, _ tokens: UnsafePointer<UInt32>?, _ n: Int64,
                                  _ logits_out: UnsafeMutablePointer<Float>?) -> Int32 {
    onSession(session) { s in
        let t = try tokenBuffer(tokens, n), out = try required(logits_out, "logits_out")
        try s.prefill(t, into: out)
    }
}

/// As tq_session_prefill, with every position's logits: logits_out receives n x vocab floats.
@c public func tq_session_prefill_all(_ session: TQSessionHandle?, _ tokens: UnsafePointer<UInt32>?, _ n: Int64,
                                      _ logits_out: UnsafeMutablePointer<Float>?) -> Int32 {
    onSession(session) { s in
        let t = try tokenBuffer(tokens, n), out = try required(logits_out, "logits_out")
        try s.prefill(t, allLogits: true, into: out)
    }
}

/// Runs one token at the next position; logits_out receives its vocab logits.
@c public func tq_session_decode(_ session: TQSessionHandle?, _ token: UInt32,
                                 _ logits_out: UnsafeMutablePointer<Float>?) -> Int32 {
    onSession(session) { try $0.decode(token, into: try required(logits_out, "logits_out")) }
}

/// Keeps the first n_keep positions (0 ... the current position); the next calls continue from there.
@c public func tq_session_rewind(_ session: TQSessionHandle?, _ n_keep: Int64) -> Int32 {
    onSession(session) { try $0.rewind(to: Int(clamping: n_keep)) }
}

/// Empties the session (tq_session_rewind to 0).
@c public func tq_session_reset(_ session: TQSessionHandle?) -> Int32 {
    onSession(session) { try $0.rewind(to: 0) }
}

/// The number of positions filled so far (the next token's position).
@c public func tq_session_position(_ session: TQSessionHandle?, _ position: UnsafeMutablePointer<Int64>?) -> Int32 {
    onSession(session) { try required(position, "position").pointee = Int64($0.position) }
}

/// The number of positions the KV cache holds (max_tokens at open).
@c public func tq_session_capacity(_ session: TQSessionHandle?, _ capacity: UnsafeMutablePointer<Int64>?) -> Int32 {
    onSession(session) { try required(capacity, "capacity").pointee = Int64($0.capacity) }
}

/// Resident bytes the session runs on: its KV cache, and the weights (block linears packed or
/// float32, norms, embeddings, LM head). Either pointer may be NULL.
@c public func tq_session_memory(_ session: TQSessionHandle?, _ kv_bytes: UnsafeMutablePointer<Int64>?,
                                 _ weight_bytes: UnsafeMutablePointer<Int64>?) -> Int32 {
    onSession(session) { s in
        kv_bytes?.pointee = Int64(s.kvCacheBytes)
        weight_bytes?.pointee = Int64(s.weightBytes)
    }
}
