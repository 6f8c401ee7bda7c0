/* The group grid of tqk_quant_grid (quant.c), shared with LWC (lwc.c) so a learned clipping
 * range is gridded exactly as RTN grids the plain range. */
#ifndef TQK_GRID_INTERNAL_H
#define TQK_GRID_INTERNAL_H

#include <immintrin.h>
#include <math.h>
#include <stdint.h>

static inline float tqk_round_to_f16(float s) {
    float r = _cvtsh_ss(_cvtss_sh(s, _MM_FROUND_TO_NEAREST_INT));
    return r > 0.0f ? r : 0x1p-24f; /* smallest positive float16 */
}

/* The smallest and largest of w[i0..i1), i1 > i0. */
static inline void tqk_group_extremes(const float *w, int64_t i0, int64_t i1, float *mn, float *mx) {
    float lo = w[i0], hi = w[i0];
    for (int64_t i = i0 + 1; i < i1; i++) {
        lo = w[i] < lo ? w[i] : lo;
        hi = w[i] > hi ? w[i] : hi;
    }
    *mn = lo;
    *mx = hi;
}

/* Scale (float16-rounded) and zero point of a group whose range is [mn, mx]. */
static inline void tqk_group_grid(float mn, float mx, int bits, int sym, float *s, float *z) {
    float qmax = (float)((1 << bits) - 1);
    if (sym) {
        float amax = fmaxf(fabsf(mn), fabsf(mx));
        *s = tqk_round_to_f16(fmaxf(amax, 1e-5f) / (float)((1 << (bits - 1)) - 1));
        *z = (float)(1 << (bits - 1));
    } else {
        *s = tqk_round_to_f16(fmaxf(mx - mn, 1e-5f) / qmax);
        *z = fminf(fmaxf(-rintf(mn / *s), 0.0f), qmax);
    }
}

#endif
