/* Causal grouped-query attention, one (head, query) row per task: scores over keys lo..t
 * (lo = 0, or t - window + 1 under a sliding window), soft-capped when softcap > 0 (Gemma 2:
 * cap tanh(s / cap), as transformers computes it, before the mask), softmax, weighted sum of values
 * (the values' rows stream past outputs held in registers: wsum_rows, shared with the backward).
 * Query head h reads key/value head h / (H / KVH). */
#include "tq_kernels.h"
#include "attention_internal.h"
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>

/* q.k_j for the 8 keys at K + j * stride, j < 8: eight independent FMA chains over d, then one
 * transpose and add gives the 8 dot products in one vector (no horizontal sum per key). */
static inline __m256 dots8(const float *q, const float *K, int64_t stride, int64_t D) {
    __m256 a[8];
    for (int k = 0; k < 8; k++) a[k] = _mm256_setzero_ps();
    int64_t d = 0;
    for (; d + 8 <= D; d += 8) {
        __m256 qv = _mm256_loadu_ps(q + d);
        for (int k = 0; k < 8; k++) a[k] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(K + k * stride + d), a[k]);
    }
    if (d < D) {
        __m256i m = tqk_lanes_below(D - d);
        __m256 qv = _mm256_maskload_ps(q + d, m);
        for (int k = 0; k < 8; k++) a[k] = _mm256_fmadd_ps(qv, _mm256_maskload_ps(K + k * stride + d, m), a[k]);
    }
    tqk_transpose8(a);
    return _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3])),
                         _mm256_add_ps(_mm256_add_ps(a[4], a[5]), _mm256_add_ps(a[6], a[7])));
}

/* One query row: o = softmax(capped scale q.k_j, j = lo..t) weighted sum of v_j, where key/value j
 * of this head is at K/V + j * stride; p holds at least t + 1 - lo floats of scratch. Scores,
 * the cap and exp run 8 keys at a time (tqk_exp8, tanh8: about an ulp from expf, tanhf); the result
 * depends only on (q, keys lo..t), so a cached row equals the full forward's. */
static inline void attend_row(const float *q, const float *K, const float *V, float *o, int64_t lo, int64_t t,
                              int64_t stride, int64_t D, float scale, float softcap, float *p) {
    int64_t n = t + 1 - lo;
    const float *k0 = K + lo * stride;
    const __m256 vscale = _mm256_set1_ps(scale);
    __m256 vmax = _mm256_set1_ps(-INFINITY), slope;
    for (int64_t j = 0; j < n; j += 8) {
        int64_t left = n - j;
        __m256 s;
        if (left >= 8) {
            s = dots8(q, k0 + j * stride, stride, D);
        } else { /* the last keys: no reads past key t */
            float tail[8] = {0};
            for (int64_t k = 0; k < left; k++) tail[k] = tqk_dot(q, k0 + (j + k) * stride, D);
            s = _mm256_loadu_ps(tail);
        }
        s = softcap8(_mm256_mul_ps(s, vscale), softcap, &slope);
        __m256i m = tqk_lanes_below(left);
        _mm256_maskstore_ps(p + j, m, s);
        vmax = _mm256_max_ps(vmax, _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), s, _mm256_castsi256_ps(m)));
    }
    __m256 vmx = _mm256_set1_ps(hmax8(vmax)), vsum = _mm256_setzero_ps();
    for (int64_t j = 0; j < n; j += 8) {
        __m256i m = tqk_lanes_below(n - j);
        __m256 e = _mm256_and_ps(tqk_exp8(_mm256_sub_ps(_mm256_maskload_ps(p + j, m), vmx)), _mm256_castsi256_ps(m));
        _mm256_maskstore_ps(p + j, m, e);
        vsum = _mm256_add_ps(vsum, e);
    }
    wsum_rows(o, p, V + lo * stride, stride, n, D);
    __m256 inv = _mm256_set1_ps(1.0f / hsum8(vsum));
    for (int64_t d = 0; d < D; d += 8) {
        __m256i m = tqk_lanes_below(D - d);
        _mm256_maskstore_ps(o + d, m, _mm256_mul_ps(_mm256_maskload_ps(o + d, m), inv));
    }
}

void tqk_attention(const float *Q, const float *K, const float *V, float *O, int64_t T, int64_t H,
                   int64_t KVH, int64_t D, float scale, int64_t window, float softcap) {
    int64_t group = H / KVH;
    #pragma omp parallel
    {
        float *p = tqk_alloc((size_t)T * sizeof(float));
        #pragma omp for schedule(static, 1)
        for (int64_t task = 0; task < H * T; task++) {
            if (!p) continue; /* counted by tqk_alloc */
            /* Round-robin over rows ordered longest first keeps threads balanced. (clang 21 emits
             * __kmpc_dispatch_deinit for dynamic schedules, which Debian's libomp 14 lacks.) */
            int64_t t = T - 1 - task / H, h = task % H;
            attend_row(Q + (t * H + h) * D, K + (h / group) * D, V + (h / group) * D, O + (t * H + h) * D,
                       tqk_window_start(t, window), t, KVH * D, D, scale, softcap, p);
        }
        free(p);
    }
}

void tqk_attention_cached(const float *Q, const float *K, const float *V, float *O, int64_t n, int64_t pos,
                          int64_t H, int64_t KVH, int64_t D, float scale, int64_t window, float softcap) {
    int64_t group = H / KVH, keys = pos + n;
    #pragma omp parallel
    {
        float *p = tqk_alloc((size_t)keys * sizeof(float));
        /* Heads outermost: a decode step (n = 1) still has H tasks to share. */
        #pragma omp for schedule(static)
        for (int64_t task = 0; task < H * n; task++) {
            if (!p) continue; /* counted by tqk_alloc */
            int64_t h = task / n, i = task % n, t = pos + i;
            attend_row(Q + (i * H + h) * D, K + (h / group) * D, V + (h / group) * D, O + (i * H + h) * D,
                       tqk_window_start(t, window), t, KVH * D, D, scale, softcap, p);
        }
        free(p);
    }
}
