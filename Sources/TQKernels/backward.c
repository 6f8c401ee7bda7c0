/* Backward passes of the block's non-linear ops (RMSNorm, RoPE, attention, SwiGLU) and the
 * block-output L2 loss. Weights of these ops are frozen during TesseraQ, so only input
 * gradients are computed. Layouts match the forward kernels (norm.c, rope.c, attention.c, mlp.c). */
#include "tq_kernels.h"
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>

/* ---- small AVX2 helpers (same as attention.c; static so each file keeps its own) ---- */
static inline float dot(const float *a, const float *b, int64_t n) {
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
    float s = _mm_cvtss_f32(s4);
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

/* y += a * x */
static inline void axpy(float *y, const float *x, float a, int64_t n) {
    __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}

/* ---- RMSNorm ----
 * y_i = w_i x_i r with r = (mean(x^2) + eps)^-1/2, and dr/dx_j = -r^3 x_j / dim, so
 * dx_j = r w_j dy_j - x_j r^3 c / dim with c = sum_i dy_i w_i x_i. r is computed exactly as the
 * forward does (double sum of squares, float rsqrt) so the gradient is of the function we run. */
void tqk_rmsnorm_backward(const float *x, const float *w, const float *dy, float *dx, int64_t rows, int64_t dim,
                          float eps) {
    #pragma omp parallel for schedule(static) if (rows * dim > (1 << 15))
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * dim, *dyr = dy + r * dim;
        float *dxr = dx + r * dim;
        double ss = 0.0, c = 0.0;
        for (int64_t i = 0; i < dim; i++) {
            ss += (double)xr[i] * xr[i];
            c += (double)dyr[i] * w[i] * xr[i];
        }
        float inv = 1.0f / sqrtf((float)(ss / (double)dim) + eps);
        float coef = (float)((double)inv * inv * inv * c / (double)dim);
        for (int64_t i = 0; i < dim; i++) dxr[i] = inv * w[i] * dyr[i] - coef * xr[i];
    }
}

/* ---- RoPE ----
 * The forward rotates each pair (i, i + half) by +angle; a rotation's transpose is the rotation
 * by -angle, which is the exact gradient of a linear map. */
void tqk_rope_backward(float *dx, int64_t n_tokens, int64_t n_heads, int64_t head_dim, const float *cos_t,
                       const float *sin_t) {
    int64_t half = head_dim / 2;
    #pragma omp parallel for schedule(static) if (n_tokens * n_heads * head_dim > (1 << 15))
    for (int64_t t = 0; t < n_tokens; t++) {
        const float *c = cos_t + t * half, *s = sin_t + t * half;
        for (int64_t h = 0; h < n_heads; h++) {
            float *v = dx + (t * n_heads + h) * head_dim;
            for (int64_t i = 0; i < half; i++) {
                float a = v[i], b = v[i + half];
                v[i] = a * c[i] + b * s[i];
                v[i + half] = b * c[i] - a * s[i];
            }
        }
    }
}

/* ---- causal GQA attention ----
 * Per query row (t, h): s_j = scale q.k_j (j <= t), p = softmax(s), o = sum p_j v_j. With
 * dp_j = dO.v_j and delta = sum_j p_j dp_j = dO.o:  ds_j = p_j (dp_j - delta),
 *   dq = scale sum_j ds_j k_j,   dk_j += scale ds_j q,   dv_j += p_j dO.
 * Two passes, FlashAttention-2 style, so no T x T matrix is stored and no two threads write the
 * same row (results do not depend on the thread count):
 *   1. per query row: recompute p, write dq, keep lse = log-sum-exp of s and delta;
 *   2. per (kv head, block of keys): loop over the queries that see the block, recompute
 *      p = exp(s - lse) and ds, accumulate dk, dv for the block in registers/L1. */
#define KEY_BLOCK 16

void tqk_attention_backward(const float *Q, const float *K, const float *V, const float *dO, float *dQ, float *dK,
                            float *dV, int64_t T, int64_t H, int64_t KVH, int64_t D, float scale) {
    int64_t group = H / KVH;
    float *lse = malloc((size_t)(T * H) * sizeof(float));
    float *delta = malloc((size_t)(T * H) * sizeof(float));

    #pragma omp parallel
    {
        float *p = malloc((size_t)T * sizeof(float));
        float *dp = malloc((size_t)T * sizeof(float));
        /* Pass 1. Head-major task order: concurrent rows share one head's K/V in cache; longest
         * rows first with round-robin chunks of 1 balance the triangle (static schedules only:
         * clang 21 emits __kmpc_dispatch_deinit for dynamic ones, which libomp 14 lacks). */
        #pragma omp for schedule(static, 1)
        for (int64_t task = 0; task < H * T; task++) {
            int64_t h = task / T, t = T - 1 - task % T, kh = h / group;
            const float *q = Q + (t * H + h) * D, *go = dO + (t * H + h) * D;
            float mx = -INFINITY;
            for (int64_t j = 0; j <= t; j++) {
                p[j] = dot(q, K + (j * KVH + kh) * D, D) * scale;
                mx = p[j] > mx ? p[j] : mx;
            }
            float sum = 0.0f;
            for (int64_t j = 0; j <= t; j++) {
                p[j] = expf(p[j] - mx);
                sum += p[j];
            }
            float inv = 1.0f / sum, dl = 0.0f;
            for (int64_t j = 0; j <= t; j++) {
                p[j] *= inv;
                dp[j] = dot(go, V + (j * KVH + kh) * D, D);
                dl += p[j] * dp[j];
            }
            float *dq = dQ + (t * H + h) * D;
            for (int64_t d = 0; d < D; d++) dq[d] = 0.0f;
            for (int64_t j = 0; j <= t; j++) axpy(dq, K + (j * KVH + kh) * D, scale * p[j] * (dp[j] - dl), D);
            lse[t * H + h] = mx + logf(sum);
            delta[t * H + h] = dl;
        }
        free(p);
        free(dp);
        /* (the implicit barrier of the omp for makes lse/delta complete before pass 2) */

        /* Pass 2. A task owns KEY_BLOCK rows of dK/dV of one kv head; block 0 sees the most
         * queries, so the same longest-first round robin. Accumulators are the output rows. */
        int64_t n_blocks = (T + KEY_BLOCK - 1) / KEY_BLOCK;
        #pragma omp for schedule(static, 1)
        for (int64_t task = 0; task < KVH * n_blocks; task++) {
            int64_t kh = task / n_blocks, j0 = (task % n_blocks) * KEY_BLOCK;
            int64_t j1 = j0 + KEY_BLOCK < T ? j0 + KEY_BLOCK : T;
            for (int64_t j = j0; j < j1; j++)
                for (int64_t d = 0; d < D; d++) {
                    dK[(j * KVH + kh) * D + d] = 0.0f;
                    dV[(j * KVH + kh) * D + d] = 0.0f;
                }
            for (int64_t t = j0; t < T; t++) {
                int64_t jend = t + 1 < j1 ? t + 1 : j1; /* causal: keys j <= t */
                for (int64_t h = kh * group; h < (kh + 1) * group; h++) {
                    const float *q = Q + (t * H + h) * D, *go = dO + (t * H + h) * D;
                    float l = lse[t * H + h], dl = delta[t * H + h];
                    for (int64_t j = j0; j < jend; j++) {
                        const float *k = K + (j * KVH + kh) * D, *v = V + (j * KVH + kh) * D;
                        float pj = expf(dot(q, k, D) * scale - l);
                        float ds = pj * (dot(go, v, D) - dl);
                        axpy(dK + (j * KVH + kh) * D, q, scale * ds, D);
                        axpy(dV + (j * KVH + kh) * D, go, pj, D);
                    }
                }
            }
        }
    }
    free(lse);
    free(delta);
}

/* ---- SwiGLU ----
 * out = g sig(g) u:  du = dout g sig(g),  dg = dout u sig(g) (1 + g (1 - sig(g))). */
void tqk_swiglu_backward(const float *g, const float *u, const float *dout, float *dg, float *du, int64_t n) {
    #pragma omp parallel for schedule(static) if (n > (1 << 15))
    for (int64_t i = 0; i < n; i++) {
        float sg = 1.0f / (1.0f + expf(-g[i]));
        du[i] = dout[i] * g[i] * sg;
        dg[i] = dout[i] * u[i] * sg * (1.0f + g[i] * (1.0f - sg));
    }
}

/* ---- L2 loss: L = sum (y - target)^2 / rows (mean over tokens of the squared error) ---- */
double tqk_l2_loss(const float *y, const float *target, int64_t rows, int64_t dim, float *dy) {
    double total = 0.0;
    float g = 2.0f / (float)rows;
    #pragma omp parallel for schedule(static) reduction(+ : total) if (rows * dim > (1 << 15))
    for (int64_t r = 0; r < rows; r++) {
        const float *yr = y + r * dim, *tr = target + r * dim;
        double acc = 0.0;
        for (int64_t i = 0; i < dim; i++) {
            double e = (double)yr[i] - (double)tr[i];
            acc += e * e;
        }
        total += acc;
        if (dy)
            for (int64_t i = 0; i < dim; i++) dy[r * dim + i] = g * (yr[i] - tr[i]);
    }
    return total / (double)rows;
}
