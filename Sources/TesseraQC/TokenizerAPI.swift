//! Tokenizers: Hugging Face tokenizer.json (BPE)
//! Thread safety: every function may run concurrently on one tq_tokenizer (its cache of the last
//! result is locked), tq_tokenizer_free included: calls already running when it is freed finish
//! normally, later ones fail with TQ_ERR_INVALID_ARGUMENT.
#if canImport(Glibc)
import Glibc
#endif
import Foundation
import TesseraQ

/// A tokenizer plus the last encode's and decode's results, so the count-then-fill calling
/// pattern of tq_tokenize / tq_detokenize does the work once.
final class TokenizerHandle: HandleObject, @unchecked Sendable {
    static let handleKind = HandleKind.tokenizer

    let tokenizer: Tokenizer
    private let lock = NSLock()
    private var lastText: [UInt8] = []
    private var lastIDs: [UInt32]? = nil
    private var lastDecodeIDs: [UInt32] = []
    private var lastDecoded: String? = nil

    init(_ tokenizer: Tokenizer) { self.tokenizer = tokenizer }

    func encode(_ text: UnsafeBufferPointer<UInt8>) throws -> [UInt32] {
        lock.lock()
        if let ids = lastIDs, lastText.elementsEqual(text) {
            lock.unlock()
            return ids
        }
        lock.unlock()
        let ids = try tokenizer.encode(utf8: text)
        lock.lock()
        lastText = Array(text)
        lastIDs = ids
        lock.unlock()
        return ids
    }

    func decode(_ ids: UnsafeBufferPointer<UInt32>) -> String {
        lock.lock()
        if let text = lastDecoded, lastDecodeIDs.elementsEqual(ids) {
            lock.unlock()
            return text
        }
        lock.unlock()
        let text = tokenizer.decode(Array(ids))
        lock.lock()
        lastDecodeIDs = Array(ids)
        lastDecoded = text
        lock.unlock()
        return text
    }
}

/// Opens a Hugging Face tokenizer: `path` is a tokenizer.json file or a directory holding one
/// (e.g. a model directory). On success `*tok` is a handle to free with tq_tokenizer_free.
/// Only BPE tokenizers are supported (GPT-2 style byte-level and SentencePiece style with byte
/// fallback); other models or components fail with TQ_ERR_UNSUPPORTED naming the component.
/// Encoding and decoding match the `tokenizers` Python package with its defaults. A handle
/// may be used from several threads.
@c public func tq_tokenizer_open(_ path: UnsafePointer<CChar>?, _ tok: UnsafeMutablePointer<TQTokenizerHandle?>?) -> Int32 {
    openHandle(path, tok, "tok") { TokenizerHandle(try Tokenizer(path: $0)) }
}

/// Frees a tokenizer handle; NULL is accepted.
@c public func tq_tokenizer_free(_ tok: TQTokenizerHandle?) {
    releaseHandle(tok, as: TokenizerHandle.self)
}

/// The vocabulary size including added tokens (`tokenizers`' get_vocab_size()).
@c public func tq_tokenizer_vocab_size(_ tok: TQTokenizerHandle?, _ size: UnsafeMutablePointer<Int64>?) -> Int32 {
    guarded {
        let h = try borrowHandle(tok, "tok", as: TokenizerHandle.self)
        try required(size, "size").pointee = Int64(h.tokenizer.vocabSize)
    }
}

/// The id of the token string `token` (NUL-terminated UTF-8; added tokens first, then the
/// vocabulary). A string that is not a token gives TQ_ERR_INVALID_ARGUMENT.
@c public func tq_tokenizer_token_id(_ tok: TQTokenizerHandle?, _ token: UnsafePointer<CChar>?,
                                     _ id: UnsafeMutablePointer<UInt32>?) -> Int32 {
    guarded {
        let h = try borrowHandle(tok, "tok", as: TokenizerHandle.self)
        let s = String(cString: try required(token, "token"))
        let out = try required(id, "id")
        guard let i = h.tokenizer.tokenID(s) else { throw invalid("\"\(s)\" is not a token of this tokenizer") }
        out.pointee = i
    }
}

/// Encodes `text_len` bytes of UTF-8 `text` (text_len < 0: `text` is NUL-terminated) as one
/// sequence, exactly as `tokenizers`' Tokenizer.encode(text).ids: added/special tokens written
/// in the text are recognised, and the post-processor's special tokens (e.g. BOS) are added.
/// `*n_ids` always receives the number of ids. Capacity convention: with `ids_out` NULL only the
/// count is returned (TQ_OK); otherwise if `capacity` < the count nothing is written and the
/// call fails with TQ_ERR_INVALID_ARGUMENT (the message gives both numbers). The handle keeps
/// the last result, so counting and then filling encodes the text once. Invalid UTF-8 gives
/// TQ_ERR_INVALID_ARGUMENT.
@c public func tq_tokenize(_ tok: TQTokenizerHandle?, _ text: UnsafePointer<CChar>?, _ text_len: Int64,
                           _ ids_out: UnsafeMutablePointer<UInt32>?, _ capacity: Int64,
                           _ n_ids: UnsafeMutablePointer<Int64>?) -> Int32 {
    guarded {
        let h = try borrowHandle(tok, "tok", as: TokenizerHandle.self)
        let t = try required(text, "text")
        let count = try required(n_ids, "n_ids")
        count.pointee = 0
        let len = text_len < 0 ? strlen(t) : Int(text_len)
        let ids = try t.withMemoryRebound(to: UInt8.self, capacity: max(len, 1)) {
            try h.encode(UnsafeBufferPointer(start: $0, count: len))
        }
        count.pointee = Int64(ids.count)
        guard let out = ids_out else { return }
        guard capacity >= Int64(ids.count) else {
            throw invalid("ids_out holds \(capacity) ids but the text needs \(ids.count) (*n_ids is set to that count)")
        }
        ids.withUnsafeBufferPointer { out.update(from: $0.baseAddress!, count: ids.count) }
    }
}

/// Decodes `n` ids to UTF-8 text, exactly as `tokenizers`' Tokenizer.decode(ids) (special
/// tokens skipped; ids outside the vocabulary are skipped, as there). `*n_bytes` always
/// receives the text's length in bytes, without the terminating NUL. Capacity convention:
/// with `text_out` NULL only the length is returned (TQ_OK); otherwise if `capacity` <
/// the length nothing is written and the call fails with TQ_ERR_INVALID_ARGUMENT; the text is
/// NUL-terminated when `capacity` > the length (pass length + 1 for a C string).
@c public func tq_detokenize(_ tok: TQTokenizerHandle?, _ ids: UnsafePointer<UInt32>?, _ n: Int64,
                             _ text_out: UnsafeMutablePointer<CChar>?, _ capacity: Int64,
                             _ n_bytes: UnsafeMutablePointer<Int64>?) -> Int32 {
    guarded {
        let h = try borrowHandle(tok, "tok", as: TokenizerHandle.self)
        let count = try required(n_bytes, "n_bytes")
        count.pointee = 0
        guard n >= 0 else { throw invalid("n must be non-negative (got \(n))") }
        let list = UnsafeBufferPointer(start: n == 0 ? ids : try required(ids, "ids"), count: Int(n))
        try writeText(h.decode(list), text_out, capacity, count)
    }
}

/// `text` into `out` under the capacity convention of tq_detokenize: `*count` always receives the
/// length in bytes; with `out` NULL nothing else happens; a `capacity` below the length writes
/// nothing and throws; the text is NUL-terminated when `capacity` exceeds the length.
func writeText(_ text: String, _ out: UnsafeMutablePointer<CChar>?, _ capacity: Int64, _ count: UnsafeMutablePointer<Int64>) throws {
    var text = text
    try text.withUTF8 { u in
        count.pointee = Int64(u.count)
        guard let out else { return }
        guard capacity >= Int64(u.count) else {
            throw invalid("text_out holds \(capacity) bytes but the text needs \(u.count) (+1 for the NUL; *n_bytes is set to the length)")
        }
        if u.count > 0 { UnsafeMutableRawPointer(out).copyMemory(from: u.baseAddress!, byteCount: u.count) }
        if capacity > Int64(u.count) { out[u.count] = 0 }
    }
}
