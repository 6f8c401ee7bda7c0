/* Gemma 2's final logit soft-capping: logits bounded to (-cap, cap) smoothly, as transformers
 * computes it (divide, tanh, multiply, in float32). */
#include "tq_kernels.h"
#include <math.h>

void tqk_softcap(float *x, int64_t n, float cap) {
    #pragma omp parallel for schedule(static) if (n > (1 << 15))
    for (int64_t i = 0; i < n; i++) x[i] = cap * tanhf(x[i] / cap);
}
