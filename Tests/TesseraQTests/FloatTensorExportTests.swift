import Foundation
import Testing
@testable import TesseraQ

/// AWQ's v -> o folding divides v_proj's bias; the checkpoint and a resumed run must carry the
/// divided bias (every float tensor a method changes), not the input's.
@Suite(.serialized) struct FloatTensorExportTests {
    /// Qwen2-style without GQA (kv heads == heads, so AWQ folds v into o), with q/k/v biases;
    /// a vocabulary of 512 so that stories260K's tokens calibrate it.
    static let fields: [String: JSONValue] = [
        "architectures": .array([.string("Qwen2ForCausalLM")]), "model_type": .string("qwen2"),
        "hidden_size": .int(32), "intermediate_size": .int(64), "num_hidden_layers": .int(3),
        "num_attention_heads": .int(4), "num_key_value_heads": .int(4), "vocab_size": .int(512),
        "max_position_embeddings": .int(256), "rms_norm_eps": .double(1e-6), "rope_theta": .double(10000),
        "tie_word_embeddings": .bool(false), "torch_dtype": .string("float32"),
    ]
    static let spec = QuantSpec(bits: 4, groupSize: 32)

    static func quantize(_ model: LlamaModel, out: String, progress: QuantProgressHandler? = nil) throws {
        try quantizeModel(model, config: QuantizeConfig(method: "awq", spec: spec, options: ["preset": .string("ci")]),
                          outDir: out, calibration: try Fixtures.storiesTokens("valid"), progress: progress)
    }

    @Test func exportedCheckpointEvaluatesAsTheInMemoryResult() throws {
        let src = try writeRandomModel(Self.fields, seed: 21, tag: "qwen2-bias")
        let tokens = Array(try Fixtures.storiesTokens("test.raw")[0..<96])
        let captured = try expectAWQExportMatchesInMemory(src, spec: Self.spec, calibration: try Fixtures.storiesTokens("valid"),
                                                          tokens: tokens)
        let original = try LlamaModel(directory: src)
        for l in 0..<original.config.layers {
            // The fold happened: the in-memory v bias is no longer the input's.
            let vBias = try #require(captured.blocks[l]?.biases?[2]).array
            #expect(vBias != (try original.loadBlock(l)).biases![2].array, "block \(l)")
        }
    }

    @Test func resumedRunWritesTheSameCheckpoint() throws {
        let src = try writeRandomModel(Self.fields, seed: 21, tag: "qwen2-bias-resume")
        let full = temporaryDirectory("qwen2-full") + "/ckpt"
        try Self.quantize(try LlamaModel(directory: src), out: full)
        let dir = temporaryDirectory("qwen2-resume") + "/ckpt"
        #expect(throws: TQError.self) { try Self.quantize(try LlamaModel(directory: src), out: dir) { $0.block < 1 } }
        #expect(FileManager.default.fileExists(atPath: dir + ".partial/blocks/0001/report.json"))
        #expect(!FileManager.default.fileExists(atPath: dir + ".partial/blocks/0002/report.json"))
        try Self.quantize(try LlamaModel(directory: src), out: dir)
        #expect(FileManager.default.contentsEqual(atPath: full + "/model.safetensors", andPath: dir + "/model.safetensors"))
    }
}

/// The blocks a run loaded, as the run left them (the method transforms them in place).
final class CapturedBlocks: @unchecked Sendable { var blocks: [Int: BlockWeights] = [:] }

/// Quantizes the model in `src` with AWQ (`ci` preset), re-reads the exported checkpoint from disk
/// and expects its logits on `tokens` to equal the in-memory result: the original model with each
/// block's float tensors as AWQ left them and the RTN grid of its transformed weights (what AWQ
/// quantizes). Returns the transformed blocks.
@discardableResult
func expectAWQExportMatchesInMemory(_ src: String, spec: QuantSpec, calibration: [UInt32], tokens: [UInt32],
                                    sourceLocation: SourceLocation = #_sourceLocation) throws -> CapturedBlocks {
    let model = try LlamaModel(directory: src)
    let captured = CapturedBlocks()
    model.blockTransform = { layer, block in captured.blocks[layer] = block }
    let out = temporaryDirectory("awq-export") + "/ckpt"
    try quantizeModel(model, config: QuantizeConfig(method: "awq", spec: spec, options: ["preset": .string("ci")]),
                      outDir: out, calibration: calibration)
    let c = model.config
    let reference = try LlamaModel(directory: src)
    reference.blockTransform = { l, block in
        let done = captured.blocks[l]!
        for (dst, src) in zip(block.floatTensors(layer: l), done.floatTensors(layer: l)) {
            dst.buffer.p.update(from: src.buffer.p, count: src.buffer.count)
        }
        block.linears = try roundToNearest(block: done, layer: l, config: c, spec: spec).map { try $0.dequantized() }
    }
    let exported = try LlamaModel(directory: out)
    #expect(exported.packed != nil, sourceLocation: sourceLocation)
    let err = relativeMaxError(try logits(exported, tokens), try logits(reference, tokens))
    #expect(err < 1e-5, "\(src): exported vs in-memory logits: relative error \(err)", sourceLocation: sourceLocation)
    return captured
}
