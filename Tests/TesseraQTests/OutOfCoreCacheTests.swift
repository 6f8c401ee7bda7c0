// The out-of-core activation cache (`cache_budget_mb`): the same results as in memory, and the
// resident set bounded while a cache far larger than the budget is filled and read.

import Foundation
import Testing
@testable import TesseraQ

/// The resident bytes of the mapping that starts at `base` (its "Rss:" in /proc/self/smaps): what
/// the cache itself holds in memory, whatever other tests running in parallel allocate.
func residentBytes(ofMappingAt base: UnsafeMutableRawPointer) -> Int {
    // Read to the end: String(contentsOfFile:) stops at the first page of a /proc file.
    let data = FileHandle(forReadingAtPath: "/proc/self/smaps")?.readDataToEndOfFile() ?? Data()
    let text = String(decoding: data, as: UTF8.self)
    let start = String(UInt(bitPattern: base), radix: 16)
    var inMapping = false
    for line in text.split(separator: "\n") {
        if let dash = line.firstIndex(of: "-"), line[..<dash].allSatisfy(\.isHexDigit) {
            inMapping = line[..<dash].drop { $0 == "0" } == start.drop { $0 == "0" }
        } else if inMapping, line.hasPrefix("Rss:") {
            return (Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") ?? -1) * 1024
        }
    }
    return -1
}

@Suite(.serialized) struct OutOfCoreCacheTests {
    /// 64 samples x 512 rows x 1024 floats: 128 MB of float32 written and read back through a
    /// scratch file whose mapping never holds a tenth of that in memory.
    @Test func scratchCacheKeepsValuesAndStaysOutOfTheResidentSet() throws {
        let dir = temporaryDirectory("scratch")
        let samples = 64, rows = 512, width = 1024
        let cache = try ActivationCache(samples: samples, rowsPerSample: rows, width: width, dtype: .f32, directory: dir)
        #expect(cache.isOutOfCore)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty, "the scratch file is unlinked at once")
        let base = try #require(cache.scratch?.base)
        #expect(residentBytes(ofMappingAt: base) == 0)
        let x = try FloatBuffer(count: rows * width), y = try FloatBuffer(count: rows * width)
        for i in 0..<samples {
            for j in 0..<x.count { x.p[j] = Float(i) + Float(j) * 1e-3 }
            cache.write(i, from: x.p)
        }
        var peak = residentBytes(ofMappingAt: base)
        var wrong = 0
        for i in stride(from: samples - 1, through: 0, by: -1) {
            cache.read(i, into: y.p)
            wrong += (0..<y.count).filter { y.p[$0] != Float(i) + Float($0) * 1e-3 }.count
            peak = max(peak, residentBytes(ofMappingAt: base))
        }
        #expect(wrong == 0)
        let total = samples * rows * width * 4
        #expect(peak >= 0 && peak < total / 10, "the cache's mapping holds \(peak) resident bytes of \(total)")
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
