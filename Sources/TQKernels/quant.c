/* The uniform per-group weight quantizer: grid (scale, zero), codes, dequantisation. */
#include "tq_kernels.h"
#include "grid_internal.h"

void tqk_quant_grid(const float *W, int64_t out, int64_t in, int64_t group, int bits, int sym,
                    float *scales, uint8_t *zeros) {
    int64_t n_groups = (in + group - 1) / group;
    #pragma omp parallel for schedule(static) if (out * in > (1 << 16))
    for (int64_t o = 0; o < out; o++) {
        const float *w = W + o * in;
        for (int64_t g = 0; g < n_groups; g++) {
            int64_t i0 = g * group, i1 = i0 + group < in ? i0 + group : in;
            float mn, mx, s, z;
            tqk_group_extremes(w, i0, i1, &mn, &mx);
            tqk_group_grid(mn, mx, bits, sym, &s, &z);
            scales[g * out + o] = s;
            zeros[g * out + o] = (uint8_t)z;
        }
    }
}

void tqk_quant_codes(const float *W, const float *scales, const uint8_t *zeros, int64_t out,
                     int64_t in, int64_t group, int bits, uint8_t *codes) {
    float qmax = (float)((1 << bits) - 1);
    #pragma omp parallel for schedule(static) if (out * in > (1 << 16))
    for (int64_t o = 0; o < out; o++)
        for (int64_t i = 0; i < in; i++) {
            int64_t g = i / group;
            float q = rintf(W[o * in + i] / scales[g * out + o]) + (float)zeros[g * out + o];
            codes[o * in + i] = (uint8_t)fminf(fmaxf(q, 0.0f), qmax);
        }
}

void tqk_dequant_codes(const uint8_t *codes, const float *scales, const uint8_t *zeros, int64_t out,
                       int64_t in, int64_t group, float *W) {
    #pragma omp parallel for schedule(static) if (out * in > (1 << 16))
    for (int64_t o = 0; o < out; o++)
        for (int64_t i = 0; i < in; i++) {
            int64_t g = i / group;
            W[o * in + i] = (float)((int)codes[o * in + i] - (int)zeros[g * out + o]) * scales[g * out + o];
        }
}
