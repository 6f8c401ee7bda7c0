//! Quantization
//! Long jobs report progress through a callback; returning non-zero from it cancels the job with
//! TQ_ERR_CANCELLED. The callback runs on the calling thread.
import TesseraQ

/// A quantization progress callback: (block, n_blocks, round, step, loss, user); return
/// non-zero to cancel. `loss` is NaN when the method has none (RTN).
public typealias TQQuantProgressCallback = @convention(c) (_ block: Int64, _ n_blocks: Int64, _ round: Int64, _ step: Int64,
                                                            _ loss: Double, _ user: UnsafeMutableRawPointer?) -> Int32

/// Quantizes `model` as `config_json` says and writes a GPTQ checkpoint to `out_dir` (assembled in
/// `out_dir`.partial and renamed when complete). config_json is a JSON object: common keys method
/// ("rtn", "awq", "gptq", "lwc", "tesseraq"), bits (2, 3, 4, 8), group_size (or -1 per-channel), sym,
/// format ("gptq_v2", "gptq"), overwrite, plus the method's keys (README, Quantization). Example:
///   {"method": "tesseraq", "bits": 2, "group_size": 64, "preset": "fast", "calib_tokens": "valid.bin"}
/// Unknown keys, wrong types and out-of-range values give TQ_ERR_INVALID_ARGUMENT naming the key.
/// `progress` may be NULL.
@c public func tq_quantize(_ model: TQModelHandle?, _ config_json: UnsafePointer<CChar>?, _ out_dir: UnsafePointer<CChar>?,
                           _ progress: TQQuantProgressCallback?, _ user: UnsafeMutableRawPointer?) -> Int32 {
    guarded { try runQuantize(model, config_json, out_dir, nil, progress, user) }
}

func runQuantize(_ model: TQModelHandle?, _ config_json: UnsafePointer<CChar>?, _ out_dir: UnsafePointer<CChar>?,
                 _ calibration: consuming [UInt32]?, _ progress: TQQuantProgressCallback?, _ user: UnsafeMutableRawPointer?) throws {
    let m = try borrowHandle(model, "model", as: LlamaModel.self)
    let config = try QuantizeConfig.parse(String(cString: try required(config_json, "config_json")))
    let out = String(cString: try required(out_dir, "out_dir"))
    try quantizeModel(m, config: config, outDir: out, calibration: consume calibration, progress: progress.map { cb in
        { p in cb(Int64(p.block), Int64(p.blocks), Int64(p.round), Int64(p.step), p.loss, user) == 0 }
    })
}

/// As tq_quantize, with the calibration tokens given as an array (`n_tokens` uint32 ids) instead
/// of the `calib_tokens` file key.
@c public func tq_quantize_tokens(_ model: TQModelHandle?, _ config_json: UnsafePointer<CChar>?, _ tokens: UnsafePointer<UInt32>?,
                                  _ n_tokens: Int64, _ out_dir: UnsafePointer<CChar>?, _ progress: TQQuantProgressCallback?,
                                  _ user: UnsafeMutableRawPointer?) -> Int32 {
    guarded {
        let t = try required(tokens, "tokens")
        guard n_tokens > 0 else { throw invalid("n_tokens must be positive (got \(n_tokens))") }
        try runQuantize(model, config_json, out_dir, Array(UnsafeBufferPointer(start: t, count: Int(n_tokens))), progress, user)
    }
}
