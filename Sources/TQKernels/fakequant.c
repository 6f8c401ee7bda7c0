/* TesseraQ fake-quantised weights (ALGORITHM.md section 3): progressive adaptive rounding (PAR)
 * through rounding variables `a`, dequantisation scale tuning (DST) through per-group `v`.
 *
 * W is out x in, row-major; groups of `group` consecutive inputs (the last one partial).
 * Per-group arrays (s, z, v, dv) are [out x n_groups] here (row o's groups are contiguous).
 * state: 0 soft, 1 hard 0, 2 hard 1. */
#include "tq_kernels.h"
#include "vec.h"
#include <math.h>
#include <stdlib.h>

static inline float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

/* 1.2 sig - 0.1 before clamping. Contraction off: no fma here, so every kernel (and a plain
 * Swift reference) rounds h the same way, and hardening decisions agree everywhere. */
static inline float rect_from_sig(float sg) {
    #pragma clang fp contract(off)
    return 1.2f * sg - 0.1f;
}

static inline float rect_raw(float x) { return rect_from_sig(sigmoid(x)); }

/* h(x) = clamp(1.2 sig(x) - 0.1, 0, 1) */
static inline float rect(float x) {
    float h = rect_raw(x);
    return h < 0.0f ? 0.0f : (h > 1.0f ? 1.0f : h);
}

/* h'(x) = 1.2 sig (1 - sig) on the open range where the clamp is inactive, else 0. */
static inline float rect_grad(float x) {
    float sg = sigmoid(x);
    float raw = rect_raw(x);
    return (raw > 0.0f && raw < 1.0f) ? 1.2f * sg * (1.0f - sg) : 0.0f;
}

/* The rounding offset in {0, h(a), 1} according to the weight's state. */
static inline float offset(uint8_t st, float a) { return st == 0 ? rect(a) : (st == 2 ? 1.0f : 0.0f); }

#define PAR_IF(n) if ((n) > (1 << 15))

/* 8 weights' rounding offsets ({0, h(a), 1} by state) and, in *hgrad, h'(a) for soft weights
 * inside the clamp's open range (0 elsewhere). sig comes from tqk_exp8, about an ulp from expf:
 * these feed the training forward and backward only; hardening and codes use rect() above. */
static inline __m256 offset8(const uint8_t *st, const float *a, __m256 *hgrad) {
    __m256i state = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)st));
    __m256 soft = _mm256_castsi256_ps(_mm256_cmpeq_epi32(state, _mm256_setzero_si256()));
    __m256 one = _mm256_castsi256_ps(_mm256_cmpeq_epi32(state, _mm256_set1_epi32(2)));
    __m256 sg = tqk_sigmoid8(_mm256_loadu_ps(a));
    __m256 raw = _mm256_sub_ps(_mm256_mul_ps(_mm256_set1_ps(1.2f), sg), _mm256_set1_ps(0.1f));
    __m256 h = _mm256_min_ps(_mm256_max_ps(raw, _mm256_setzero_ps()), _mm256_set1_ps(1.0f));
    if (hgrad) {
        __m256 open = _mm256_and_ps(_mm256_cmp_ps(raw, _mm256_setzero_ps(), _CMP_GT_OQ),
                                    _mm256_cmp_ps(raw, _mm256_set1_ps(1.0f), _CMP_LT_OQ));
        __m256 g = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(1.2f), sg), _mm256_sub_ps(_mm256_set1_ps(1.0f), sg));
        *hgrad = _mm256_and_ps(g, _mm256_and_ps(open, soft));
    }
    return _mm256_blendv_ps(_mm256_and_ps(one, _mm256_set1_ps(1.0f)), h, soft);
}

/* One group's n weights: w_hat = (clamp(fl + offset + zz, 0, qmax) - zz) * deq. */
static void fq_group(const float *fl, const float *a, const uint8_t *state, int64_t n, float zz, float deq, float qmax,
                     float *w_hat) {
    __m256 vz = _mm256_set1_ps(zz), vd = _mm256_set1_ps(deq), vq = _mm256_set1_ps(qmax);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 u = _mm256_add_ps(_mm256_add_ps(_mm256_loadu_ps(fl + i), offset8(state + i, a + i, NULL)), vz);
        __m256 q = _mm256_min_ps(_mm256_max_ps(u, _mm256_setzero_ps()), vq);
        _mm256_storeu_ps(w_hat + i, _mm256_mul_ps(_mm256_sub_ps(q, vz), vd));
    }
    for (; i < n; i++) {
        float q = fminf(fmaxf(fl[i] + offset(state[i], a[i]) + zz, 0.0f), qmax);
        w_hat[i] = (q - zz) * deq;
    }
}

void tqk_fq_weights(const float *fl, const float *a, const uint8_t *state, const float *s, const float *z,
                    const float *v, int64_t out, int64_t in, int64_t group, int bits, float *w_hat) {
    int64_t n_groups = (in + group - 1) / group;
    float qmax = (float)((1 << bits) - 1);
    #pragma omp parallel for schedule(static) PAR_IF(out * in)
    for (int64_t o = 0; o < out; o++)
        for (int64_t g = 0; g < n_groups; g++) {
            int64_t gi = o * n_groups + g, i0 = o * in + g * group;
            int64_t n = (g * group + group < in ? group : in - g * group);
            float deq = s[gi] * (2.0f * rect(v[gi])); /* the DST dequantisation scale */
            fq_group(fl + i0, a + i0, state + i0, n, z[gi], deq, qmax, w_hat + i0);
        }
}

/* One group's da (see tq_kernels.h); returns sum of dw * (q - zz) over it, for dv. */
static double fq_group_backward(const float *fl, const float *a, const uint8_t *state, const float *dw, int64_t n,
                                float zz, float deq, float qmax, float *da) {
    __m256 vz = _mm256_set1_ps(zz), vd = _mm256_set1_ps(deq), vq = _mm256_set1_ps(qmax), zero = _mm256_setzero_ps();
    __m256d acc0 = _mm256_setzero_pd(), acc1 = _mm256_setzero_pd();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 hg;
        __m256 u = _mm256_add_ps(_mm256_add_ps(_mm256_loadu_ps(fl + i), offset8(state + i, a + i, &hg)), vz);
        __m256 q = _mm256_min_ps(_mm256_max_ps(u, zero), vq), d = _mm256_loadu_ps(dw + i), qz = _mm256_sub_ps(q, vz);
        acc0 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(d)), _mm256_cvtps_pd(_mm256_castps256_ps128(qz)), acc0);
        acc1 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(d, 1)), _mm256_cvtps_pd(_mm256_extractf128_ps(qz, 1)), acc1);
        /* hg is 0 for hard weights; the mask also keeps a clamped code's da at exactly 0 */
        __m256 inside = _mm256_and_ps(_mm256_cmp_ps(u, zero, _CMP_GT_OQ), _mm256_cmp_ps(u, vq, _CMP_LT_OQ));
        __m256 g = _mm256_mul_ps(_mm256_mul_ps(d, vd), hg);
        _mm256_storeu_ps(da + i, _mm256_and_ps(g, _mm256_and_ps(inside, _mm256_cmp_ps(hg, zero, _CMP_NEQ_OQ))));
    }
    double lanes[4];
    _mm256_storeu_pd(lanes, _mm256_add_pd(acc0, acc1));
    double acc = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
    for (; i < n; i++) {
        /* one expf per soft weight serves both h(a) and h'(a); hard weights need none */
        float hw = state[i] == 2 ? 1.0f : 0.0f, hg = 0.0f;
        if (state[i] == 0) {
            float sg = sigmoid(a[i]), raw = rect_from_sig(sg);
            hw = raw < 0.0f ? 0.0f : (raw > 1.0f ? 1.0f : raw);
            hg = (raw > 0.0f && raw < 1.0f) ? 1.2f * sg * (1.0f - sg) : 0.0f;
        }
        float u = fl[i] + hw + zz;
        float q = fminf(fmaxf(u, 0.0f), qmax);
        acc += (double)dw[i] * (double)(q - zz);
        /* Hard weights are frozen (hg = 0); a clamped code passes no gradient to its rounding. */
        da[i] = (state[i] == 0 && u > 0.0f && u < qmax) ? dw[i] * deq * hg : 0.0f;
    }
    return acc;
}

void tqk_fq_backward(const float *fl, const float *a, const uint8_t *state, const float *s, const float *z,
                     const float *v, const float *dw, int64_t out, int64_t in, int64_t group, int bits, float *da,
                     float *dv) {
    int64_t n_groups = (in + group - 1) / group;
    float qmax = (float)((1 << bits) - 1);
    #pragma omp parallel for schedule(static) PAR_IF(out * in)
    for (int64_t o = 0; o < out; o++)
        for (int64_t g = 0; g < n_groups; g++) {
            int64_t gi = o * n_groups + g, i0 = o * in + g * group;
            int64_t n = (g * group + group < in ? group : in - g * group);
            float deq = s[gi] * (2.0f * rect(v[gi]));
            double acc = fq_group_backward(fl + i0, a + i0, state + i0, dw + i0, n, z[gi], deq, qmax, da + i0);
            dv[gi] = (float)(acc * (double)s[gi] * 2.0 * (double)rect_grad(v[gi]));
        }
}

void tqk_fq_init(const float *w, const float *s, int64_t out, int64_t in, int64_t group, float *fl, float *a,
                 uint8_t *state) {
    int64_t n_groups = (in + group - 1) / group;
    #pragma omp parallel for schedule(static) PAR_IF(out * in)
    for (int64_t o = 0; o < out; o++)
        for (int64_t i = 0; i < in; i++) {
            int64_t k = o * in + i;
            float x = w[k] / s[o * n_groups + i / group];
            float f = floorf(x);
            float r = x - f; /* exact (Sterbenz), in [0, 1) */
            fl[k] = f;
            /* inverse of h on its open range, in double so h(a) lands within float rounding of r */
            a[k] = (float)(-log(1.2 / ((double)r + 0.1) - 1.0));
            state[k] = 0;
        }
}

/* k-th smallest of x[0..n) (0-based), Hoare/Wirth selection with a median-of-3 pivot: O(n)
 * expected, and equal keys split evenly (many scores are exactly 0.5 late in the schedule).
 * On return x is partitioned around position k: x[i] <= x[k] for i < k, x[i] >= x[k] for i > k. */
static float select_kth(float *x, int64_t n, int64_t k) {
    int64_t lo = 0, hi = n - 1;
    while (hi > lo) {
        int64_t mid = lo + (hi - lo) / 2;
        float t;
        if (x[mid] < x[lo]) { t = x[mid]; x[mid] = x[lo]; x[lo] = t; }
        if (x[hi] < x[lo]) { t = x[hi]; x[hi] = x[lo]; x[lo] = t; }
        if (x[hi] < x[mid]) { t = x[hi]; x[hi] = x[mid]; x[mid] = t; }
        float pivot = x[mid];
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (x[i] < pivot) i++;
            while (x[j] > pivot) j--;
            if (i <= j) {
                t = x[i]; x[i] = x[j]; x[j] = t;
                i++;
                j--;
            }
        }
        /* [lo, j] <= pivot, (j, i) == pivot, [i, hi] >= pivot */
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else return x[k];
    }
    return x[k];
}

float tqk_fq_harden(const float *a, uint8_t *state, int64_t n, float q, int final_) {
    if (final_) {
        #pragma omp parallel for schedule(static) PAR_IF(n)
        for (int64_t i = 0; i < n; i++)
            if (state[i] == 0) state[i] = rect(a[i]) > 0.5f ? 2 : 1;
        return 0.0f;
    }
    if (n <= 0) return 0.0f;
    float *score = tqk_scratch_alloc((size_t)n * sizeof(float));
    if (!score) return 0.0f; /* counted by tqk_scratch_alloc; nothing hardened */

    /* Hard weights score 0.5, the largest possible score, so the sorted scores are the sorted
     * soft scores followed by n_hard copies of 0.5: select among the soft ones only. */
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++)
        if (state[i] == 0) score[m++] = fabsf(rect(a[i]) - 0.5f);

    /* numpy.quantile 'linear': virtual index q (n - 1), interpolate between its neighbours. */
    double pos = (double)q * (double)(n - 1);
    int64_t k = (int64_t)floor(pos);
    if (k < 0) k = 0;
    if (k > n - 1) k = n - 1;
    double gamma = pos - (double)k;
    double lo = 0.5, hi = 0.5;
    if (k < m) {
        lo = select_kth(score, m, k);
        if (k + 1 < m) { /* the (k+1)-th smallest is the minimum of the upper partition */
            float mn = score[k + 1];
            for (int64_t i = k + 2; i < m; i++) mn = score[i] < mn ? score[i] : mn;
            hi = mn;
        }
    }
    if (k + 1 > n - 1) hi = lo;
    tqk_scratch_free(score, (size_t)n * sizeof(float));
    return tqk_fq_harden_between(a, state, n, lo, hi, gamma);
}

float tqk_fq_harden_between(const float *a, uint8_t *state, int64_t n, double lo, double hi, double gamma) {
    /* numpy's _lerp: from whichever end is nearer, so the result stays monotone and exact at ends */
    double thr = gamma >= 0.5 ? hi - (hi - lo) * (1.0 - gamma) : lo + (hi - lo) * gamma;
    float t = (float)thr;

    float up = 0.5f + t, down = 0.5f - t;
    #pragma omp parallel for schedule(static) PAR_IF(n)
    for (int64_t i = 0; i < n; i++)
        if (state[i] == 0) {
            float h = rect(a[i]);
            if (h > up) state[i] = 2;
            else if (h < down) state[i] = 1;
        }
    return t;
}

void tqk_fq_scores(const float *a, const uint8_t *state, int64_t n, float *score) {
    #pragma omp parallel for schedule(static) PAR_IF(n)
    for (int64_t i = 0; i < n; i++) score[i] = state[i] == 0 ? fabsf(rect(a[i]) - 0.5f) : 0.5f;
}

int64_t tqk_count_le(const float *x, int64_t n, float t) {
    int64_t c = 0;
    #pragma omp parallel for schedule(static) reduction(+ : c) PAR_IF(n)
    for (int64_t i = 0; i < n; i++) c += x[i] <= t;
    return c;
}

void tqk_fq_codes(const float *fl, const float *a, const uint8_t *state, const float *z, int64_t out, int64_t in,
                  int64_t group, int bits, uint8_t *codes) {
    int64_t n_groups = (in + group - 1) / group;
    float qmax = (float)((1 << bits) - 1);
    #pragma omp parallel for schedule(static) PAR_IF(out * in)
    for (int64_t o = 0; o < out; o++)
        for (int64_t i = 0; i < in; i++) {
            int64_t k = o * in + i;
            float hb = state[k] == 2 ? 1.0f : (state[k] == 1 ? 0.0f : (rect(a[k]) > 0.5f ? 1.0f : 0.0f));
            float u = fl[k] + hb + z[o * n_groups + i / group];
            codes[k] = (uint8_t)fminf(fmaxf(u, 0.0f), qmax);
        }
}
