import Foundation
import Testing
@testable import TesseraQ

/// `calib_windows`: "sequential" takes the first n_samples consecutive windows, so windows cut
/// elsewhere (bench/frontier.py feeds the same ones to AutoRound) are exactly what a run trains on.
@Suite struct CalibrationWindowsTests {
    @Test func sequentialTakesTheFirstWindows() throws {
        let tokens = (0..<100).map(UInt32.init)
        #expect(try calibrationWindows(tokens, samples: 3, length: 10, seed: 1, order: .sequential) == Array(tokens[0..<30]))
        #expect(try calibrationWindows(tokens, samples: 10, length: 10, seed: 1, order: .sequential) == tokens)
        #expect { try calibrationWindows(tokens, samples: 11, length: 10, seed: 1, order: .sequential) } throws: {
            ($0 as? TQError)?.message.contains("calib_windows") == true
        }
        // The default is unchanged: random offsets.
        #expect(try calibrationWindows(tokens, samples: 3, length: 10, seed: 1) != Array(tokens[0..<30]))
    }

    @Test func theKeyIsParsedAndChecked() throws {
        for method in ["tesseraq", "awq", "gptq"] {
            let c = try QuantizeConfig.parse(#"{"method": "\#(method)", "calib_windows": "sequential"}"#)
            #expect(try makeBlockQuantizer(c).calibration.windows == .sequential)
            #expect(try makeBlockQuantizer(QuantizeConfig.parse(#"{"method": "\#(method)"}"#)).calibration.windows == .random)
            #expect { try QuantizeConfig.parse(#"{"method": "\#(method)", "calib_windows": "shuffled"}"#) } throws: {
                ($0 as? TQError)?.message.contains("calib_windows") == true
            }
        }
        #expect { try QuantizeConfig.parse(#"{"method": "rtn", "calib_windows": "sequential"}"#) } throws: { $0 is TQError }
    }

    /// A run on the windows a random draw picked, passed as the whole calibration with
    /// "sequential", writes the same checkpoint as the random draw itself.
    @Test func sequentialRunOnDrawnWindowsMatchesTheDraw() throws {
        let model = try LlamaModel(directory: Fixtures.model("stories260K"))
        let tokens = try Fixtures.storiesTokens("valid")
        let n = 8, L = 64
        let windows = try calibrationWindows(tokens, samples: n, length: L, seed: 42)
        func run(_ order: String, _ calibration: [UInt32]) throws -> (String, [String: Any]) {
            let options: [String: JSONValue] = ["preset": .string("ci"), "n_samples": .int(n), "seq_len": .int(L),
                                                "batch": .int(4), "seed": .int(42), "calib_windows": .string(order)]
            let dir = temporaryDirectory("calib-\(order)") + "/ckpt"
            let report = try quantizeModel(model, config: QuantizeConfig(method: "gptq", spec: QuantSpec(bits: 3, groupSize: 32),
                                                                          options: options), outDir: dir, calibration: calibration)
            return (dir, report)
        }
        let (a, ra) = try run("random", tokens)
        let (b, rb) = try run("sequential", windows)
        let losses = { (r: [String: Any]) in (r["blocks"] as! [[String: Any]]).map { $0["final_loss"] as! Double } }
        #expect(losses(ra) == losses(rb))
        let weights = { (d: String) in try Data(contentsOf: URL(fileURLWithPath: d + "/model.safetensors")) }
        #expect(try weights(a) == weights(b))
    }
}
