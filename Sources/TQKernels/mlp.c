/* Gated MLP activations: SwiGLU silu(g) * u (LLaMA) and GeGLU gelu_tanh(g) * u (Gemma). */
#include "tq_kernels.h"
#include "mlp_internal.h"
#include <math.h>

void tqk_swiglu(const float *g, const float *u, float *out, int64_t n) {
    #pragma omp parallel for schedule(static) if (n > (1 << 15))
    for (int64_t i = 0; i < n; i++) out[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void tqk_geglu(const float *g, const float *u, float *out, int64_t n) {
    #pragma omp parallel for schedule(static) if (n > (1 << 15))
    for (int64_t i = 0; i < n; i++) out[i] = 0.5f * g[i] * (1.0f + tanhf(tqk_gelu_inner(g[i]))) * u[i];
}
