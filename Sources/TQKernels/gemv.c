/* Float matrix-vector product for one row of activations (a decoding step): the GEMM would pack
 * the whole weight for a single row; here each output is one dot product over a weight row. */
#include "tq_kernels.h"
#include "vec.h"

void tqk_sgemv(const float *W, const float *x, float *y, int64_t out, int64_t in) {
    #pragma omp parallel for schedule(static) if (out * in > 32768)
    for (int64_t o = 0; o < out; o++) y[o] = tqk_dot(W + o * in, x, in);
}
