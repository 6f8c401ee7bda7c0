import Testing
import TQKernels

/// Whether this CPU runs the AVX-512 kernels (tqk_set_avx512 turns them on only where it does).
let cpuHasAVX512: Bool = {
    defer { tqk_set_avx512(-1) }
    return tqk_set_avx512(1) == 1
}()

let noAVX512: Comment = "this CPU lacks AVX-512: the AVX-512 kernels are NOT tested here"

/// Whether this CPU (and OS) runs the AMX tile kernel.
let cpuHasAMX: Bool = {
    defer { tqk_set_avx512(-1); tqk_set_amx(-1) }
    tqk_set_avx512(1)
    return tqk_set_amx(1) == 1
}()

let noAMX: Comment = "this CPU or OS lacks AMX: the AMX kernel is NOT tested here"

/// Whether this CPU has AVX512_BF16, so tqk_set_dpbf16 can choose the vdpbf16ps kernel.
let cpuHasAVX512BF16: Bool = {
    defer { tqk_set_avx512(-1) }
    tqk_set_avx512(1)
    return tqk_use_avx512_bf16() == 1
}()

/// Runs `body` on the AVX-512 kernels (on) or the AVX2 ones, then returns to the process-wide
/// choice. The switch is per thread, so suites running in parallel do not change each other's path.
func withAVX512<R>(_ on: Bool, _ body: () throws -> R) rethrows -> R {
    #expect(tqk_set_avx512(on ? 1 : 0) == (on ? 1 : 0))
    defer { tqk_set_avx512(-1) }
    return try body()
}

/// Runs `body` with the AMX kernel on or off for this thread, then back to the process-wide choice.
func withAMX<R>(_ on: Bool, _ body: () throws -> R) rethrows -> R {
    #expect(tqk_set_amx(on ? 1 : 0) == (on ? 1 : 0))
    defer { tqk_set_amx(-1) }
    return try body()
}

/// x rounded to bfloat16 (to nearest, ties to even), written independently of the kernels.
func bf16Rounded(_ x: Float) -> Float {
    let b = x.bitPattern
    let up: UInt32 = (b & 0xFFFF) > 0x8000 || ((b & 0xFFFF) == 0x8000 && (b & 0x1_0000) != 0) ? 0x1_0000 : 0
    return Float(bitPattern: (b & 0xFFFF_0000) &+ up)
}

/// Runs `body` with tqk_gemm_bf16's vdpbf16ps kernel on or off for this thread (where the CPU has
/// AVX512_BF16 and the AVX-512 kernels are on), then back to the process-wide choice.
func withDPBF16<R>(_ on: Bool, _ body: () throws -> R) rethrows -> R {
    #expect(tqk_set_dpbf16(on ? 1 : 0) == (on && tqk_use_avx512_bf16() == 1 ? 1 : 0))
    defer { tqk_set_dpbf16(-1) }
    return try body()
}
