// The out-of-core activation cache (`cache_budget_mb`): the same results as in memory, and the
// resident set bounded while a cache far larger than the budget is filled and read.

import Foundation
import Testing
@testable import TesseraQ

/// The process's resident set in bytes (VmRSS).
private func residentBytes() -> Int {
    let text = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
    let line = text.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
    return (Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") ?? 0) * 1024
}

@Suite(.serialized) struct OutOfCoreCacheTests {
    /// 64 samples x 512 rows x 1024 floats: 128 MB of float32 written and read back through a
    /// scratch file, the resident set growing by less than a tenth of that.
    @Test func scratchCacheKeepsValuesAndStaysOutOfTheResidentSet() throws {
        let dir = temporaryDirectory("scratch")
        let samples = 64, rows = 512, width = 1024
        let cache = try ActivationCache(samples: samples, rowsPerSample: rows, width: width, dtype: .f32, directory: dir)
        #expect(cache.isOutOfCore)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty, "the scratch file is unlinked at once")
        let before = residentBytes()
        let x = try FloatBuffer(count: rows * width), y = try FloatBuffer(count: rows * width)
        for i in 0..<samples {
            for j in 0..<x.count { x.p[j] = Float(i) + Float(j) * 1e-3 }
            cache.write(i, from: x.p)
        }
        var peak = residentBytes()
        var wrong = 0
        for i in stride(from: samples - 1, through: 0, by: -1) {
            cache.read(i, into: y.p)
            wrong += (0..<y.count).filter { y.p[$0] != Float(i) + Float($0) * 1e-3 }.count
            peak = max(peak, residentBytes())
        }
        #expect(wrong == 0)
        let total = samples * rows * width * 4
        #expect(peak - before < total / 10, "resident set grew by \(peak - before) bytes for a \(total)-byte cache")
        // bf16 round-trips as in memory.
        let memory = try ActivationCache(samples: 2, rowsPerSample: rows, width: width, dtype: .bf16)
        let disk = try ActivationCache(samples: 2, rowsPerSample: rows, width: width, dtype: .bf16, directory: dir)
        memory.write(1, from: x.p); disk.write(1, from: x.p)
        memory.read(1, into: y.p)
        let z = try FloatBuffer(count: rows * width)
        disk.read(1, into: z.p)
        #expect(y.array == z.array)
    }

    /// TesseraQ on stories260K with a budget far below its caches: the same checkpoint byte for byte,
    /// and the report says the caches were on disk.
    @Test func budgetedRunWritesTheSameCheckpoint() throws {
        let model = try LlamaModel(directory: Fixtures.model("stories260K"))
        let tokens = try Fixtures.storiesTokens("valid")
        var outs: [String] = []
        for budget in [0, 1] {
            let out = temporaryDirectory("budget\(budget)") + "/q"
            let config = try QuantizeConfig.parse(#"{"method": "tesseraq", "bits": 2, "group_size": 32, "preset": "ci", "init": "rtn", "iters": 3, "cache_budget_mb": \#(budget)}"#)
            let report = try quantizeModel(model, config: config, outDir: out, calibration: tokens)
            let memory = try #require(report["memory"] as? [String: Any])
            #expect(memory["cache_out_of_core"] as? Bool == (budget == 1))
            outs.append(out)
        }
        #expect(FileManager.default.contentsEqual(atPath: outs[0] + "/model.safetensors", andPath: outs[1] + "/model.safetensors"))
        #expect(throws: TQError.self) { try QuantizeConfig.parse(#"{"method": "gptq", "cache_budget_mb": -1}"#) }
        #expect(throws: TQError.self) { try QuantizeConfig.parse(#"{"method": "rtn", "cache_budget_mb": 10}"#) }
    }
}
