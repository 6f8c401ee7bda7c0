/* Shared by the gated MLP forwards (mlp.c) and backwards (backward.c). */
#ifndef TQK_MLP_INTERNAL_H
#define TQK_MLP_INTERNAL_H

#include "vec.h"

/* sqrt(2 / pi), the constant of PyTorch's tanh approximation of GELU */
#define TQK_GELU_K 0.7978845608028654f
#define TQK_GELU_C 0.044715f

/* The tanh argument of gelu_tanh(x) = x (1 + tanh(k (x + c x^3))) / 2. */
static inline float tqk_gelu_inner(float x) { return TQK_GELU_K * (x + TQK_GELU_C * x * x * x); }

/* sigmoid on 8 lanes, 1 / (1 + exp(-x)) with tqk_exp8 (about an ulp from expf; its clamp keeps
 * the result finite, 0 < sig < 1 for very large |x|). Shared by the SwiGLU forward and backward. */
static inline __m256 tqk_sigmoid8(__m256 x) {
    __m256 one = _mm256_set1_ps(1.0f);
    return _mm256_div_ps(one, _mm256_add_ps(one, tqk_exp8(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}

#endif
