/* OmniQuant's learnable weight clipping (LWC): per group, the range [mn, mx] of the weights is
 * shrunk to [sig(beta) mn, sig(gamma) mx] before the grid (tqk_group_grid, exactly RTN's) is
 * taken; gamma and beta are trained through straight-through rounding (tq_kernels.h). */
#include "tq_kernels.h"
#include "grid_internal.h"

#define PAR_IF(n) if ((n) > (1 << 15))

static inline float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

/* The extremes of group g of row w, before and after clipping, and the group's grid. */
typedef struct {
    int64_t i0, i1;
    float mn, mx, sb, sg, s, z;
} lwc_group;

static inline lwc_group lwc_grid_of(const float *w, int64_t in, int64_t group, int64_t g, float gamma, float beta,
                                    int bits, int sym) {
    lwc_group r;
    r.i0 = g * group;
    r.i1 = r.i0 + group < in ? r.i0 + group : in;
    tqk_group_extremes(w, r.i0, r.i1, &r.mn, &r.mx);
    r.sg = sigmoid(gamma);
    r.sb = sigmoid(beta);
    tqk_group_grid(r.sb * r.mn, r.sg * r.mx, bits, sym, &r.s, &r.z);
    return r;
}

void tqk_lwc_grid(const float *W, const float *gamma, const float *beta, int64_t out, int64_t in, int64_t group,
                  int bits, int sym, float *scales, uint8_t *zeros) {
    int64_t n_groups = (in + group - 1) / group;
    #pragma omp parallel for schedule(static) PAR_IF(out * in)
    for (int64_t o = 0; o < out; o++)
        for (int64_t g = 0; g < n_groups; g++) {
            int64_t gi = o * n_groups + g;
            lwc_group r = lwc_grid_of(W + o * in, in, group, g, gamma[gi], beta[gi], bits, sym);
            scales[g * out + o] = r.s;
            zeros[g * out + o] = (uint8_t)r.z;
        }
}

void tqk_lwc_weights(const float *W, const float *gamma, const float *beta, int64_t out, int64_t in, int64_t group,
                     int bits, int sym, float *w_hat) {
    int64_t n_groups = (in + group - 1) / group;
    float qmax = (float)((1 << bits) - 1);
    #pragma omp parallel for schedule(static) PAR_IF(out * in)
    for (int64_t o = 0; o < out; o++)
        for (int64_t g = 0; g < n_groups; g++) {
            int64_t gi = o * n_groups + g;
            const float *w = W + o * in;
            lwc_group r = lwc_grid_of(w, in, group, g, gamma[gi], beta[gi], bits, sym);
            for (int64_t i = r.i0; i < r.i1; i++) {
                float q = fminf(fmaxf(rintf(w[i] / r.s) + r.z, 0.0f), qmax);
                w_hat[o * in + i] = (q - r.z) * r.s;
            }
        }
}

void tqk_lwc_backward(const float *W, const float *gamma, const float *beta, const float *dw, int64_t out, int64_t in,
                      int64_t group, int bits, int sym, float *dgamma, float *dbeta) {
    int64_t n_groups = (in + group - 1) / group;
    float qmax = (float)((1 << bits) - 1);
    double qdiv = sym ? (double)((1 << (bits - 1)) - 1) : (double)qmax; /* s = range / qdiv */
    #pragma omp parallel for schedule(static) PAR_IF(out * in)
    for (int64_t o = 0; o < out; o++)
        for (int64_t g = 0; g < n_groups; g++) {
            int64_t gi = o * n_groups + g;
            const float *w = W + o * in;
            const float *d = dw + o * in;
            lwc_group r = lwc_grid_of(w, in, group, g, gamma[gi], beta[gi], bits, sym);
            /* w_hat = (q - z) s with q = clamp(r(w/s) + z): where q is not clamped, dw_hat/ds =
             * q - z - w/s and z cancels; where it is, dw_hat/ds = q - z and dw_hat/dz = -s. */
            double ds = 0.0, dz = 0.0;
            for (int64_t i = r.i0; i < r.i1; i++) {
                float t = w[i] / r.s, u = rintf(t) + r.z;
                float q = fminf(fmaxf(u, 0.0f), qmax);
                if (u >= 0.0f && u <= qmax) ds += (double)d[i] * ((double)(q - r.z) - (double)t);
                else {
                    ds += (double)d[i] * (double)(q - r.z);
                    dz -= (double)d[i] * (double)r.s;
                }
            }
            double s = r.s, xmn = (double)(r.sb * r.mn), xmx = (double)(r.sg * r.mx);
            double dxmn = 0.0, dxmx = 0.0;
            if (sym) { /* s = max(|xmn|, |xmx|) / qdiv; z is constant */
                if (fmaxf(fabsf(r.sb * r.mn), fabsf(r.sg * r.mx)) >= 1e-5f) {
                    if (fabs(xmx) >= fabs(xmn)) dxmx = ds * (xmx < 0 ? -1.0 : 1.0) / qdiv;
                    else dxmn = ds * (xmn < 0 ? -1.0 : 1.0) / qdiv;
                }
            } else { /* s = (xmx - xmn) / qdiv, z = clamp(round(-xmn / s), 0, qmax) */
                float zu = -rintf(r.sb * r.mn / r.s);
                if (zu >= 0.0f && zu <= qmax) {
                    ds += dz * xmn / (s * s);
                    dxmn -= dz / s;
                }
                if (r.sg * r.mx - r.sb * r.mn >= 1e-5f) { /* at or above the floor of tqk_group_grid */
                    dxmx += ds / qdiv;
                    dxmn -= ds / qdiv;
                }
            }
            dgamma[gi] = (float)(dxmx * r.mx * r.sg * (1.0 - r.sg));
            dbeta[gi] = (float)(dxmn * r.mn * r.sb * (1.0 - r.sb));
        }
}
