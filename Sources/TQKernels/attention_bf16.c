/* Causal GQA attention, forward and backward, with its four products (Q K^T, P V, and in the
 * backward dO V^T, dS K, dS^T Q, P^T dO) on the bf16 GEMM: AMX tiles where the CPU has them (with
 * attend_row's float32 dot products attention was 31% of a bf16 training step). The softmax, the soft-cap
 * and dS stay float32; P and dS are rounded to bf16 only as GEMM operands (PyTorch's bf16 autocast
 * does the same).
 *
 * Tasks are blocks of QB queries of one head; a block sees the keys from its first query's window
 * start to its last query, so the scores of the keys past each query (at most QB - 1 per row) are
 * computed and masked. Each task calls the GEMM on its own thread (tqk_gemm_with inside a parallel
 * region runs serially), so the GEMM's packing is per block: O(n D) moves against O(QB n D)
 * multiply-adds for a block over n keys.
 *
 * The backward works one kv head at a time: pass A, per (query head of the group, query block),
 * recomputes P, forms dS = P (dP - rowsum(P dP)) slope scale and dQ = dS K, keeping P and dS
 * (T x T float32 per query head of the group: 2 group T^2 floats); pass B, per key block, sums
 * dK = dS^T Q and dV = P^T dO over the group's heads in head order. Every output has one writer
 * and a fixed summation order, so results do not depend on the thread count. */
#include "tq_kernels.h"
#include "attention_internal.h"
#include "gemm_internal.h"
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { QB = 128 }; /* queries per task, and keys per block in the backward's pass B */

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* r[0, a) = r[b, n) = 0 */
static void zero_outside(float *r, int64_t n, int64_t a, int64_t b) {
    memset(r, 0, (size_t)a * sizeof(float));
    memset(r + b, 0, (size_t)(n - b) * sizeof(float));
}

/* One row of scaled scores s[0, n): keys [a, b) are the query's. Soft-caps them (dc/ds into
 * slope[a, b) when slope is not NULL, 0 elsewhere), replaces them by their softmax (float32,
 * tqk_exp8), and zeroes s[0, a) and s[b, n). */
static void softmax_row(float *s, float *slope, int64_t n, int64_t a, int64_t b, float cap) {
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    __m256 vmax = ninf, vsum = _mm256_setzero_ps();
    for (int64_t j = a; j < b; j += 8) {
        __m256i m = tqk_lanes_below(b - j);
        __m256 g, x = softcap8(_mm256_maskload_ps(s + j, m), cap, &g);
        _mm256_maskstore_ps(s + j, m, x);
        if (slope) _mm256_maskstore_ps(slope + j, m, g);
        vmax = _mm256_max_ps(vmax, _mm256_blendv_ps(ninf, x, _mm256_castsi256_ps(m)));
    }
    __m256 vmx = _mm256_set1_ps(hmax8(vmax));
    for (int64_t j = a; j < b; j += 8) {
        __m256i m = tqk_lanes_below(b - j);
        __m256 e = _mm256_and_ps(tqk_exp8(_mm256_sub_ps(_mm256_maskload_ps(s + j, m), vmx)), _mm256_castsi256_ps(m));
        _mm256_maskstore_ps(s + j, m, e);
        vsum = _mm256_add_ps(vsum, e);
    }
    __m256 inv = _mm256_set1_ps(1.0f / hsum8(vsum));
    for (int64_t j = a; j < b; j += 8) {
        __m256i m = tqk_lanes_below(b - j);
        _mm256_maskstore_ps(s + j, m, _mm256_mul_ps(_mm256_maskload_ps(s + j, m), inv));
    }
    zero_outside(s, n, a, b);
    if (slope) zero_outside(slope, n, a, b);
}

/* P [m x n] (row stride ld) of queries t0 .. t0+m-1 of head h over keys c0 .. c0+n-1 of kv head kh,
 * n = t0 + m - c0: the GEMM, then the row softmaxes (slope rows, stride ld, when not NULL). */
static void block_probs(const tqk_sgemm_arch *arch, const float *Q, const float *K, int64_t H, int64_t KVH,
                        int64_t D, int64_t h, int64_t kh, int64_t t0, int64_t m, int64_t c0, float scale,
                        int64_t window, float cap, float *P, float *slope, int64_t ld) {
    int64_t n = t0 + m - c0;
    tqk_gemm_with(arch, 0, 1, m, n, D, scale, Q + (t0 * H + h) * D, H * D, K + (c0 * KVH + kh) * D, KVH * D, 0.0f,
                  P, ld);
    for (int64_t i = 0; i < m; i++) {
        int64_t t = t0 + i;
        softmax_row(P + i * ld, slope ? slope + i * ld : NULL, n, tqk_window_start(t, window) - c0, t + 1 - c0, cap);
    }
}

void tqk_attention_bf16(const float *Q, const float *K, const float *V, float *O, int64_t T, int64_t H,
                        int64_t KVH, int64_t D, float scale, int64_t window, float softcap) {
    const tqk_sgemm_arch *arch = tqk_gemm_bf16_arch();
    int64_t group = H / KVH, nb = (T + QB - 1) / QB;
    #pragma omp parallel
    {
        float *P = tqk_alloc((size_t)QB * T * sizeof(float));
        /* Longest blocks first, heads round-robin (static schedules only: see attention.c). */
        #pragma omp for schedule(static, 1)
        for (int64_t task = 0; task < H * nb; task++) {
            if (!P) continue; /* counted by tqk_alloc */
            int64_t r = nb - 1 - task / H, h = task % H, kh = h / group;
            int64_t t0 = r * QB, m = min64(QB, T - t0), c0 = tqk_window_start(t0, window), n = t0 + m - c0;
            block_probs(arch, Q, K, H, KVH, D, h, kh, t0, m, c0, scale, window, softcap, P, NULL, n);
            tqk_gemm_with(arch, 0, 0, m, D, n, 1.0f, P, n, V + (c0 * KVH + kh) * D, KVH * D, 0.0f,
                          O + (t0 * H + h) * D, H * D);
        }
        free(P);
    }
}

void tqk_attention_backward_bf16(const float *Q, const float *K, const float *V, const float *dO, float *dQ,
                                 float *dK, float *dV, int64_t T, int64_t H, int64_t KVH, int64_t D, float scale,
                                 int64_t window, float softcap) {
    if (T <= 0) return;
    const tqk_sgemm_arch *arch = tqk_gemm_bf16_arch();
    int64_t group = H / KVH, nb = (T + QB - 1) / QB;
    /* P and dS of the group's heads, row t column j at [g T^2 + t T + j], in one scratch buffer. */
    const size_t p_bytes = tqk_attention_backward_scratch_bytes(1, T, H, KVH, D), p_floats = p_bytes / 2 / sizeof(float);
    float *P = tqk_scratch_alloc(p_bytes), *dS = P ? P + p_floats : NULL;
    if (!P) goto done;

    #pragma omp parallel
    {
        float *slope = softcap > 0 ? tqk_alloc((size_t)QB * T * sizeof(float)) : NULL;
        for (int64_t kh = 0; kh < KVH; kh++) {
            /* Pass A: P, dS and dQ per (head of the group, query block), longest blocks first. */
            #pragma omp for schedule(static, 1)
            for (int64_t task = 0; task < group * nb; task++) {
                if (softcap > 0 && !slope) continue; /* counted by tqk_alloc */
                int64_t r = nb - 1 - task / group, g = task % group, h = kh * group + g;
                int64_t t0 = r * QB, m = min64(QB, T - t0), c0 = tqk_window_start(t0, window), n = t0 + m - c0;
                float *p = P + g * T * T + t0 * T, *ds = dS + g * T * T + t0 * T;
                block_probs(arch, Q, K, H, KVH, D, h, kh, t0, m, c0, scale, window, softcap, p + c0, slope, T);
                tqk_gemm_with(arch, 0, 1, m, n, D, 1.0f, dO + (t0 * H + h) * D, H * D, V + (c0 * KVH + kh) * D, KVH * D,
                              0.0f, ds + c0, T); /* dP */
                const __m256 vscale = _mm256_set1_ps(scale);
                for (int64_t i = 0; i < m; i++) {
                    float *pr = p + i * T + c0, *dr = ds + i * T + c0;
                    const float *sl = slope ? slope + i * T : NULL;
                    __m256 vdl = _mm256_setzero_ps();
                    for (int64_t j = 0; j < n; j += 8) {
                        __m256i msk = tqk_lanes_below(n - j);
                        vdl = _mm256_fmadd_ps(_mm256_maskload_ps(pr + j, msk), _mm256_maskload_ps(dr + j, msk), vdl);
                    }
                    __m256 delta = _mm256_set1_ps(hsum8(vdl));
                    for (int64_t j = 0; j < n; j += 8) { /* dS = P (dP - delta) slope scale: 0 where P is */
                        __m256i msk = tqk_lanes_below(n - j);
                        __m256 f = sl ? _mm256_mul_ps(vscale, _mm256_maskload_ps(sl + j, msk)) : vscale;
                        __m256 d = _mm256_sub_ps(_mm256_maskload_ps(dr + j, msk), delta);
                        _mm256_maskstore_ps(dr + j, msk, _mm256_mul_ps(_mm256_mul_ps(_mm256_maskload_ps(pr + j, msk), d), f));
                    }
                    /* Pass B reads whole key blocks: zero this row's keys before c0 within c0's block. */
                    int64_t z = c0 / QB * QB;
                    memset(p + i * T + z, 0, (size_t)(c0 - z) * sizeof(float));
                    memset(ds + i * T + z, 0, (size_t)(c0 - z) * sizeof(float));
                }
                tqk_gemm_with(arch, 0, 0, m, D, n, 1.0f, ds + c0, T, K + (c0 * KVH + kh) * D, KVH * D, 0.0f,
                              dQ + (t0 * H + h) * D, H * D);
            }
            /* Pass B: dK (even tasks) or dV (odd) of one key block, from the queries that see it,
             * summed over the group's heads in order. Longest blocks first. */
            #pragma omp for schedule(static, 1)
            for (int64_t task = 0; task < 2 * nb; task++) {
                int64_t c = task / 2, j0 = c * QB, kn = min64(QB, T - j0);
                int64_t t1 = window > 0 ? min64(T, j0 + kn - 1 + window) : T; /* queries j0 .. t1-1 */
                const float *X = task % 2 ? P : dS, *Y = task % 2 ? dO : Q;
                float *out = (task % 2 ? dV : dK) + (j0 * KVH + kh) * D;
                for (int64_t g = 0; g < group; g++)
                    tqk_gemm_with(arch, 1, 0, kn, D, t1 - j0, 1.0f, X + g * T * T + j0 * T + j0, T,
                                  Y + (j0 * H + kh * group + g) * D, H * D, g ? 1.0f : 0.0f, out, KVH * D);
            }
        }
        free(slope);
    }
done:
    tqk_scratch_free(P, p_bytes);
}
