/* Small AVX2 vector helpers shared by the kernels (internal; not part of tq_kernels.h). */
#ifndef TQK_VEC_H
#define TQK_VEC_H

#include <immintrin.h>
#include <stdint.h>

/* sum a[i] * b[i], 8 lanes at a time then a scalar tail */
static inline float tqk_dot(const float *a, const float *b, int64_t n) {
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
    float tmp[8];
    _mm256_storeu_ps(tmp, acc);
    float s = tmp[0] + tmp[1] + tmp[2] + tmp[3] + tmp[4] + tmp[5] + tmp[6] + tmp[7];
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

#endif
