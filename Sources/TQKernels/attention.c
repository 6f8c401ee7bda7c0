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
            int64_t t = T - 1 - task / H, h = task % H, kh = h / group, lo = tqk_window_start(t, window);
            const float *q = Q + (t * H + h) * D;
            float mx = -INFINITY;
            for (int64_t j = lo; j <= t; j++) {
                p[j] = tqk_dot(q, K + (j * KVH + kh) * D, D) * scale;
                if (softcap > 0.0f) p[j] = softcap * tanhf(p[j] / softcap);
                mx = p[j] > mx ? p[j] : mx;
            }
            float sum = 0.0f;
            for (int64_t j = lo; j <= t; j++) {
                p[j] = expf(p[j] - mx);
                sum += p[j];
            }
            float *o = O + (t * H + h) * D;
            for (int64_t d = 0; d < D; d++) o[d] = 0.0f;
            for (int64_t j = lo; j <= t; j++) axpy(o, V + (j * KVH + kh) * D, p[j], D);
            float inv = 1.0f / sum;
            for (int64_t d = 0; d < D; d++) o[d] *= inv;
        }
        free(p);
    }
}
