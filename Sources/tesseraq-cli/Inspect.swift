import ArgumentParser
import Foundation
import TesseraQ

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a checkpoint's configuration and a table of its tensors.")

    @Argument(help: "Checkpoint directory.")
    var directory: String

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    func run() throws {
        try runReportingErrors {
            let config = try LlamaConfig(directory: directory)
            let store = try TensorStore(directory: directory)
            let tensors = store.names.map { store.info($0)! }
            let totalBytes = tensors.reduce(0) { $0 + $1.end - $1.begin }
            let packed = try quantizationSummary(store: store)
            if json {
                var out: [String: Any] = [
                    "config": configDictionary(config),
                    "tensors": tensors.map { ["name": $0.name, "dtype": $0.dtype.rawValue, "shape": $0.shape, "bytes": $0.end - $0.begin] },
                    "total_bytes": totalBytes,
                ]
                out["quantization"] = packed
                printJSON(out)
                return
            }
            for (k, v) in configDictionary(config).sorted(by: { $0.key < $1.key }) { print("\(k): \(v)") }
            print("")
            let nameWidth = max(4, tensors.map(\.name.count).max() ?? 0)
            print("name".padding(toLength: nameWidth, withPad: " ", startingAt: 0) + "  dtype  shape")
            for t in tensors {
                print(t.name.padding(toLength: nameWidth, withPad: " ", startingAt: 0) + "  "
                      + t.dtype.rawValue.padding(toLength: 5, withPad: " ", startingAt: 0) + "  "
                      + t.shape.map(String.init).joined(separator: " x "))
            }
            print(String(format: "\n%d tensors, %.2f MB", tensors.count, Double(totalBytes) / 1e6))
            if let packed {
                print("""

                    quantized: \(packed["bits"]!)-bit, group size \(packed["group_size"]!), \((packed["sym"] as! Bool) ? "symmetric" : "asymmetric"), \(packed["checkpoint_format"]!)
                    \(packed["linears"]!) packed linears, \(packed["groups"]!) groups: \(String(format: "%.2f", Double(packed["packed_bytes"] as! Int) / 1e6)) MB packed vs \(String(format: "%.2f", Double(packed["fp16_bytes"] as! Int) / 1e6)) MB in float16 (compression \(String(format: "%.2f", packed["compression_ratio"] as! Double))x, \(String(format: "%.3f", packed["bits_per_weight"] as! Double)) bits per weight with scales and zeros)
                    """)
            }
        }
    }
}

func configDictionary(_ c: LlamaConfig) -> [String: Any] {
    var d: [String: Any] = [
        "model_type": c.modelType, "hidden_size": c.hidden, "intermediate_size": c.intermediate,
        "num_hidden_layers": c.layers, "num_attention_heads": c.heads, "num_key_value_heads": c.kvHeads,
        "head_dim": c.headDim, "vocab_size": c.vocab, "max_position_embeddings": c.maxPositions,
        "rms_norm_eps": Double(c.rmsEps), "rope_theta": c.ropeTheta, "tie_word_embeddings": c.tiedEmbeddings,
        "qkv_bias": c.qkvBias, "qk_norm": c.qkNorm, "fused_linears": c.fusedLinears, "torch_dtype": c.torchDtype,
    ]
    // Only when some layer uses it: the window and which layers (as transformers' layer_types).
    if let w = c.slidingWindow {
        d["sliding_window"] = w
        d["sliding_layers"] = c.slidingLayers.enumerated().filter(\.element).map(\.offset)
    }
    // Gemma's settings, only where they apply.
    if c.activation == .geluTanh { d["hidden_activation"] = "gelu_pytorch_tanh" }
    if c.sandwichNorms { d["post_norms"] = true; d["norm_weight_offset"] = Double(c.normWeightOffset) }
    if let cap = c.attentionSoftcap { d["attn_logit_softcapping"] = Double(cap) }
    if let cap = c.finalSoftcap { d["final_logit_softcapping"] = Double(cap) }
    if let r = c.slidingRope { d["sliding_rope_theta"] = r.theta }
    return d
}

/// Bits, groups, sizes and compression of a packed checkpoint; nil for a float one.
func quantizationSummary(store: TensorStore) throws -> [String: Any]? {
    let path = store.directory + "/config.json"
    guard let q = try GPTQConfig(configJSON: try JSONValue.parseFile(path), path: path) else { return nil }
    let ckpt = try PackedCheckpoint(store: store, quantization: q)
    let weights = ckpt.linears.reduce(0) { $0 + $1.out * $1.inFeatures }
    let packedBytes = ckpt.linears.reduce(0) { $0 + $1.packedBytes }
    return [
        "bits": q.bits, "group_size": q.groupSize, "sym": q.sym, "checkpoint_format": q.checkpointFormat,
        "linears": ckpt.linears.count, "groups": ckpt.linears.reduce(0) { $0 + $1.nGroups * $1.out },
        "packed_bytes": packedBytes, "fp16_bytes": weights * 2,
        "compression_ratio": Double(weights * 2) / Double(packedBytes),
        "bits_per_weight": Double(packedBytes * 8) / Double(weights),
    ]
}
