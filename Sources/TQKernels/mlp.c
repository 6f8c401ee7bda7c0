/* Gated MLP activations: SwiGLU silu(g) * u (LLaMA) and GeGLU gelu_tanh(g) * u (Gemma). */
#include "tq_kernels.h"
#include "mlp_internal.h"
#include <math.h>

void tqk_swiglu(const float *g, const float *u, float *out, int64_t n) {
    #pragma omp parallel for schedule(static) if (n > (1 << 15))
    for (int64_t i = 0; i < n; i += 8) {
        __m256i m = tqk_lanes_below(n - i);
        __m256 gv = _mm256_maskload_ps(g + i, m);
        _mm256_maskstore_ps(out + i, m, _mm256_mul_ps(_mm256_mul_ps(gv, tqk_sigmoid8(gv)), _mm256_maskload_ps(u + i, m)));
    }
}

void tqk_geglu(const float *g, const float *u, float *out, int64_t n) {
    #pragma omp parallel for schedule(static) if (n > (1 << 15))
    for (int64_t i = 0; i < n; i++) out[i] = 0.5f * g[i] * (1.0f + tanhf(tqk_gelu_inner(g[i]))) * u[i];
}
