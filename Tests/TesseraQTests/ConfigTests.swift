import Foundation
import Testing
@testable import TesseraQ

/// config.json in both the transformers 4.x form (top-level rope_theta / rope_scaling) and the 5.x
/// form (rope_parameters), and the refusal of fields whose values we do not implement.
@Suite struct ConfigTests {
    /// SmolLM2-135M's shape, with `extra` fields on top (JSON text per key).
    static func smolConfig(_ extra: [String: String]) throws -> LlamaConfig {
        var fields = ["\"architectures\"": "[\"LlamaForCausalLM\"]", "\"model_type\"": "\"llama\"", "\"hidden_size\"": "576",
                      "\"intermediate_size\"": "1536", "\"num_hidden_layers\"": "30", "\"num_attention_heads\"": "9",
                      "\"num_key_value_heads\"": "3", "\"vocab_size\"": "49152", "\"max_position_embeddings\"": "8192",
                      "\"rms_norm_eps\"": "1e-05", "\"tie_word_embeddings\"": "true"]
        for (k, v) in extra { fields["\"\(k)\""] = v }
        let text = "{" + fields.map { "\($0.key): \($0.value)" }.joined(separator: ", ") + "}"
        return try LlamaConfig(json: try JSONValue.parse(Data(text.utf8), what: "smol"), path: "smol/config.json")
    }

    @Test func transformers5RopeParametersGiveTheTheta() throws {
        let v5 = try Self.smolConfig(["rope_parameters": #"{"rope_theta": 100000.0, "rope_type": "default"}"#])
        #expect(v5.ropeTheta == 100000)
        #expect(v5.ropeScaling == .none)
        let v4 = try Self.smolConfig(["rope_theta": "100000.0"])
        #expect(v4 == v5)
        // Not the default a loader that ignores rope_parameters would use.
        #expect(try Self.smolConfig([:]).ropeTheta == 10000)
        #expect(v5.inverseFrequencies != (try Self.smolConfig([:])).inverseFrequencies)
    }

    @Test func llama3ScalingFromRopeParameters() throws {
        let v5 = try Self.smolConfig(["rope_parameters": #"""
            {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
             "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
            """#])
        #expect(v5.ropeTheta == 500000)
        #expect(v5.ropeScaling == .llama3(factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192))
        let v4 = try Self.smolConfig(["rope_theta": "500000.0", "rope_scaling": #"""
            {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
             "original_max_position_embeddings": 8192}
            """#])
        #expect(v4 == v5)
        // Both forms present and agreeing (transformers 5 keeps the old keys in some files).
        let both = try Self.smolConfig(["rope_theta": "500000.0", "rope_parameters": #"""
            {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
             "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
            """#])
        #expect(both == v5)
        // The scaled frequencies: the highest is untouched, the lowest divided by the factor.
        let plain = try Self.smolConfig(["rope_theta": "500000.0"]).inverseFrequencies, scaled = v5.inverseFrequencies
        #expect(scaled.first == plain.first)
        #expect(abs(scaled.last! - plain.last! / 32) <= 1e-6 * plain.last!)
    }

    @Test func linearScalingFromRopeParameters() throws {
        let c = try Self.smolConfig(["rope_parameters": #"{"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}"#])
        #expect(c.ropeScaling == .linear(factor: 2))
    }

    static let refusals: [(fields: [String: String], mentions: [String])] = [
        (["rope_parameters": #"{"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0}"#], ["rope_parameters.rope_type", "yarn"]),
        (["rope_parameters": #"{"rope_type": "llama3", "factor": 8.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}"#],
         ["missing rope_parameters.low_freq_factor"]),
        (["rope_scaling": #"{"rope_type": "llama3", "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}"#],
         ["missing rope_scaling.factor"]),
        (["rope_scaling": #"{"type": "linear"}"#], ["missing rope_scaling.factor"]),
        (["rope_scaling": #"{"type": "dynamic", "factor": 2.0}"#], ["rope_scaling.type", "dynamic"]),
        (["rope_theta": "10000.0", "rope_parameters": #"{"rope_type": "default", "rope_theta": 100000.0}"#],
         ["rope_theta", "rope_parameters.rope_theta", "disagrees"]),
        (["rope_scaling": #"{"type": "linear", "factor": 2.0}"#, "rope_parameters": #"{"rope_type": "default", "rope_theta": 10000.0}"#],
         ["rope_scaling", "rope_parameters", "disagrees"]),
        (["rope_parameters": #"{"full_attention": {"rope_theta": 1000000.0}, "sliding_attention": {"rope_theta": 10000.0}}"#],
         ["rope_parameters.full_attention"]),
        (["rope_parameters": "5"], ["rope_parameters", "not an object"]),
        (["rope_theta": "\"big\""], ["rope_theta", "must be a number"]),
        (["partial_rotary_factor": "0.5"], ["partial_rotary_factor"]),
        (["rope_parameters": #"{"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.4}"#],
         ["rope_parameters.partial_rotary_factor"]),
        (["attn_logit_softcapping": "50.0"], ["attn_logit_softcapping"]),
        (["final_logit_softcapping": "30.0"], ["final_logit_softcapping"]),
        (["attention_bias": "true"], ["attention_bias"]),
        (["mlp_bias": "true"], ["mlp_bias"]),
        (["hidden_act": "\"gelu_pytorch_tanh\""], ["hidden_act", "gelu_pytorch_tanh"]),
        (["rms_norm_eps": "\"1e-5\""], ["rms_norm_eps"]),
        (["rms_norm_eps": "-1"], ["rms_norm_eps"]),
        (["tie_word_embeddings": "\"yes\""], ["tie_word_embeddings"]),
        (["head_dim": "\"64\""], ["head_dim"]),
        (["model_type": "\"mistral\"", "layer_types": "[\"full_attention\"]"], ["layer_types"]),
        (["model_type": "\"qwen2\"", "use_sliding_window": "\"no\""], ["use_sliding_window"]),
        (["model_type": "\"mistral\"", "sliding_window": "0"], ["sliding_window"]),
        // Gemma variants we do not implement, refused by name.
        (["model_type": "\"gemma3\"", "architectures": "[\"Gemma3ForConditionalGeneration\"]"],
         ["model_type gemma3", "multimodal", "gemma3_text"]),
        (["model_type": "\"gemma3\""], ["model_type gemma3", "multimodal", "gemma3_text"]),
        (["model_type": "\"gemma2\"", "hidden_activation": "\"gelu\""], ["hidden_activation", "gelu"]),
        (["model_type": "\"gemma3_text\"", "use_bidirectional_attention": "true"], ["use_bidirectional_attention"]),
        (["model_type": "\"gemma2\"", "attn_logit_softcapping": "-1.0"], ["attn_logit_softcapping", "positive"]),
        (["model_type": "\"gemma2\"", "query_pre_attn_scalar": "0"], ["query_pre_attn_scalar", "positive"]),
        (["model_type": "\"gemma3_text\"", "rope_parameters": #"{"rope_type": "default", "rope_theta": 10000.0}"#],
         ["rope_parameters", "full_attention", "sliding_attention"]),
        (["model_type": "\"gemma3_text\"", "rope_local_base_freq": "5000.0",
          "rope_parameters": #"{"full_attention": {"rope_theta": 1000000.0}, "sliding_attention": {"rope_theta": 10000.0}}"#],
         ["rope_local_base_freq", "rope_parameters.sliding_attention.rope_theta", "disagrees"]),
        (["model_type": "\"gemma3_text\"",
          "rope_parameters": #"{"full_attention": {"rope_type": "yarn", "factor": 8.0}, "sliding_attention": {}}"#],
         ["rope_parameters.full_attention.rope_type", "yarn"]),
    ]

    @Test(arguments: 0..<refusals.count)
    func refusalNamesTheField(_ i: Int) {
        let (fields, mentions) = Self.refusals[i]
        #expect {
            _ = try Self.smolConfig(fields)
        } throws: { e in
            guard let e = e as? TQError, e.kind == .format || e.kind == .unsupported else { return false }
            return (mentions + ["smol/config.json"]).allSatisfy(e.message.contains)
        }
    }

    /// Fields whose neutral value changes nothing are accepted.
    @Test func neutralValuesAreAccepted() throws {
        let c = try Self.smolConfig(["partial_rotary_factor": "1.0", "attn_logit_softcapping": "null", "attention_bias": "false",
                                     "mlp_bias": "false", "hidden_act": "\"swish\"", "rope_scaling": "null",
                                     "head_dim": "null", "num_key_value_heads": "null"])
        #expect(c.headDim == 64 && c.kvHeads == 9 && c.ropeScaling == .none)
        #expect(try Self.smolConfig(["model_type": "\"qwen2\"", "attention_bias": "false"]).qkvBias)
    }

    /// Defaults for omitted fields are transformers' for the model type.
    @Test func defaultsPerModelType() throws {
        func config(_ type: String) throws -> LlamaConfig {
            let json = try JSONValue.parse(Data("""
                {"model_type": "\(type)", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                 "num_attention_heads": 4, "vocab_size": 16}
                """.utf8), what: "defaults")
            return try LlamaConfig(json: json, path: "defaults/config.json")
        }
        let expected: [String: (Float, Int)] = ["llama": (1e-6, 2048), "qwen2": (1e-6, 32768), "qwen3": (1e-6, 32768),
                                                "mistral": (1e-6, 131072), "phi3": (1e-5, 4096)]
        for (type, (eps, positions)) in expected {
            let c = try config(type)
            #expect(c.rmsEps == eps && c.maxPositions == positions, "\(type)")
            #expect(c.ropeTheta == 10000 && c.ropeScaling == .none && !c.tiedEmbeddings && c.kvHeads == 4 && c.headDim == 8)
        }
        #expect(try config("mistral").slidingWindow == 4096)
        #expect(try config("phi3").slidingWindow == nil && (try config("phi3")).fusedLinears)
        #expect(try config("qwen2").qkvBias && (try config("qwen3")).qkNorm && !(try config("llama")).qkvBias)
        for type in ["gemma2", "gemma3_text"] {
            let c = try config(type)
            #expect(c.rmsEps == 1e-6 && c.maxPositions == (type == "gemma2" ? 8192 : 131072) && c.tiedEmbeddings, "\(type)")
        }
    }

    /// Gemma 2 and Gemma 3 defaults and derived settings as transformers' configs set them.
    @Test func gemmaDefaults() throws {
        let g2 = try Self.smolConfig(["model_type": "\"gemma2\"", "architectures": "[\"Gemma2ForCausalLM\"]", "head_dim": "64"])
        #expect(g2.attentionSoftcap == 50 && g2.finalSoftcap == 30 && g2.activation == .geluTanh && g2.sandwichNorms)
        #expect(g2.normWeightOffset == 1 && g2.scalesEmbeddings && g2.attentionScale == Float(1 / 256.0.squareRoot()))
        #expect(g2.slidingWindow == 4096 && g2.slidingLayers == (0..<30).map { $0 % 2 == 0 } && g2.slidingRope == nil)
        let uncapped = try Self.smolConfig(["model_type": "\"gemma2\"", "attn_logit_softcapping": "null",
                                            "final_logit_softcapping": "null", "query_pre_attn_scalar": "144"])
        #expect(uncapped.attentionSoftcap == nil && uncapped.finalSoftcap == nil && uncapped.attentionScale == Float(1.0 / 12))
        // Gemma 3, 4.x form: rope_theta + rope_scaling for global layers, rope_local_base_freq for sliding ones.
        let g3 = try Self.smolConfig(["model_type": "\"gemma3_text\"", "rope_scaling": #"{"rope_type": "linear", "factor": 8.0}"#,
                                      "rope_local_base_freq": "20000.0"])
        #expect(g3.attentionSoftcap == nil && g3.finalSoftcap == nil && g3.qkNorm && g3.sandwichNorms)
        #expect(g3.ropeTheta == 1_000_000 && g3.ropeScaling == .linear(factor: 8))
        #expect(g3.slidingRope == LlamaConfig.Rope(theta: 20000, scaling: .none))
        #expect(g3.slidingLayers == (0..<30).map { ($0 + 1) % 6 != 0 })
        // 5.x form: the same model.
        let g3v5 = try Self.smolConfig(["model_type": "\"gemma3_text\"", "rope_parameters": #"""
            {"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
             "sliding_attention": {"rope_type": "default", "rope_theta": 20000.0}}
            """#])
        #expect(g3v5 == g3)
        #expect(try Self.smolConfig(["model_type": "\"gemma3_text\"", "sliding_window_pattern": "3"]).slidingLayers
                == (0..<30).map { ($0 + 1) % 3 != 0 })
    }

    @Test func slidingWindowsAsTransformersDecides() throws {
        let mistral = try Self.smolConfig(["model_type": "\"mistral\"", "sliding_window": "16"])
        #expect(mistral.slidingWindow == 16 && mistral.slidingLayers.allSatisfy { $0 })
        #expect(try Self.smolConfig(["model_type": "\"mistral\""]).slidingWindow == 4096)
        #expect(try Self.smolConfig(["model_type": "\"mistral\"", "sliding_window": "null"]).slidingWindow == nil)
        #expect(try Self.smolConfig(["model_type": "\"qwen2\"", "sliding_window": "16"]).slidingWindow == nil)
        let qwen = try Self.smolConfig(["model_type": "\"qwen2\"", "use_sliding_window": "true", "sliding_window": "16",
                                        "max_window_layers": "28"])
        #expect(qwen.slidingWindow == 16 && qwen.slidingLayers == (0..<30).map { $0 >= 28 })
        let typed = try Self.smolConfig(["model_type": "\"qwen2\"", "use_sliding_window": "true", "sliding_window": "16",
                                         "layer_types": "[" + Array(repeating: "\"full_attention\"", count: 30).joined(separator: ",") + "]"])
        #expect(typed.slidingWindow == nil)
        // LLaMA has no sliding window in transformers: the field is ignored there.
        #expect(try Self.smolConfig(["sliding_window": "16"]).slidingWindow == nil)
        #expect(qwen.window(layer: 27) == nil && qwen.window(layer: 28) == 16 && mistral.window(layer: 0) == 16)
    }

    /// A model written with rope_parameters evaluates exactly as the same model written with
    /// rope_theta, and differently from the default theta.
    @Test func ropeParametersReachTheForwardPass() throws {
        func logits(_ edit: (inout TinyLlama) -> Void) throws -> [Float] {
            var model = TinyLlama()
            edit(&model)
            let dir = try STTempDir()
            try model.write(to: dir)
            return try TinyLlama.logits(try LlamaModel(directory: dir.path))
        }
        let v4 = try logits { $0.config["rope_theta"] = "3.0" }
        let v5 = try logits { $0.config["rope_theta"] = nil; $0.config["rope_parameters"] = #"{"rope_type": "default", "rope_theta": 3.0}"# }
        let dflt = try logits { $0.config["rope_theta"] = nil }
        #expect(v4 == v5)
        #expect(zip(v4, dflt).map { abs($0 - $1) }.max()! > 1e-3)
    }
}
