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
            if json {
                printJSON([
                    "config": configDictionary(config),
                    "tensors": tensors.map { ["name": $0.name, "dtype": $0.dtype.rawValue, "shape": $0.shape, "bytes": $0.end - $0.begin] },
                    "total_bytes": totalBytes,
                ])
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
        }
    }
}

func configDictionary(_ c: LlamaConfig) -> [String: Any] {
    [
        "model_type": c.modelType, "hidden_size": c.hidden, "intermediate_size": c.intermediate,
        "num_hidden_layers": c.layers, "num_attention_heads": c.heads, "num_key_value_heads": c.kvHeads,
        "head_dim": c.headDim, "vocab_size": c.vocab, "max_position_embeddings": c.maxPositions,
        "rms_norm_eps": Double(c.rmsEps), "rope_theta": c.ropeTheta, "tie_word_embeddings": c.tiedEmbeddings,
        "qkv_bias": c.qkvBias, "torch_dtype": c.torchDtype,
    ]
}
