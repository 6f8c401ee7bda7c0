import Foundation
import Testing

/// Locates `../shared` (models with golden outputs, WikiText-2) beside the repository.
/// Tests that need it are skipped, loudly, when it is absent (a user's fresh clone).
enum SharedData {
    static let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().path
    static let root = URL(fileURLWithPath: repoRoot + "/../shared").standardized.path

    static let available: Bool = {
        let ok = FileManager.default.fileExists(atPath: root + "/models/stories260K/config.json")
        if !ok {
            FileHandle.standardError.write(Data("""
                ************************************************************************
                WARNING: \(root) is absent: golden-model tests are SKIPPED.
                ************************************************************************

                """.utf8))
        }
        return ok
    }()

    static let skipReason: Comment = "../shared is absent: golden-model tests skipped"

    static func model(_ name: String) -> String { root + "/models/" + name }
    static func tokens(_ model: String, _ split: String) -> String { root + "/data/wikitext2/tokens/\(model)/\(split).bin" }
}

