import Foundation
import Testing
@testable import TesseraQ

/// The calibrated run's passes (target, RTN diagnostic, advance) run at the method's compute_dtype:
/// bf16 products give outputs within bf16's rounding of float32's, and not the same bits.
@Test func blockRunnerRunsAtItsComputeDType() throws {
    let model = try LlamaModel(directory: Fixtures.model("stories260K"))
    let c = model.config, n = 4, L = 32
    let tokens = try Fixtures.storiesTokens("valid")
    let block = try model.loadBlock(0)
    func run(_ compute: ComputeDType) throws -> ([Float], Double) {
        let cache = try ActivationCache(samples: n, rowsPerSample: L, width: c.hidden, dtype: .f32)
        let target = try ActivationCache(samples: n, rowsPerSample: L, width: c.hidden, dtype: .f32)
        try tokens.withUnsafeBufferPointer { w in
            for i in 0..<n {
                let x = try model.embed(UnsafeBufferPointer(rebasing: w[(i * L)..<((i + 1) * L)]))
                cache.write(i, from: x.p)
                target.write(i, from: x.p)   // the block's input as target: the loss is the size of its update
            }
        }
        let loss = try BlockRunner(config: c, length: L, chunk: 2, compute: compute).run(block, inputs: cache, targets: target,
                                                                                          advance: true)
        let out = try FloatBuffer(count: n * L * c.hidden)
        cache.gather(Array(0..<n), into: out.p)
        return (out.array, loss)
    }
    let (y32, l32) = try run(.f32), (y16, l16) = try run(.bf16)
    let scale = y32.map { abs(Double($0)) }.max()!
    let err = zip(y32, y16).map { abs(Double($0) - Double($1)) }.max()!
    #expect(y32 != y16, "bf16 products should not give float32's bits")
    #expect(err < 2e-2 * scale, "max error \(err) against max |y| \(scale)")
    #expect(l32 > 0 && abs(l16 / l32 - 1) < 0.02, "loss \(l16) vs \(l32)")
}
