// `massive_token_cap`: tokens far above the batch's median norm count in the block loss as a token
// at the cap with the same relative error.
import Foundation
import Testing
@testable import TesseraQ

@Suite(.serialized) struct MassiveTokenTests {
    func weights(_ sumsq: [Float], cap: Double) -> [Float] {
        var w = sumsq
        w.withUnsafeMutableBufferPointer { BlockTrainer.capTokenWeights($0.baseAddress!, rows: $0.count, cap: cap) }
        return w
    }

    @Test func tokensPastTheCapCountAsTokensAtTheCap() {
        // Median 4 (odd count), cap 3: the limit on the squared norm is 36.
        #expect(weights([4, 1, 9, 1, 10000], cap: 3) == [1, 1, 1, 1, 36 / 10000])
        // Even count: the median is the mean of the middle two, (1 + 4) / 2.
        #expect(weights([1, 4, 1, 50], cap: 2) == [1, 1, 1, 10 / 50])
        // A token exactly at the cap keeps weight 1; its weighted squared norm never exceeds the limit.
        let w = weights([1, 1, 1, 9, 900], cap: 3)
        #expect(w == [1, 1, 1, 1, 0.01])
        #expect(zip(w, [Float(1), 1, 1, 9, 900]).allSatisfy { $0 * $1 <= 9 })
    }

    /// A short stories260K W2 run with the plain MSE.
    static let quick: [String: JSONValue] = ["iters": .int(4), "n_samples": .int(8), "init": .string("rtn"), "massive_token_cap": .int(0)]

    /// With every token under the cap the weights are all 1: the run is the plain-MSE run, bit for bit.
    @Test func aCapNoTokenReachesChangesNothing() throws {
        let (plain, _) = try runTesseraQ(bits: 2, group: 32, extra: Self.quick)
        var capped = Self.quick
        capped["massive_token_cap"] = .int(1000)
        let (dir, report) = try runTesseraQ(bits: 2, group: 32, extra: capped)
        #expect((report["options"] as? [String: Any])?["massive_token_cap"] as? Double == 1000)
        #expect(FileManager.default.contentsEqual(atPath: plain + "/model.safetensors", andPath: dir + "/model.safetensors"))
    }

    /// A cap that weights tokens down changes what the block is trained towards.
    @Test func aCapBelowTheLargestTokensChangesTheResult() throws {
        let (plain, _) = try runTesseraQ(bits: 2, group: 32, extra: Self.quick)
        var capped = Self.quick
        capped["massive_token_cap"] = .int(1)
        let (dir, report) = try runTesseraQ(bits: 2, group: 32, extra: capped)
        #expect(!FileManager.default.contentsEqual(atPath: plain + "/model.safetensors", andPath: dir + "/model.safetensors"))
        for b in report["blocks"] as! [[String: Any]] {
            #expect((b["final_loss"] as! Double) < (b["rtn_loss"] as! Double), "block \(b["block"]!)")
        }
    }

    /// The CPU presets cap at 8; `paper` keeps the paper's plain MSE; LWC reads the key as TesseraQ does.
    @Test func presetsCapAtEightExceptPaper() throws {
        #expect(try TesseraQOptions(options: [:]).massiveTokenCap == 8)
        #expect(try TesseraQOptions(options: ["preset": .string("ci")]).massiveTokenCap == 8)
        #expect(try TesseraQOptions(options: ["preset": .string("paper")]).massiveTokenCap == 0)
        #expect(try TesseraQOptions(options: ["preset": .string("paper"), "massive_token_cap": .int(4)]).massiveTokenCap == 4)
        #expect(try LWCOptions(options: [:]).massiveTokenCap == 8)
        #expect(try LWCOptions(options: ["preset": .string("paper")]).massiveTokenCap == 0)
        #expect(try LWCOptions(options: ["massive_token_cap": .double(2.5)]).massiveTokenCap == 2.5)
        // Method awq keeps llm-awq's plain MSE unless asked.
        #expect(try AWQOptions(options: [:]).massiveTokenCap == 0)
        #expect(try AWQOptions(options: ["preset": .string("fast"), "massive_token_cap": .int(8)]).massiveTokenCap == 8)
    }
}
