import Foundation
import Testing
@testable import TesseraQ

/// OmniQuant's learnable weight clipping: the grid it starts from, the training it does on
/// stories260K, TesseraQ from its grid, and its configuration keys. (The kernels' forward and
/// gradients are checked against numpy in bindings/python/tests/test_lwc_kernels.py.)
@Suite(.serialized)
struct LWCTests {
    /// sig(20) is 1 in float32: the clipped range is the full range and the grid is RTN's.
    @Test(arguments: [(2, 32, false), (3, 48, false), (4, -1, false), (4, 32, true)])
    func saturatedFactorsGiveRTNsGrid(bits: Int, group: Int, sym: Bool) throws {
        let out = 12, inFeatures = 80, spec = QuantSpec(bits: bits, groupSize: group, sym: sym)
        let w = try FloatBuffer(randomWeights(out * inFeatures, seed: 7))
        let lwc = try LWCLinear(weight: w, out: out, inFeatures: inFeatures, spec: spec, initial: 20)
        let rtn = QuantizedLinear.roundToNearest(w.p, out: out, inFeatures: inFeatures, spec: spec)
        let grid = lwc.grid()
        #expect(grid.scales == rtn.scales)
        #expect(grid.zeros == rtn.zeros)
        #expect(grid.codes == rtn.codes)
        lwc.materialize()
        let deq = try rtn.dequantized()
        #expect((0..<(out * inFeatures)).allSatisfy { lwc.wHat.p[$0] == deq.p[$0] })
    }

    /// OmniQuant's start (sig(4) = 0.982) already clips: the grid is narrower than RTN's.
    @Test func defaultFactorsClip() throws {
        let out = 4, inFeatures = 64, spec = QuantSpec(bits: 2, groupSize: 32)
        let w = try FloatBuffer(randomWeights(out * inFeatures, seed: 8))
        let grid = try LWCLinear(weight: w, out: out, inFeatures: inFeatures, spec: spec).grid()
        let rtn = QuantizedLinear.roundToNearest(w.p, out: out, inFeatures: inFeatures, spec: spec)
        #expect(zip(grid.scales, rtn.scales).allSatisfy { $0 < $1 })
    }

    @Test func methodLWCBeatsRTNOnEveryBlock() throws {
        let (dir, report) = try runCalibrated("lwc", bits: 2, group: 32)
        let blocks = report["blocks"] as! [[String: Any]]
        #expect(blocks.count == 5)
        for b in blocks {
            #expect((b["final_loss"] as! Double) < (b["rtn_loss"] as! Double), "block \(b["block"]!)")
            #expect((b["lwc_clip_min"] as! Double) < 0.98)
        }
        #expect((report["options"] as! [String: Any])["lwc_steps"] as? Int == LWCOptions.ci.settings.steps)
        let (_, rtn) = try quantizeStories(QuantSpec(bits: 2, groupSize: 32))
        let pLWC = try perplexity(try LlamaModel(directory: dir)), pRTN = try perplexity(try LlamaModel(directory: rtn))
        print("stories260K W2 g32 ci preset: RTN \(pRTN), LWC \(pLWC)")
        #expect(pLWC < pRTN * 0.5)
    }

    @Test func tesseraQStartsFromTheLWCGrid() throws {
        var rounds = Set<Int>(), totals = Set<Int>()
        let (_, report) = try runTesseraQ(bits: 2, group: 32, extra: ["init": .string("lwc"), "iters": .int(4)]) { p in
            if p.rounds > 0 { // not the pipeline's per-block events
                rounds.insert(p.round)
                totals.insert(p.rounds)
            }
            return true
        }
        let options = try TesseraQOptions(options: ["preset": .string("ci")])
        #expect(totals == [1 + options.thresholds.count])
        #expect(rounds == Set(1...(1 + options.thresholds.count)))
        #expect((report["options"] as! [String: Any])["init"] as? String == "lwc")
        for b in report["blocks"] as! [[String: Any]] {
            #expect(b["lwc_last_step_loss"] is Double)
            #expect((b["final_loss"] as! Double) < (b["rtn_loss"] as! Double), "block \(b["block"]!)")
        }
    }

    @Test func initParsesToItsEnum() throws {
        for m in [InitMethod.rtn, .awq, .lwc] {
            let o = try TesseraQOptions(options: ["init": .string(m.rawValue)])
            #expect(o.initMethod == m)
            #expect(o.json["init"] as? String == m.rawValue)
        }
        let o = try TesseraQOptions(options: ["preset": .string("fast"), "lwc_steps": .int(7), "lwc_lr": .double(0.3)])
        #expect(o.lwc == LWCSettings(steps: 7, lr: 0.3))
        #expect(try LWCOptions(options: [:]) == LWCOptions.fast)
    }

    @Test(arguments: [
        (#"{"method": "lwc", "lwc_steps": -1}"#, "lwc_steps"), (#"{"method": "lwc", "lwc_lr": -0.1}"#, "lwc_lr"),
        (#"{"method": "lwc", "lwc_lr": "fast"}"#, "lwc_lr"), (#"{"method": "lwc", "lwc_steps": 1.5}"#, "lwc_steps"), (#"{"method": "lwc", "compute_dtype": "fp8"}"#, "compute_dtype"),
        (#"{"method": "lwc", "iters": 3}"#, "iters"), (#"{"method": "lwc", "preset": "slow"}"#, "preset"),
        (#"{"method": "tesseraq", "init": "omniquant"}"#, "init"), (#"{"method": "tesseraq", "lwc_lr": 11}"#, "lwc_lr"),
        (#"{"method": "awq", "lwc_steps": 3}"#, "lwc_steps"), (#"{"method": "lwc", "massive_token_cap": 0.9}"#, "massive_token_cap"),
        (#"{"method": "awq", "massive_token_cap": 0.5}"#, "massive_token_cap"),
    ])
    func rejectsBadLWCKeys(json: String, key: String) {
        #expect { try QuantizeConfig.parse(json) } throws: { ($0 as? TQError)?.message.contains(key) == true }
    }
}
