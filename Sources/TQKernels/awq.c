/* AWQ (ALGORITHM.md section 4): the hot loops of the scale search and the clip search.
 * The group grid below is the arithmetic of tqk_quant_grid / tqk_quant_codes / tqk_dequant_codes
 * (quant.c), repeated here so a searched candidate is quantized exactly as the exported RTN is. */
#include "tq_kernels.h"
#include "vec.h"
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>

static inline float awq_round_to_f16(float s) {
    float r = _cvtsh_ss(_cvtss_sh(s, _MM_FROUND_TO_NEAREST_INT));
    return r > 0.0f ? r : 0x1p-24f; /* smallest positive float16 */
}

/* Scale and zero point of a group with extremes mn, mx (as tqk_quant_grid). */
static inline void awq_grid(float mn, float mx, int bits, int sym, float *s, float *z) {
    float qmax = (float)((1 << bits) - 1);
    if (sym) {
        float amax = fmaxf(fabsf(mn), fabsf(mx));
        *s = awq_round_to_f16(fmaxf(amax, 1e-5f) / (float)((1 << (bits - 1)) - 1));
        *z = (float)(1 << (bits - 1));
    } else {
        *s = awq_round_to_f16(fmaxf(mx - mn, 1e-5f) / qmax);
        *z = fminf(fmaxf(-rintf(mn / *s), 0.0f), qmax);
    }
}

/* Quantize-dequantize one value on the grid (s, z) (as tqk_quant_codes then tqk_dequant_codes). */
static inline float awq_fq(float w, float s, float z, float qmax) {
    float q = fminf(fmaxf(rintf(w / s) + z, 0.0f), qmax);
    return (q - z) * s;
}

void tqk_awq_fake_quant(const float *W, const float *s, int64_t out, int64_t in, int64_t group, int bits, int sym,
                        float *W_out) {
    int64_t n_groups = (in + group - 1) / group;
    float qmax = (float)((1 << bits) - 1);
    #pragma omp parallel
    {
        float *buf = tqk_alloc((size_t)group * sizeof(float));
        #pragma omp for schedule(static)
        for (int64_t o = 0; o < out; o++) {
            if (!buf) continue; /* counted by tqk_alloc */
            const float *w = W + o * in;
            float *y = W_out + o * in;
            for (int64_t g = 0; g < n_groups; g++) {
                int64_t i0 = g * group, n = i0 + group < in ? group : in - i0;
                float mn = INFINITY, mx = -INFINITY;
                for (int64_t j = 0; j < n; j++) {
                    float v = s ? w[i0 + j] * s[i0 + j] : w[i0 + j];
                    buf[j] = v;
                    mn = v < mn ? v : mn;
                    mx = v > mx ? v : mx;
                }
                float gs, gz;
                awq_grid(mn, mx, bits, sym, &gs, &gz);
                for (int64_t j = 0; j < n; j++) {
                    float d = awq_fq(buf[j], gs, gz, qmax);
                    y[i0 + j] = s ? d / s[i0 + j] : d;
                }
            }
        }
        free(buf);
    }
}

void tqk_awq_weight_mean(const float *W, int64_t out, int64_t in, int64_t group, float *mean) {
    int64_t n_groups = (in + group - 1) / group;
    #pragma omp parallel for schedule(static) if (out * in > (1 << 16))
    for (int64_t g = 0; g < n_groups; g++) {
        int64_t i0 = g * group, n = i0 + group < in ? group : in - i0;
        double *acc = tqk_alloc_zeroed((size_t)n, sizeof(double));
        if (!acc) continue;
        for (int64_t o = 0; o < out; o++) {
            const float *w = W + o * in + i0;
            float mx = 0.0f;
            for (int64_t j = 0; j < n; j++) mx = fmaxf(mx, fabsf(w[j]));
            if (mx > 0.0f)
                for (int64_t j = 0; j < n; j++) acc[j] += (double)(fabsf(w[j]) / mx);
        }
        for (int64_t j = 0; j < n; j++) mean[i0 + j] = (float)(acc[j] / (double)out);
        free(acc);
    }
}

void tqk_awq_abs_sum(const float *X, int64_t rows, int64_t cols, double *acc) {
    enum { CB = 64 };
    int64_t n_blocks = (cols + CB - 1) / CB;
    #pragma omp parallel for schedule(static) if (rows * cols > (1 << 16))
    for (int64_t b = 0; b < n_blocks; b++) {
        int64_t c0 = b * CB, c1 = c0 + CB < cols ? c0 + CB : cols;
        double local[CB] = {0};
        for (int64_t r = 0; r < rows; r++) {
            const float *x = X + r * cols;
            for (int64_t c = c0; c < c1; c++) local[c - c0] += (double)fabsf(x[c]);
        }
        for (int64_t c = c0; c < c1; c++) acc[c] += local[c - c0];
    }
}

/* The grid of a group clipped to [c*mn, c*mx], and the clipped, quantized values minus the originals. */
static inline void awq_clip_delta(const float *w, int64_t n, float mn, float mx, float c, int bits, int sym, float qmax,
                                  float *dw) {
    float lo = c * mn, hi = c * mx;
    float cmn = INFINITY, cmx = -INFINITY;
    for (int64_t j = 0; j < n; j++) {
        float v = fminf(fmaxf(w[j], lo), hi);
        cmn = v < cmn ? v : cmn;
        cmx = v > cmx ? v : cmx;
    }
    float gs, gz;
    awq_grid(cmn, cmx, bits, sym, &gs, &gz);
    for (int64_t j = 0; j < n; j++) dw[j] = awq_fq(fminf(fmaxf(w[j], lo), hi), gs, gz, qmax) - w[j];
}

static inline void awq_group_extremes(const float *w, int64_t n, float *mn, float *mx) {
    float a = w[0], b = w[0];
    for (int64_t j = 1; j < n; j++) {
        a = w[j] < a ? w[j] : a;
        b = w[j] > b ? w[j] : b;
    }
    *mn = a;
    *mx = b;
}

void tqk_awq_gram_accumulate(const float *X, int64_t rows, int64_t in, int64_t step, int64_t group, float *gram) {
    if (rows <= 0 || in <= 0 || step <= 0) return;
    int64_t n_groups = (in + group - 1) / group, m = (rows + step - 1) / step;
    /* Every step-th row is a row of a matrix with leading dimension step * in. */
    for (int64_t g = 0; g < n_groups; g++) {
        int64_t i0 = g * group, n = i0 + group < in ? group : in - i0;
        tqk_sgemm(1, 0, n, n, m, 1.0f, X + i0, step * in, X + i0, step * in, 1.0f, gram + g * group * group, group);
    }
}

void tqk_awq_clip_search_gram(float *W, int64_t out, int64_t in, int64_t group, int bits, int sym, const float *gram,
                              int64_t n_tokens, const float *shrink, int64_t n_shrink, float *chosen, float *err_first,
                              float *err_best) {
    if (out <= 0 || in <= 0 || n_tokens <= 0 || n_shrink <= 0) return;
    int64_t n_groups = (in + group - 1) / group;
    float qmax = (float)((1 << bits) - 1);
    double inv_t = 1.0 / (double)n_tokens;
    #pragma omp parallel
    {
        float *dw = tqk_alloc((size_t)group * sizeof(float));
        #pragma omp for schedule(static)
        for (int64_t o = 0; o < out; o++) {
            if (!dw) continue;
            float *w = W + o * in;
            for (int64_t g = 0; g < n_groups; g++) {
                int64_t i0 = g * group, n = i0 + group < in ? group : in - i0;
                const float *G = gram + g * group * group;
                float mn, mx;
                awq_group_extremes(w + i0, n, &mn, &mx);
                double best = INFINITY;
                int64_t best_k = 0;
                for (int64_t k = 0; k < n_shrink; k++) {
                    awq_clip_delta(w + i0, n, mn, mx, shrink[k], bits, sym, qmax, dw);
                    double e = 0.0;
                    for (int64_t i = 0; i < n; i++) e += (double)dw[i] * (double)tqk_dot(G + i * group, dw, n);
                    e *= inv_t;
                    if (k == 0 && err_first) err_first[o * n_groups + g] = (float)e;
                    if (e < best) {
                        best = e;
                        best_k = k;
                    }
                }
                float c = shrink[best_k], lo = c * mn, hi = c * mx;
                for (int64_t j = 0; j < n; j++) w[i0 + j] = fminf(fmaxf(w[i0 + j], lo), hi);
                if (chosen) chosen[o * n_groups + g] = c;
                if (err_best) err_best[o * n_groups + g] = (float)best;
            }
        }
        free(dw);
    }
}

/* Direct path (groups wider than the token subsample, e.g. per-channel): per candidate,
 * E_g = dW_g X_g^T [out x n_tokens] by GEMM, error = row sums of squares. */
static void clip_search_direct(float *W, int64_t out, int64_t in, int64_t group, int bits, int sym, const float *X,
                               int64_t n_tokens, const float *shrink, int64_t n_shrink, float *chosen,
                               float *err_first, float *err_best) {
    int64_t n_groups = (in + group - 1) / group;
    float qmax = (float)((1 << bits) - 1);
    float *dW = tqk_alloc((size_t)out * in * sizeof(float));
    float *E = tqk_alloc((size_t)out * n_tokens * sizeof(float));
    float *ext = tqk_alloc((size_t)out * n_groups * 2 * sizeof(float));
    double *best = tqk_alloc((size_t)out * n_groups * sizeof(double));
    int64_t *best_k = tqk_alloc((size_t)out * n_groups * sizeof(int64_t));
    if (!dW || !E || !ext || !best || !best_k) goto done;
    #pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < out; o++)
        for (int64_t g = 0; g < n_groups; g++) {
            int64_t i0 = g * group, n = i0 + group < in ? group : in - i0;
            awq_group_extremes(W + o * in + i0, n, &ext[2 * (o * n_groups + g)], &ext[2 * (o * n_groups + g) + 1]);
            best[o * n_groups + g] = INFINITY;
            best_k[o * n_groups + g] = 0;
        }
    double inv_t = 1.0 / (double)n_tokens;
    for (int64_t k = 0; k < n_shrink; k++) {
        #pragma omp parallel for schedule(static)
        for (int64_t o = 0; o < out; o++)
            for (int64_t g = 0; g < n_groups; g++) {
                int64_t i0 = g * group, n = i0 + group < in ? group : in - i0;
                const float *e2 = &ext[2 * (o * n_groups + g)];
                awq_clip_delta(W + o * in + i0, n, e2[0], e2[1], shrink[k], bits, sym, qmax, dW + o * in + i0);
            }
        for (int64_t g = 0; g < n_groups; g++) {
            int64_t i0 = g * group, n = i0 + group < in ? group : in - i0;
            tqk_sgemm(0, 1, out, n_tokens, n, 1.0f, dW + i0, in, X + i0, in, 0.0f, E, n_tokens);
            #pragma omp parallel for schedule(static)
            for (int64_t o = 0; o < out; o++) {
                const float *e = E + o * n_tokens;
                double ss = 0.0;
                for (int64_t t = 0; t < n_tokens; t++) ss += (double)e[t] * (double)e[t];
                ss *= inv_t;
                int64_t idx = o * n_groups + g;
                if (k == 0 && err_first) err_first[idx] = (float)ss;
                if (ss < best[idx]) {
                    best[idx] = ss;
                    best_k[idx] = k;
                }
            }
        }
    }
    #pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < out; o++)
        for (int64_t g = 0; g < n_groups; g++) {
            int64_t idx = o * n_groups + g, i0 = g * group, n = i0 + group < in ? group : in - i0;
            float c = shrink[best_k[idx]], lo = c * ext[2 * idx], hi = c * ext[2 * idx + 1];
            float *w = W + o * in + i0;
            for (int64_t j = 0; j < n; j++) w[j] = fminf(fmaxf(w[j], lo), hi);
            if (chosen) chosen[idx] = c;
            if (err_best) err_best[idx] = (float)best[idx];
        }
done:
    free(dW);
    free(E);
    free(ext);
    free(best);
    free(best_k);
}

void tqk_awq_clip_search(float *W, int64_t out, int64_t in, int64_t group, int bits, int sym, const float *X,
                         int64_t n_tokens, const float *shrink, int64_t n_shrink, int mode, float *chosen,
                         float *err_first, float *err_best) {
    if (out <= 0 || in <= 0 || n_tokens <= 0 || n_shrink <= 0) return;
    if (mode == 1 || (mode == 0 && group <= n_tokens)) {
        float *gram = tqk_alloc_zeroed((size_t)((in + group - 1) / group) * group * group, sizeof(float));
        if (!gram) return;
        tqk_awq_gram_accumulate(X, n_tokens, in, 1, group, gram);
        tqk_awq_clip_search_gram(W, out, in, group, bits, sym, gram, n_tokens, shrink, n_shrink, chosen, err_first, err_best);
        free(gram);
    } else {
        clip_search_direct(W, out, in, group, bits, sym, X, n_tokens, shrink, n_shrink, chosen, err_first, err_best);
    }
}
