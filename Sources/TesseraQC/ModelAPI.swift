//! Models: open a checkpoint, run it, measure perplexity
//! A tq_model is a Hugging Face checkpoint (float, or GPTQ packed weights dequantised on load),
//! memory-mapped and read-only once open. Thread safety: every function may run concurrently on
//! one tq_model, tq_model_free included: calls already running when it is freed finish normally,
//! later ones fail with TQ_ERR_INVALID_ARGUMENT.
import TesseraQ

extension LlamaModel: HandleObject {
    static let handleKind = HandleKind.model
}

/// Opens a Hugging Face checkpoint directory (config.json + safetensors, or a GPTQ packed
/// directory). On success `*model` is a handle to free with tq_model_free.
@c public func tq_model_open(_ path: UnsafePointer<CChar>?, _ model: UnsafeMutablePointer<TQModelHandle?>?) -> Int32 {
    openHandle(path, model, "model") { try LlamaModel(directory: $0) }
}

/// As tq_model_open, with options as a JSON object (NULL or "" for the defaults):
/// {"lm_head": "w8"} holds the LM head rounded to nearest at 8 bits (groups of 128) and packed,
/// half a bf16 head's bytes per decoding step, as llama.cpp's Q4_0 files hold theirs in Q8_0;
/// "checkpoint" (the default) keeps it as stored. Every use of the model (logits, perplexity,
/// sessions) then runs that head. Unknown keys or values: TQ_ERR_INVALID_ARGUMENT.
@c public func tq_model_open_with(_ path: UnsafePointer<CChar>?, _ options_json: UnsafePointer<CChar>?,
                                  _ model: UnsafeMutablePointer<TQModelHandle?>?) -> Int32 {
    openHandle(path, model, "model") { dir in
        try LlamaModel(directory: dir, options: try ModelOptions.parse(options_json.map { String(cString: $0) } ?? ""))
    }
}

/// Frees a model handle; NULL is accepted.
@c public func tq_model_free(_ model: TQModelHandle?) {
    releaseHandle(model, as: LlamaModel.self)
}

/// The model's dimensions; any out-pointer may be NULL.
@c public func tq_model_info(_ model: TQModelHandle?, _ vocab: UnsafeMutablePointer<Int64>?,
                             _ hidden: UnsafeMutablePointer<Int64>?, _ intermediate: UnsafeMutablePointer<Int64>?,
                             _ layers: UnsafeMutablePointer<Int64>?, _ heads: UnsafeMutablePointer<Int64>?,
                             _ kv_heads: UnsafeMutablePointer<Int64>?, _ head_dim: UnsafeMutablePointer<Int64>?,
                             _ max_positions: UnsafeMutablePointer<Int64>?) -> Int32 {
    guarded {
        let c = try borrowHandle(model, "model", as: LlamaModel.self).config
        vocab?.pointee = Int64(c.vocab)
        hidden?.pointee = Int64(c.hidden)
        intermediate?.pointee = Int64(c.intermediate)
        layers?.pointee = Int64(c.layers)
        heads?.pointee = Int64(c.heads)
        kv_heads?.pointee = Int64(c.kvHeads)
        head_dim?.pointee = Int64(c.headDim)
        max_positions?.pointee = Int64(c.maxPositions)
    }
}

/// Logits of one sequence: `logits_out` receives n x vocab floats (row t predicts token t+1).
@c public func tq_model_logits(_ model: TQModelHandle?, _ tokens: UnsafePointer<UInt32>?, _ n: Int64,
                               _ logits_out: UnsafeMutablePointer<Float>?) -> Int32 {
    guarded {
        let m = try borrowHandle(model, "model", as: LlamaModel.self)
        let t = try required(tokens, "tokens"), out = try required(logits_out, "logits_out")
        guard n > 0 else { throw invalid("n must be positive (got \(n))") }
        try m.logits(UnsafeBufferPointer(start: t, count: Int(n)), into: out)
    }
}

/// Perplexity over floor(n_tokens / seq_len) windows (at most max_windows when > 0), as in
/// ALGORITHM.md section 5. `progress` (may be NULL) is called after each window; returning
/// non-zero cancels with TQ_ERR_CANCELLED.
@c public func tq_eval_perplexity(_ model: TQModelHandle?, _ tokens: UnsafePointer<UInt32>?, _ n_tokens: Int64,
                                  _ seq_len: Int64, _ max_windows: Int64, _ progress: TQProgressCallback?,
                                  _ user: UnsafeMutableRawPointer?, _ ppl: UnsafeMutablePointer<Double>?) -> Int32 {
    guarded {
        let m = try borrowHandle(model, "model", as: LlamaModel.self)
        let t = try required(tokens, "tokens"), out = try required(ppl, "ppl")
        guard n_tokens > 0 else { throw invalid("n_tokens must be positive (got \(n_tokens))") }
        let r = try evaluatePerplexity(model: m, tokens: UnsafeBufferPointer(start: t, count: Int(n_tokens)),
                                       seqLen: Int(seq_len), maxWindows: Int(max_windows),
                                       progress: progressHandler(progress, user))
        out.pointee = r.perplexity
    }
}
