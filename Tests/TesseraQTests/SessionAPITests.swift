import Foundation
import Testing
@testable import TesseraQ
import TesseraQC

/// The session and sampler C functions: results as the Swift core's, each bad input a status and
/// a message, nothing written to the cache by a refused call.
@Suite struct SessionAPITests {
    static let invalid = TQError.Kind.invalidArgument.rawValue

    /// `status` is TQ_ERR_INVALID_ARGUMENT and the thread's message contains `text`.
    static func expectInvalid(_ status: Int32, _ text: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(status == invalid, sourceLocation: sourceLocation)
        let message = String(cString: tq_last_error())
        #expect(message.contains(text), "\(message)", sourceLocation: sourceLocation)
    }

    @Test func sessionOverTheCABI() throws {
        var model: OpaquePointer?
        #expect(tq_model_open(Fixtures.model("stories260K"), &model) == 0)
        var vocab: Int64 = 0
        #expect(tq_model_info(model, &vocab, nil, nil, nil, nil, nil, nil, nil) == 0)
        let V = Int(vocab), prompt: [UInt32] = [1, 403, 407, 261, 378]
        var full = [Float](repeating: 0, count: (prompt.count + 1) * V)
        #expect(tq_model_logits(model, prompt + [400], Int64(prompt.count + 1), &full) == 0)

        var session: OpaquePointer?
        Self.expectInvalid(tq_session_open(model, 0, &session), "max_tokens must be in [1, 512]")
        #expect(session == nil)
        Self.expectInvalid(tq_session_open(model, 513, &session), "max_tokens")
        #expect(tq_session_open(model, 8, &session) == 0)
        defer { tq_session_free(session) }
        // The session keeps the model alive.
        tq_model_free(model)
        var capacity: Int64 = 0, position: Int64 = -1, kv: Int64 = 0, weights: Int64 = 0
        #expect(tq_session_capacity(session, &capacity) == 0 && capacity == 8)
        #expect(tq_session_memory(session, &kv, &weights) == 0 && kv == 2 * 5 * 8 * 32 * 4 && weights > 0)
        #expect(tq_session_memory(session, nil, nil) == 0)

        var row = [Float](repeating: 0, count: V)
        Self.expectInvalid(tq_session_prefill(session, [1, 512], 2, &row), "token 512 at position 1 is outside the vocabulary (512)")
        Self.expectInvalid(tq_session_prefill(session, prompt, 0, &row), "n must be positive")
        Self.expectInvalid(tq_session_prefill(session, prompt, 9, &row), "9 tokens do not fit")
        Self.expectInvalid(tq_session_prefill(session, prompt, 5, nil), "logits_out is NULL")
        Self.expectInvalid(tq_session_prefill(session, nil, 5, &row), "tokens is NULL")
        Self.expectInvalid(tq_session_decode(session, 600, &row), "outside the vocabulary")
        Self.expectInvalid(tq_session_decode(session, 3, nil), "logits_out is NULL")
        Self.expectInvalid(tq_session_rewind(session, 1), "n_keep must be in [0, 0]")
        #expect(tq_session_position(session, &position) == 0 && position == 0)

        var all = [Float](repeating: 0, count: prompt.count * V)
        #expect(tq_session_prefill_all(session, prompt, Int64(prompt.count), &all) == 0)
        #expect(String(cString: tq_last_error()) == "")
        for t in 0..<prompt.count {
            #expect(DecodingSessionTests.relativeError(all[(t * V)..<((t + 1) * V)], full[(t * V)..<((t + 1) * V)]) <= 1e-4)
        }
        #expect(tq_session_decode(session, 400, &row) == 0)
        let last = prompt.count * V
        #expect(DecodingSessionTests.relativeError(row[...], full[last..<(last + V)]) <= 1e-4)
        // Rewind then the same decode: the same logits; reset then prefill: the same as the first time.
        #expect(tq_session_rewind(session, Int64(prompt.count)) == 0)
        var again = row
        #expect(tq_session_decode(session, 400, &again) == 0 && again == row)
        Self.expectInvalid(tq_session_prefill(session, prompt, 3, &row), "3 tokens do not fit: the session holds 6 of 8")
        #expect(tq_session_reset(session) == 0)
        #expect(tq_session_prefill(session, prompt, Int64(prompt.count), &row) == 0)
        // The last row alone goes through the GEMV, all rows through the GEMM: equal up to rounding.
        #expect(DecodingSessionTests.relativeError(row[...], all[((prompt.count - 1) * V)...]) <= 1e-5)

        // Wrong handles.
        var sampler: OpaquePointer?
        #expect(tq_sampler_open(0, 0, 1, 1, 0, &sampler) == 0)
        defer { tq_sampler_free(sampler) }
        Self.expectInvalid(tq_session_decode(sampler, 1, &row), "session is a tq_sampler handle where a tq_session handle is expected")
        Self.expectInvalid(tq_session_position(nil, &position), "session is NULL")
    }

    @Test func samplerOverTheCABI() {
        var sampler: OpaquePointer?
        Self.expectInvalid(tq_sampler_open(1, 0, 0, 1, 0, &sampler), "top_p must be in (0, 1]")
        Self.expectInvalid(tq_sampler_open(1, 0, 1, -1, 0, &sampler), "repetition_penalty must be positive")
        Self.expectInvalid(tq_sampler_open(.infinity, 0, 1, 1, 0, &sampler), "temperature must be finite")
        #expect(sampler == nil)
        #expect(tq_sampler_open(0, 0, 1, 2, 0, &sampler) == 0)
        defer { tq_sampler_free(sampler) }
        var token: UInt32 = 99
        let logits: [Float] = [1, 3, 2]
        Self.expectInvalid(tq_sampler_sample(sampler, nil, 3, &token), "logits is NULL")
        Self.expectInvalid(tq_sampler_sample(sampler, logits, 0, &token), "vocab must be positive")
        Self.expectInvalid(tq_sampler_sample(sampler, logits, 3, nil), "token is NULL")
        #expect(tq_sampler_sample(sampler, logits, 3, &token) == 0 && token == 1)
        // Token 1 was accepted: penalised to 1.5, token 2 wins.
        #expect(tq_sampler_sample(sampler, logits, 3, &token) == 0 && token == 2)
        #expect(tq_sampler_reset(sampler) == 0)
        #expect(tq_sampler_accept(sampler, 1) == 0)
        #expect(tq_sampler_sample(sampler, logits, 3, &token) == 0 && token == 2)
        #expect(tq_sampler_sample(sampler, [1, .nan], 2, &token) == TQError.Kind.numeric.rawValue)
        tq_sampler_free(nil)
        tq_session_free(nil)
    }
}
