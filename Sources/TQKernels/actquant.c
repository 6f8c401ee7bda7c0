/* Fake quantisation of activations (QuaRot's ActQuantizer): per token, or per head of a token
 * for the KV cache, on a min/max grid computed from the values themselves at run time. */
#include "tq_kernels.h"
#include <math.h>

/* One group of n values in place. */
static void fakequant_group(float *x, int64_t n, float qmax_asym, float qmax_sym, int sym, float clip) {
    float lo = 0.0f, hi = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
    }
    if (sym) {
        float amax = fmaxf(-lo, hi) * clip;
        float scale = amax == 0.0f ? 1.0f : amax / qmax_sym;
        for (int64_t i = 0; i < n; i++) {
            float q = nearbyintf(x[i] / scale);
            q = q < -qmax_sym - 1.0f ? -qmax_sym - 1.0f : (q > qmax_sym ? qmax_sym : q);
            x[i] = q * scale;
        }
    } else {
        lo *= clip;
        hi *= clip;
        if (lo == 0.0f && hi == 0.0f) { lo = -1.0f; hi = 1.0f; }
        float scale = (hi - lo) / qmax_asym;
        float zero = nearbyintf(-lo / scale);
        for (int64_t i = 0; i < n; i++) {
            float q = nearbyintf(x[i] / scale) + zero;
            q = q < 0.0f ? 0.0f : (q > qmax_asym ? qmax_asym : q);
            x[i] = (q - zero) * scale;
        }
    }
}

void tqk_act_fakequant(float *x, int64_t rows, int64_t cols, int64_t group, int bits, int sym, float clip) {
    int64_t groups = cols / group;
    float qmax_asym = (float)((1 << bits) - 1), qmax_sym = (float)((1 << (bits - 1)) - 1);
    #pragma omp parallel for schedule(static) if (rows * cols > (1 << 15))
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t g = 0; g < groups; g++) fakequant_group(x + r * cols + g * group, group, qmax_asym, qmax_sym, sym, clip);
    }
}
