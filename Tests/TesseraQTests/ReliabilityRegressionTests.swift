// Regressions found while fuzzing and sanitizing (README, Reliability): each input here once
// crashed the process; now it must fail with a status.

import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing
@testable import TesseraQ

@Suite("reliability regressions")
struct ReliabilityRegressionTests {
    /// n_samples, seq_len and batch have no upper bound, and the memory estimate multiplied them
    /// unchecked: a configuration with a huge count trapped on integer overflow before the run
    /// was refused. Now the estimate saturates and the run is refused as too large.
    @Test("huge calibration sizes are refused as out of memory, not trapped", arguments: [
        "{\"method\": \"gptq\", \"n_samples\": 4611686018427387904, \"batch\": 1}",
        "{\"method\": \"gptq\", \"n_samples\": 9223372036854775807, \"batch\": 9223372036854775807}",
        "{\"method\": \"awq\", \"n_samples\": 3037000500, \"seq_len\": 3037000500, \"batch\": 1}",
        "{\"method\": \"tesseraq\", \"n_samples\": 2, \"seq_len\": 9223372036854775807, \"batch\": 2}",
    ])
    func hugeCalibrationIsRefused(json: String) throws {
        let model = try LlamaModel(directory: Fixtures.model("stories260K"))
        let config = try QuantizeConfig.parse(json)
        let out = temporaryDirectory("huge") + "/ckpt"
        let tokens = [UInt32](repeating: 1, count: 600)
        let error = #expect(throws: TQError.self) {
            try quantizeModel(model, config: config, outDir: out, calibration: tokens)
        }
        #expect(error?.kind == .outOfMemory, "\(String(describing: error))")
        #expect(!FileManager.default.fileExists(atPath: out))
    }

    @Test("saturating size arithmetic")
    func saturating() {
        #expect(saturatingProduct(3, 4, 5) == 60)
        #expect(saturatingProduct(Int.max / 2, 3) == Int.max)
        #expect(saturatingProduct(1 << 32, 1 << 31) == Int.max)
        #expect(saturatingProduct(0, Int.max, Int.max) == 0)
        #expect(saturatingSum(1, 2, 3) == 6)
        #expect(saturatingSum(Int.max, 1) == Int.max)
    }

    /// FileManager.contents(atPath:) leaked 4 KB per empty file (LeakSanitizer, config_json
    /// fuzzer on an empty input); readWholeFile replaces it for every untrusted file.
    @Test("readWholeFile: content, empty file, missing file, FIFO")
    func readWholeFileCases() throws {
        let dir = temporaryDirectory("read")
        let bytes = Data([0, 1, 2, 255])
        try bytes.write(to: URL(fileURLWithPath: dir + "/four"))
        try Data().write(to: URL(fileURLWithPath: dir + "/empty"))
        #expect(mkfifo(dir + "/fifo", 0o600) == 0)
        #expect(readWholeFile(dir + "/four") == bytes)
        #expect(readWholeFile(dir + "/empty") == Data())
        #expect(readWholeFile(dir + "/missing") == nil)
        #expect(readWholeFile(dir + "/fifo") == nil)   // would block waiting for a writer
        #expect(readWholeFile(dir) == nil)
    }

    @Test("an empty config.json, tokenizer.json or token file is a format error")
    func emptyFiles() throws {
        let dir = temporaryDirectory("empty")
        try Data().write(to: URL(fileURLWithPath: dir + "/config.json"))
        try Data().write(to: URL(fileURLWithPath: dir + "/tokenizer.json"))
        try Data().write(to: URL(fileURLWithPath: dir + "/tokens.bin"))
        let model = #expect(throws: TQError.self) { try LlamaModel(directory: dir) }
        #expect(model?.kind == .format)
        let tokenizer = #expect(throws: TQError.self) { try Tokenizer(path: dir) }
        #expect(tokenizer?.kind == .format)
        #expect(try readTokenFile(dir + "/tokens.bin") == [])
    }

    /// With iters 0 no TesseraQ step runs and the block report held last_step_loss = NaN, which
    /// JSONSerialization refuses: the run failed with TQ_ERR_INTERNAL (quantize_config fuzzer).
    @Test("TesseraQ with iters 0 quantizes; its report has no last_step_loss")
    func tesseraqWithoutSteps() throws {
        let model = try LlamaModel(directory: Fixtures.model("stories260K"))
        let config = try QuantizeConfig.parse("""
            {"method": "tesseraq", "bits": 3, "group_size": 32, "preset": "ci", "init": "awq",
             "n_samples": 1, "batch": 1, "seq_len": 16, "iters": 0}
            """)
        let out = temporaryDirectory("iters0") + "/ckpt"
        let tokens = (0..<200).map { UInt32($0 * 7 % 500) }
        let report = try quantizeModel(model, config: config, outDir: out, calibration: tokens)
        let blocks = try #require(report["blocks"] as? [[String: Any]])
        #expect(blocks.count == model.config.layers)
        #expect(blocks.allSatisfy { $0["last_step_loss"] == nil && $0["final_loss"] is Double })
        #expect(FileManager.default.fileExists(atPath: out + "/quantize_report.json"))
    }
}
