//! Samplers: pick the next token from a logits row
//! A tq_sampler applies, in order: the repetition penalty over the tokens accepted so far (a
//! positive logit divided by the penalty, a negative one multiplied; 1 is off), then greedy argmax
//! when temperature <= 0 (lowest id on ties), otherwise logits / temperature, top-k (top_k <= 0 is
//! off), softmax, top-p (top_p >= 1 is off) and one draw from a SplitMix64 generator seeded with
//! `seed`. Ties in the ordering go to the lower id: the same seed and the same logits give the same
//! tokens, whatever the thread count. Thread safety: a sampler per thread (calls on one sampler are
//! serialised by a lock, but interleaving them changes the draws).
import Foundation
import TesseraQ

/// A sampler plus the lock that serialises calls on it.
final class SamplerHandle: HandleObject, @unchecked Sendable {
    static let handleKind = HandleKind.sampler

    let sampler: Sampler
    let lock = NSLock()

    init(_ sampler: Sampler) { self.sampler = sampler }
}

/// The body of a call on a sampler: checks the handle, then runs `body` under the sampler's lock.
private func onSampler(_ sampler: TQSamplerHandle?, _ body: (Sampler) throws -> Void) -> Int32 {
    guarded {
        let h = try borrowHandle(sampler, "sampler", as: SamplerHandle.self)
        try h.lock.withLock { try body(h.sampler) }
    }
}

/// Opens a sampler; free with tq_sampler_free. temperature must be finite, top_p in (0, 1] (above 1
/// counts as 1) and repetition_penalty positive.
@c public func tq_sampler_open(_ temperature: Float, _ top_k: Int32, _ top_p: Float, _ repetition_penalty: Float,
                               _ seed: UInt64, _ sampler: UnsafeMutablePointer<TQSamplerHandle?>?) -> Int32 {
    createHandle(sampler, "sampler") {
        SamplerHandle(try Sampler(temperature: temperature, topK: Int(top_k), topP: top_p,
                                  repetitionPenalty: repetition_penalty, seed: seed))
    }
}

/// Frees a sampler; NULL is accepted.
@c public func tq_sampler_free(_ sampler: TQSamplerHandle?) {
    releaseHandle(sampler, as: SamplerHandle.self)
}

/// Adds a token to the history the repetition penalty reads (the prompt's tokens, say).
@c public func tq_sampler_accept(_ sampler: TQSamplerHandle?, _ token: UInt32) -> Int32 {
    onSampler(sampler) { $0.accept(token) }
}

/// Picks a token from logits (vocab floats, none NaN) into *token and accepts it.
@c public func tq_sampler_sample(_ sampler: TQSamplerHandle?, _ logits: UnsafePointer<Float>?, _ vocab: Int64,
                                 _ token: UnsafeMutablePointer<UInt32>?) -> Int32 {
    onSampler(sampler) { s in
        let l = try required(logits, "logits"), out = try required(token, "token")
        guard vocab > 0 else { throw invalid("vocab must be positive (got \(vocab))") }
        out.pointee = try s.sample(UnsafeBufferPointer(start: l, count: Int(vocab)))
    }
}

/// Clears the history and restarts the generator from the seed.
@c public func tq_sampler_reset(_ sampler: TQSamplerHandle?) -> Int32 {
    onSampler(sampler) { $0.reset() }
}
