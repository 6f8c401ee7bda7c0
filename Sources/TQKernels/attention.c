/* Causal grouped-query attention, one (head, query) row per task: scores over keys lo..t
 * (lo = 0, or t - window + 1 under a sliding window), soft-capped when softcap > 0 (Gemma 2:
 * cap tanh(s / cap), as transformers computes it, before the mask), softmax, weighted sum of values.
 * Query head h reads key/value head h / (H / KVH). */
#include "tq_kernels.h"
#include "vec.h"
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>

static inline void axpy(float *y, const float *x, float a, int64_t n) {
    __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}

/* One query row: o = softmax(capped scale q.k_j, j = lo..t) weighted sum of v_j, where key/value j
 * of this head is at K/V + j * stride; p holds at least t + 1 floats of scratch. */
static inline void attend_row(const float *q, const float *K, const float *V, float *o, int64_t lo, int64_t t,
                              int64_t stride, int64_t D, float scale, float softcap, float *p) {
    float mx = -INFINITY;
    for (int64_t j = lo; j <= t; j++) {
        p[j] = tqk_dot(q, K + j * stride, D) * scale;
        if (softcap > 0.0f) p[j] = softcap * tanhf(p[j] / softcap);
        mx = p[j] > mx ? p[j] : mx;
    }
    float sum = 0.0f;
    for (int64_t j = lo; j <= t; j++) {
        p[j] = expf(p[j] - mx);
        sum += p[j];
    }
    for (int64_t d = 0; d < D; d++) o[d] = 0.0f;
    for (int64_t j = lo; j <= t; j++) axpy(o, V + j * stride, p[j], D);
    float inv = 1.0f / sum;
    for (int64_t d = 0; d < D; d++) o[d] *= inv;
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
