/* Private to the attention kernels (attention.c, backward.c): vectorised exp/tanh, horizontal
 * reductions, and the weighted sum of value rows. */
#ifndef TQK_ATTENTION_INTERNAL_H
#define TQK_ATTENTION_INTERNAL_H

#include "vec.h"
#include <immintrin.h>
#include <stdint.h>

/* tanh on 8 lanes as 1 - 2 / (exp(2x) + 1): tqk_exp8's clamp saturates it to +-1 (no overflow). */
static inline __m256 tanh8(__m256 x) {
    __m256 one = _mm256_set1_ps(1.0f), e = tqk_exp8(_mm256_add_ps(x, x));
    return _mm256_sub_ps(one, _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(e, one)));
}

/* Scaled scores s (8 lanes) soft-capped to cap tanh(s / cap) when cap > 0, with their derivative
 * dc/ds = 1 - tanh^2 in *slope (1 without a cap). */
static inline __m256 softcap8(__m256 s, float cap, __m256 *slope) {
    if (cap <= 0.0f) {
        *slope = _mm256_set1_ps(1.0f);
        return s;
    }
    __m256 t = tanh8(_mm256_mul_ps(s, _mm256_set1_ps(1.0f / cap)));
    *slope = _mm256_fnmadd_ps(t, t, _mm256_set1_ps(1.0f));
    return _mm256_mul_ps(t, _mm256_set1_ps(cap));
}

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

static inline float hmax8(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
}

/* out[d] = sum_{j < n} c[j] * rows[j * stride + d]: 64 outputs at a time live in registers while
 * the rows stream past, so there are no stores in the inner loop (unlike repeated axpy). */
static inline void wsum_rows(float *out, const float *c, const float *rows, int64_t stride, int64_t n, int64_t D) {
    int64_t d = 0;
    for (; d + 64 <= D; d += 64) {
        __m256 a[8];
        for (int k = 0; k < 8; k++) a[k] = _mm256_setzero_ps();
        for (int64_t j = 0; j < n; j++) {
            __m256 cj = _mm256_broadcast_ss(c + j);
            const float *r = rows + j * stride + d;
            for (int k = 0; k < 8; k++) a[k] = _mm256_fmadd_ps(cj, _mm256_loadu_ps(r + 8 * k), a[k]);
        }
        for (int k = 0; k < 8; k++) _mm256_storeu_ps(out + d + 8 * k, a[k]);
    }
    for (; d + 8 <= D; d += 8) {
        __m256 a = _mm256_setzero_ps();
        for (int64_t j = 0; j < n; j++) a = _mm256_fmadd_ps(_mm256_broadcast_ss(c + j), _mm256_loadu_ps(rows + j * stride + d), a);
        _mm256_storeu_ps(out + d, a);
    }
    for (; d < D; d++) {
        float a = 0.0f;
        for (int64_t j = 0; j < n; j++) a += c[j] * rows[j * stride + d];
        out[d] = a;
    }
}

#endif
