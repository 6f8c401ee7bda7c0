/* Float matrix-vector product for one row of activations (a decoding step): the GEMM would pack
 * the whole weight for a single row; here each output is one dot product over a weight row. */
#include "tq_kernels.h"
#include "vec.h"
#include <string.h>

void tqk_sgemv(const float *W, const float *x, float *y, int64_t out, int64_t in) {
    #pragma omp parallel for schedule(static) if (out * in > 32768)
    for (int64_t o = 0; o < out; o++) y[o] = tqk_dot(W + o * in, x, in);
}

/* One bfloat16 weight (any alignment) widened to float32: exact, a bf16 is a float32's high half. */
static inline float widen_bf16(const uint8_t *p) {
    uint16_t half;
    memcpy(&half, p, 2);
    uint32_t bits = (uint32_t)half << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* sum_i bf16(row[i]) * x[i]: 16 weights an iteration, in two accumulators so the loop is bound by
 * reading the row, not by the FMA latency. */
static float dot_bf16_avx2(const uint8_t *row, const float *x, int64_t in) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= in; i += 16) {
        __m256i h = _mm256_loadu_si256((const __m256i *)(row + i * 2));
        __m256 lo = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(h)), 16));
        __m256 hi = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_extracti128_si256(h, 1)), 16));
        a0 = _mm256_fmadd_ps(lo, _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(hi, _mm256_loadu_ps(x + i + 8), a1);
    }
    float t[8];
    _mm256_storeu_ps(t, _mm256_add_ps(a0, a1));
    float s = t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
    for (; i < in; i++) s += widen_bf16(row + i * 2) * x[i];
    return s;
}

/* The same on AVX-512: 32 weights (one cache line) an iteration. */
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma"))), apply_to = function)
static float dot_bf16_avx512(const uint8_t *row, const float *x, int64_t in) {
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= in; i += 32) {
        __m512i h = _mm512_loadu_si512(row + i * 2);
        __m512 lo = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(h)), 16));
        __m512 hi = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(h, 1)), 16));
        a0 = _mm512_fmadd_ps(lo, _mm512_loadu_ps(x + i), a0);
        a1 = _mm512_fmadd_ps(hi, _mm512_loadu_ps(x + i + 16), a1);
    }
    float s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    for (; i < in; i++) s += widen_bf16(row + i * 2) * x[i];
    return s;
}
#pragma clang attribute pop

/* As tqk_sgemv with W in bfloat16 (raw bytes, any alignment: a safetensors tensor may start at an
 * odd offset). A bf16 widened to float32 is exact, so each product is that of tqk_sgemv over the
 * widened weights. */
void tqk_gemv_bf16(const void *W, const float *x, float *y, int64_t out, int64_t in) {
    const uint8_t *w = W;
    float (*dot)(const uint8_t *, const float *, int64_t) = tqk_use_avx512() ? dot_bf16_avx512 : dot_bf16_avx2;
    #pragma omp parallel for schedule(static) if (out * in > 32768)
    for (int64_t o = 0; o < out; o++) y[o] = dot(w + o * in * 2, x, in);
}
