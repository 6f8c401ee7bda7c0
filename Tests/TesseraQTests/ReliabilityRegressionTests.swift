// Regressions found while fuzzing and sanitizing (README, Reliability): each input here once
// crashed the process; now it must fail with a status.

import Foundation
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
}
