import Foundation
import TesseraQ

/// The committed test data: the tiny golden models under Tests/Fixtures and the WikiText-2 texts
/// under data/wikitext2, so a fresh clone runs every test with nothing beside it.
enum Fixtures {
    static let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().path

    static func model(_ name: String) -> String { repoRoot + "/Tests/Fixtures/models/" + name }
    static func tokenizer(_ name: String) -> String { repoRoot + "/Tests/Fixtures/tokenizers/\(name)/tokenizer.json" }
    /// "test.raw" (evaluation) or "valid" (calibration).
    static func text(_ split: String) -> String { repoRoot + "/data/wikitext2/\(split).txt" }

    /// WikiText-2 `split` encoded as one string by stories260K's tokenizer without BOS, as the
    /// CLI's --text would give it less the BOS (encoded once per test process).
    static func storiesTokens(_ split: String) throws -> [UInt32] {
        switch split {
        case "test.raw": try storiesTest.get()
        case "valid": try storiesValid.get()
        default: fatalError("no WikiText-2 split \(split)")
        }
    }

    private static let storiesTest = Result { try encode("test.raw") }
    private static let storiesValid = Result { try encode("valid") }
    private static func encode(_ split: String) throws -> [UInt32] {
        try Tokenizer(path: model("stories260K")).encode(file: text(split), addSpecialTokens: false)
    }
}
