/* The AVX-512 sgemm micro-kernel and its blocking, run by the driver in gemm.c.
 *
 * The target's flags are AVX2 only, so the functions here are compiled for AVX-512 by the pragma
 * below; the driver calls them only when tqk_use_avx512() (CPU support checked at run time).
 *
 * Why 14x32: 28 zmm accumulators + 2 B vectors + 1 A broadcast = 31 of the 32 zmm registers,
 * 28 FMAs per 2 B loads and 14 broadcasts (folded into the FMAs as {1to16} memory operands).
 * The bf16 kernel (AVX512_BF16, used where tqk_use_dpbf16()) has the same shape. */
#include "gemm_internal.h"
#include <immintrin.h>

#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma"))), apply_to = function)

enum { MR = 14, NR = 32 };

/* C is touched only after the k loop: start pulling its lines in now. */
static inline void prefetch_c(float *C, int64_t ldc, int64_t mr) {
    for (int64_t r = 0; r < mr; r++) {
        _mm_prefetch((const char *)(C + r * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(C + r * ldc + 16), _MM_HINT_T0);
        _mm_prefetch((const char *)(C + r * ldc + NR - 1), _MM_HINT_T0);
    }
}

/* C = alpha * acc + beta * C on the mr x nr corner. Column masks for a partial tile: masked-off
 * lanes are neither loaded nor stored. */
static inline void store_tile(__m512 acc[MR][2], float *C, int64_t ldc, int64_t mr, int64_t nr, float alpha,
                              float beta) {
    __mmask16 mask[2] = {nr >= 16 ? 0xFFFF : (__mmask16)((1u << nr) - 1),
                         nr >= 32 ? 0xFFFF : nr > 16 ? (__mmask16)((1u << (nr - 16)) - 1) : 0};
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    for (int64_t r = 0; r < mr; r++) {
        float *c = C + r * ldc;
        for (int h = 0; h < 2; h++) {
            __m512 v = _mm512_mul_ps(acc[r][h], va);
            if (beta != 0.0f) v = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mask[h], c + 16 * h), v);
            _mm512_mask_storeu_ps(c + 16 * h, mask[h], v);
        }
    }
}

static void kernel_14x32(int64_t kc, const float *Ap, const float *Bp, float *C, int64_t ldc,
                         int64_t mr, int64_t nr, float alpha, float beta) {
    prefetch_c(C, ldc, mr);
    __m512 acc[MR][2];
    for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int64_t k = 0; k < kc; k++, Ap += MR, Bp += NR) {
        __m512 b0 = _mm512_load_ps(Bp), b1 = _mm512_load_ps(Bp + 16);
        for (int r = 0; r < MR; r++) {
            __m512 a = _mm512_set1_ps(Ap[r]);
            acc[r][0] = _mm512_fmadd_ps(a, b0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(a, b1, acc[r][1]);
        }
    }
    store_tile(acc, C, ldc, mr, nr, alpha, beta);
}

/* tqk_bf16_round8 on 16 lanes: to nearest, ties to even; NaN stays NaN, quiet; denormals kept
 * (vcvtneps2bf16 would flush them). */
static inline __m512i bf16_round16(__m512 x) {
    const __m512i hi = _mm512_set1_epi32((int)0xFFFF0000u);
    __m512i b = _mm512_castps_si512(x);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_and_si512(_mm512_add_epi32(b, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF))), hi);
    __m512i quiet = _mm512_or_si512(_mm512_and_si512(b, hi), _mm512_set1_epi32(0x00400000));
    return _mm512_mask_blend_epi32(_mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), r, quiet);
}

/* In place: pair p's words [p*width, (p+1)*width) lie at or before its rows' floats
 * [2p*width, (2p+2)*width), and both rows are read before the words are written. 16 lanes with
 * mask registers: AVX2's masked stores (vpmaskmovd) are microcoded and slow on AMD's cores, and
 * the A strips are 14 wide. */
void tqk_pack_bf16_pairs(float *strip, int64_t kc, int64_t width) {
    uint32_t *words = (uint32_t *)strip;
    for (int64_t k = 0; k < kc; k += 2) {
        const float *r0 = strip + k * width, *r1 = r0 + width;
        for (int64_t c = 0; c < width; c += 16) {
            __mmask16 m = width - c >= 16 ? 0xFFFF : (__mmask16)((1u << (width - c)) - 1);
            __m512i lo = bf16_round16(_mm512_maskz_loadu_ps(m, r0 + c));
            __m512i hi = k + 1 < kc ? bf16_round16(_mm512_maskz_loadu_ps(m, r1 + c)) : _mm512_setzero_si512();
            _mm512_mask_storeu_epi32(words + k / 2 * width + c, m, _mm512_or_si512(_mm512_srli_epi32(lo, 16), hi));
        }
    }
}

#pragma clang attribute pop

#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,fma"))), apply_to = function)

/* As kernel_14x32 on strips of bf16 pairs (tqk_pack_bf16_pairs): each vdpbf16ps adds two k's
 * products (exact in float32) to a float32 accumulator, so a k pair costs what one k costs in
 * float32. The A pair of a row is one 32-bit word, broadcast. */
static void kernel_bf16_14x32(int64_t kc, const float *Ap, const float *Bp, float *C, int64_t ldc,
                              int64_t mr, int64_t nr, float alpha, float beta) {
    prefetch_c(C, ldc, mr);
    const int32_t *a = (const int32_t *)Ap, *b = (const int32_t *)Bp;
    __m512 acc[MR][2];
    for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int64_t p = 0; p < (kc + 1) / 2; p++, a += MR, b += NR) {
        __m512bh b0 = (__m512bh)_mm512_load_si512(b), b1 = (__m512bh)_mm512_load_si512(b + 16);
        for (int r = 0; r < MR; r++) {
            __m512bh ar = (__m512bh)_mm512_set1_epi32(a[r]);
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], ar, b0);
            acc[r][1] = _mm512_dpbf16_ps(acc[r][1], ar, b1);
        }
    }
    store_tile(acc, C, ldc, mr, nr, alpha, beta);
}

#pragma clang attribute pop

/* kc: a 32-wide B strip (256*32*4 = 32 KB) stays in the 48 KB L1; mc: the packed A block
 * (336*256*4 = 336 KB) stays in the 2 MB L2. Tall tasks and only 2 per thread, because at twice
 * the AVX2 speed the traffic matters more: every task re-reads its B columns from L3 and
 * every split of N packs A again. */
const tqk_sgemm_arch tqk_sgemm_avx512 = {MR, NR, 256, 336, 2, kernel_14x32, NULL};
const tqk_sgemm_arch tqk_sgemm_avx512_rounded = {MR, NR, 256, 336, 2, kernel_14x32, tqk_pack_round_bf16};
/* A pair of k's in bf16 takes the bytes of one float32: kc twice as deep for the same L1 strip. */
const tqk_sgemm_arch tqk_sgemm_avx512_bf16 = {MR, NR, 512, 336, 2, kernel_bf16_14x32, tqk_pack_bf16_pairs};
