/* Fused Adam step with classic L2 weight decay (decay added to the gradient), as torch.optim.Adam. */
#include "tq_kernels.h"
#include <immintrin.h>
#include <math.h>

/* No fma contraction: the scalar tail then rounds exactly as the vector body. */
#pragma clang fp contract(off)

void tqk_adam(float *p, const float *g, float *m, float *v, int64_t n, float lr, float beta1, float beta2, float eps,
              float wd, int64_t t) {
    /* Bias corrections once per call, in double; the per-element form is torch's:
     * p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps). */
    double bc1 = 1.0 - pow((double)beta1, (double)t), bc2 = 1.0 - pow((double)beta2, (double)t);
    float step = (float)((double)lr / bc1), rs2 = (float)(1.0 / sqrt(bc2));
    float b1 = beta1, c1 = 1.0f - beta1, b2 = beta2, c2 = 1.0f - beta2;
    /* Explicit AVX: sqrtf with errno semantics would keep the compiler from vectorising. */
    #pragma omp parallel for schedule(static) if (n > (1 << 16))
    for (int64_t blk = 0; blk < (n + 7) / 8; blk++) {
        int64_t i = blk * 8;
        if (i + 8 <= n) {
            __m256 vp = _mm256_loadu_ps(p + i), vg = _mm256_loadu_ps(g + i);
            vg = _mm256_add_ps(vg, _mm256_mul_ps(_mm256_set1_ps(wd), vp));
            __m256 vm = _mm256_add_ps(_mm256_mul_ps(_mm256_set1_ps(b1), _mm256_loadu_ps(m + i)),
                                      _mm256_mul_ps(_mm256_set1_ps(c1), vg));
            __m256 vv = _mm256_add_ps(_mm256_mul_ps(_mm256_set1_ps(b2), _mm256_loadu_ps(v + i)),
                                      _mm256_mul_ps(_mm256_set1_ps(c2), _mm256_mul_ps(vg, vg)));
            __m256 den = _mm256_add_ps(_mm256_mul_ps(_mm256_sqrt_ps(vv), _mm256_set1_ps(rs2)), _mm256_set1_ps(eps));
            vp = _mm256_sub_ps(vp, _mm256_div_ps(_mm256_mul_ps(_mm256_set1_ps(step), vm), den));
            _mm256_storeu_ps(m + i, vm);
            _mm256_storeu_ps(v + i, vv);
            _mm256_storeu_ps(p + i, vp);
        } else {
            for (; i < n; i++) { /* the same arithmetic, scalar, for the tail */
                float gi = g[i] + wd * p[i];
                m[i] = b1 * m[i] + c1 * gi;
                v[i] = b2 * v[i] + c2 * (gi * gi);
                p[i] -= (step * m[i]) / (sqrtf(v[i]) * rs2 + eps);
            }
        }
    }
}

/* x rounded to bfloat16 stochastically: the 16 bits dropped are compared with the noise r, so
 * E[result] = x (finite x; an overflow to infinity is left as is). */
static inline uint16_t bf16_stochastic(float x, uint32_t r) {
    union { float f; uint32_t u; } b = { x };
    if ((b.u & 0x7f800000u) == 0x7f800000u) return (uint16_t)(b.u >> 16);   /* inf, NaN */
    return (uint16_t)((b.u + (r & 0xffffu)) >> 16);
}

static inline float bf16_value(uint16_t h) {
    union { uint32_t u; float f; } b = { (uint32_t)h << 16 };
    return b.f;
}

/* splitmix64 of (seed, t, i): the rounding noise, independent of the thread that draws it. */
static inline uint64_t mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

void tqk_adam_bf16(float *p, const float *g, uint16_t *m, uint16_t *v, int64_t n, float lr, float beta1, float beta2,
                   float eps, float wd, int64_t t, uint64_t seed) {
    double bc1 = 1.0 - pow((double)beta1, (double)t), bc2 = 1.0 - pow((double)beta2, (double)t);
    float step = (float)((double)lr / bc1), rs2 = (float)(1.0 / sqrt(bc2));
    float b1 = beta1, c1 = 1.0f - beta1, b2 = beta2, c2 = 1.0f - beta2;
    uint64_t base = mix(seed ^ mix((uint64_t)t));
    #pragma omp parallel for schedule(static) if (n > (1 << 16))
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i] + wd * p[i];
        float mi = b1 * bf16_value(m[i]) + c1 * gi;
        float vi = b2 * bf16_value(v[i]) + c2 * (gi * gi);
        p[i] -= (step * mi) / (sqrtf(vi) * rs2 + eps);
        uint64_t r = mix(base + (uint64_t)i);
        m[i] = bf16_stochastic(mi, (uint32_t)r);
        v[i] = bf16_stochastic(vi, (uint32_t)(r >> 32));
    }
}
