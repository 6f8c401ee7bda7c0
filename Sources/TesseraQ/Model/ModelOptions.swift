import Foundation

/// How a model is held in memory once open (`tq_model_open_with`'s JSON options), parsed once.
/// Unknown keys and values are rejected with a message naming the key.
public struct ModelOptions: Sendable, Equatable {
    /// The LM head: as the checkpoint stores it, or rounded to nearest at 8 bits (asymmetric,
    /// groups of 128 along the hidden dimension) and packed, which halves a bf16 head's bytes per
    /// decoding step (llama.cpp holds the head of its Q4_0 and Q2_K files in Q8_0). The embedding
    /// lookups keep the checkpoint's values, tied or not.
    public enum LMHead: String, Sendable, CaseIterable {
        case checkpoint
        case w8
    }
    public var lmHead: LMHead

    public init(lmHead: LMHead = .checkpoint) { self.lmHead = lmHead }

    /// The grid of a `w8` head.
    static let headSpec = QuantSpec(bits: 8, groupSize: 128)

    /// Options from a JSON object such as {"lm_head": "w8"}; empty text means the defaults.
    public static func parse(_ text: String) throws -> ModelOptions {
        guard !text.isEmpty else { return ModelOptions() }
        let json = try JSONValue.parse(Data(text.utf8), what: "model options")
        guard let obj = json.object else { throw TQError.invalid("model options: not a JSON object") }
        if let unknown = obj.keys.sorted().first(where: { $0 != "lm_head" }) {
            throw TQError.invalid("model option \(unknown): unknown (known: lm_head)")
        }
        let name = try KeyReader(obj).string("lm_head", default: LMHead.checkpoint.rawValue)
        guard let head = LMHead(rawValue: name) else {
            let known = LMHead.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", ")
            throw TQError.invalid("model option lm_head: must be one of \(known) (got \"\(name)\")")
        }
        return ModelOptions(lmHead: head)
    }
}
