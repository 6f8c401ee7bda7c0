import Foundation
import Testing
@testable import TesseraQ

/// The checkpoint is written a block at a time: a calibrated run reads its finished blocks back
/// from the resume state while writing, so the packed result is never all in memory.
@Suite struct StreamedCheckpointTests {
    /// Written from per-block loads, the checkpoint has the bytes of the one written from every
    /// linear in memory (v2 and v1 zeros, a symmetric grid so v1 can store them; Phi-3's fused linears stacked back per block), and each
    /// block is loaded at most three times (the header, the 4-byte tensors, the f16 scales).
    @Test(arguments: [("stories260K", "gptq_v2"), ("stories260K", "gptq"), ("tiny-phi3", "gptq_v2")])
    func blockByBlockEqualsInMemory(model name: String, format: String) throws {
        let model = try LlamaModel(directory: Fixtures.model(name))
        let layers = model.config.layers
        let (linears, _) = try quantizeRTN(model, spec: QuantSpec(bits: 3, groupSize: 16, sym: true), progress: nil)
        let writer = CheckpointWriter(model: model, quantization: GPTQConfig(bits: 3, groupSize: 16, sym: true, checkpointFormat: format))
        let whole = temporaryDirectory("whole-\(name)-\(format)") + "/ckpt"
        try writer.write(linears: .init(linears), to: whole, staging: whole + ".partial", overwrite: false)
        var loads = [Int](repeating: 0, count: layers)
        let streamed = temporaryDirectory("streamed-\(name)-\(format)") + "/ckpt"
        let perBlock = linears.count / layers
        try writer.write(linears: .init(count: layers) { b in
            loads[b] += 1
            return Array(linears[(b * perBlock)..<((b + 1) * perBlock)])
        }, to: streamed, staging: streamed + ".partial", overwrite: false)
        #expect(FileManager.default.contentsEqual(atPath: whole + "/model.safetensors", andPath: streamed + "/model.safetensors"))
        #expect(loads.allSatisfy { (1...3).contains($0) }, "loads per block: \(loads)")
    }

    /// A streamed tensor that writes other than its shape's bytes is an error, never a file whose
    /// offsets lie.
    @Test func streamOfTheWrongSizeIsRefused() throws {
        let path = temporaryDirectory("short-stream") + "/x.safetensors"
        var w = SafeTensorsWriter()
        w.add("x", .f32, [4]) { try $0.write(contentsOf: Data(count: 12)) }
        #expect {
            try w.write(to: path)
        } throws: { ($0 as? TQError)?.kind == .internal }
        var ok = SafeTensorsWriter()
        let values: [Float] = [1, -2, 3.5, 4]
        ok.add("x", .f32, [4]) { h in try values.withUnsafeBytes { try h.write(contentsOf: Data($0)) } }
        try ok.write(to: path)
        let file = try SafeTensorsFile(path: path)
        var back = [Float](repeating: 0, count: 4)
        try file.readFloats(try #require(file.tensors["x"]), into: &back)
        #expect(back == values)
    }
}
