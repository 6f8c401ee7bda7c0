/* Float format conversions and small element-wise ops. */
#include "tq_kernels.h"
#include <immintrin.h>
#include <string.h>

/* src may be misaligned: it is only read through unaligned vector loads and memcpy. */
void tqk_f16_to_f32(const void *src, float *dst, int64_t n) {
    const uint8_t *bytes = src;
    #pragma omp parallel for schedule(static) if (n > (1 << 16))
    for (int64_t b = 0; b < (n + 7) / 8; b++) {
        int64_t i = b * 8;
        if (i + 8 <= n) {
            _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(bytes + i * 2))));
        } else {
            uint16_t tmp[8] = {0};
            float out[8];
            memcpy(tmp, bytes + i * 2, (size_t)(n - i) * 2);
            _mm256_storeu_ps(out, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)tmp)));
            memcpy(dst + i, out, (size_t)(n - i) * 4);
        }
    }
}

void tqk_bf16_to_f32(const void *src, float *dst, int64_t n) {
    const uint8_t *bytes = src;
    #pragma omp parallel for schedule(static) if (n > (1 << 16))
    for (int64_t i = 0; i < n; i++) {
        uint16_t half;
        memcpy(&half, bytes + i * 2, 2);
        uint32_t bits = (uint32_t)half << 16;
        memcpy(dst + i, &bits, 4);
    }
}

void tqk_f32_to_f16(const float *src, uint16_t *dst, int64_t n) {
    #pragma omp parallel for schedule(static) if (n > (1 << 16))
    for (int64_t b = 0; b < (n + 7) / 8; b++) {
        int64_t i = b * 8;
        float in[8] = {0};
        uint16_t out[8];
        int64_t m = n - i < 8 ? n - i : 8;
        memcpy(in, src + i, (size_t)m * 4);
        _mm_storeu_si128((__m128i *)out, _mm256_cvtps_ph(_mm256_loadu_ps(in), _MM_FROUND_TO_NEAREST_INT));
        memcpy(dst + i, out, (size_t)m * 2);
    }
}

/* Round to nearest even; NaN stays NaN (quiet bit forced). */
void tqk_f32_to_bf16(const float *src, uint16_t *dst, int64_t n) {
    #pragma omp parallel for schedule(static) if (n > (1 << 16))
    for (int64_t i = 0; i < n; i++) {
        uint32_t x;
        memcpy(&x, src + i, 4);
        if ((x & 0x7fffffffu) > 0x7f800000u) {
            dst[i] = (uint16_t)((x >> 16) | 0x40);
        } else {
            dst[i] = (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
        }
    }
}

void tqk_add(float *y, const float *x, int64_t n) {
    #pragma omp parallel for schedule(static) if (n > (1 << 16))
    for (int64_t i = 0; i < n; i++) y[i] += x[i];
}

void tqk_add_bias(float *y, const float *b, int64_t rows, int64_t cols) {
    #pragma omp parallel for schedule(static) if (rows * cols > (1 << 16))
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) y[r * cols + c] += b[c];
}

void tqk_embed(const float *table, const uint32_t *ids, int64_t n, int64_t dim, float *out) {
    for (int64_t t = 0; t < n; t++) memcpy(out + t * dim, table + (int64_t)ids[t] * dim, (size_t)dim * 4);
}
