/* Shared by the gated MLP forwards (mlp.c) and backwards (backward.c). */
#ifndef TQK_MLP_INTERNAL_H
#define TQK_MLP_INTERNAL_H

#include "vec.h"

/* sqrt(2 / pi), the constant of PyTorch's tanh approximation of GELU */
#define TQK_GELU_K 0.7978845608028654f
#define TQK_GELU_C 0.044715f

/* The tanh argument of gelu_tanh(x) = x (1 + tanh(k (x + c x^3))) / 2. */
static inline float tqk_gelu_inner(float x) { return TQK_GELU_K * (x + TQK_GELU_C * x * x * x); }

#endif
