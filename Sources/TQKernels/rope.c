/* Rotary position embedding, Hugging Face rotate_half layout: pairs (i, i + D/2). */
#include "tq_kernels.h"
#include <math.h>

void tqk_rope_tables(const float *inv_freq, int64_t half, int64_t n_pos, float *cos_t, float *sin_t) {
    for (int64_t p = 0; p < n_pos; p++)
        for (int64_t i = 0; i < half; i++) {
            float angle = (float)p * inv_freq[i];
            cos_t[p * half + i] = cosf(angle);
            sin_t[p * half + i] = sinf(angle);
        }
}

void tqk_rope(float *x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, const float *cos_t,
              const float *sin_t) {
    int64_t half = head_dim / 2;
    #pragma omp parallel for schedule(static) if (n_tokens * n_heads * head_dim > (1 << 15))
    for (int64_t t = 0; t < n_tokens; t++) {
        const float *c = cos_t + t * half, *s = sin_t + t * half;
        for (int64_t h = 0; h < n_heads; h++) {
            float *v = x + (t * n_heads + h) * head_dim;
            for (int64_t i = 0; i < half; i++) {
                float a = v[i], b = v[i + half];
                v[i] = a * c[i] - b * s[i];
                v[i + half] = b * c[i] + a * s[i];
            }
        }
    }
}
