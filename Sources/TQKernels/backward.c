/* Backward passes of the block's non-linear ops (RMSNorm, RoPE, attention, SwiGLU, GeGLU) and the
 * block-output L2 loss. Weights of these ops are frozen during TesseraQ, so only input
 * gradients are computed. Layouts match the forward kernels (norm.c, rope.c, attention.c, mlp.c). */
#include "tq_kernels.h"
#include "attention_internal.h"
#include "mlp_internal.h"
#include "vec.h"
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>

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

/* ---- causal GQA attention (optionally within a sliding window) ----
 * Per query row (t, h): s_j = scale q.k_j (lo(t) <= j <= t, lo as tqk_window_start), p = softmax(s), o = sum p_j v_j. With
 * dp_j = dO.v_j and delta = sum_j p_j dp_j = dO.o:  ds_j = p_j (dp_j - delta),
 *   dq = scale sum_j ds_j k_j,   dk_j += scale ds_j q,   dv_j += p_j dO.
 * Two passes, FlashAttention-2 style, so no T x T matrix is stored and no two threads write the
 * same row (results do not depend on the thread count):
 *   1. per query row: recompute p, write dq, keep lse = log-sum-exp of s and delta;
 *   2. per (kv head, block of 16 keys): loop over the queries that see the block, recompute
 *      p = exp(s - lse) and ds, and add P^T dO, dS^T Q into the block's dv, dk rows with small
 *      register-blocked rank updates.
 * With soft-capping (softcap > 0) the score is c_j = cap tanh(s_j / cap): the softmax reads c_j, and
 * its gradient passes to s_j times dc/ds = 1 - (c_j / cap)^2, recomputed in both passes.
 * K and V are first copied into transposed 16-key tiles ([kv head][key block][D][16], zero padded
 * past T) so both passes score 16 keys at once with plain vertical FMAs (no horizontal sums), and
 * a tile is one contiguous 4 KB run for D = 64 (a plain [D x T] transpose puts its rows at a
 * power-of-two stride, which thrashes L1 sets). The vectorised exp differs from expf by about an
 * ulp, far below what matters for a gradient. */
#define KB 16 /* keys per tile */
#define NT 32 /* queries per rank update in pass 2 */

/* Lanes [0, 8) and [8, 16) of the 16-key block starting at key j0 that hold keys lo <= j <= t,
 * i.e. lanes [lo - j0, t - j0 + 1). */
static inline void key_masks(int64_t j0, int64_t lo, int64_t t, __m256 *m0, __m256 *m1) {
    int64_t a = lo - j0 < -1 ? -1 : lo - j0, b = t - j0 + 1; /* a clamped so the int lane count cannot wrap */
    *m0 = _mm256_castsi256_ps(_mm256_andnot_si256(tqk_lanes_below(a), tqk_lanes_below(b)));
    *m1 = _mm256_castsi256_ps(_mm256_andnot_si256(tqk_lanes_below(a - 8), tqk_lanes_below(b - 8)));
}

/* q.k_j and g.v_j for the 16 keys of the tiles kt / vt ([D x 16]). Two d's per step: eight
 * independent FMA chains keep both FMA ports busy despite the 4-cycle latency. */
static inline void dots16(const float *q, const float *g, const float *kt, const float *vt, int64_t D,
                          __m256 *s0, __m256 *s1, __m256 *p0, __m256 *p1) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, b0 = a0, b1 = a0, c0 = a0, c1 = a0, e0 = a0, e1 = a0;
    int64_t d = 0;
    for (; d + 2 <= D; d += 2) {
        __m256 qd = _mm256_broadcast_ss(q + d), gd = _mm256_broadcast_ss(g + d);
        __m256 qe = _mm256_broadcast_ss(q + d + 1), ge = _mm256_broadcast_ss(g + d + 1);
        const float *kr = kt + d * KB, *vr = vt + d * KB;
        a0 = _mm256_fmadd_ps(qd, _mm256_loadu_ps(kr), a0);
        a1 = _mm256_fmadd_ps(qd, _mm256_loadu_ps(kr + 8), a1);
        b0 = _mm256_fmadd_ps(gd, _mm256_loadu_ps(vr), b0);
        b1 = _mm256_fmadd_ps(gd, _mm256_loadu_ps(vr + 8), b1);
        c0 = _mm256_fmadd_ps(qe, _mm256_loadu_ps(kr + KB), c0);
        c1 = _mm256_fmadd_ps(qe, _mm256_loadu_ps(kr + KB + 8), c1);
        e0 = _mm256_fmadd_ps(ge, _mm256_loadu_ps(vr + KB), e0);
        e1 = _mm256_fmadd_ps(ge, _mm256_loadu_ps(vr + KB + 8), e1);
    }
    if (d < D) {
        __m256 qd = _mm256_broadcast_ss(q + d), gd = _mm256_broadcast_ss(g + d);
        const float *kr = kt + d * KB, *vr = vt + d * KB;
        a0 = _mm256_fmadd_ps(qd, _mm256_loadu_ps(kr), a0);
        a1 = _mm256_fmadd_ps(qd, _mm256_loadu_ps(kr + 8), a1);
        b0 = _mm256_fmadd_ps(gd, _mm256_loadu_ps(vr), b0);
        b1 = _mm256_fmadd_ps(gd, _mm256_loadu_ps(vr + 8), b1);
    }
    *s0 = _mm256_add_ps(a0, c0); *s1 = _mm256_add_ps(a1, c1);
    *p0 = _mm256_add_ps(b0, e0); *p1 = _mm256_add_ps(b1, e1);
}

/* Rank-R update of a key tile: out_j[d] += sum_{r < R} c[r * KB + j] * x_r[d] for the jn <= KB rows
 * out_j = out + j * ostride. A 4-row x 16-column block of the tile stays in registers over all R
 * (6 loads per 8 FMAs, no stores), i.e. a small GEMM dK_tile += dS^T Q. c holds KB finite values
 * per r (0 past jn). */
static void rank_update(float *out, int64_t ostride, const float *c, const float *const *x, int64_t R, int64_t jn,
                        int64_t D) {
    int64_t d = 0;
    for (; d + 16 <= D; d += 16)
        for (int64_t j = 0; j < jn; j += 4) {
            __m256 a[4][2];
            for (int k = 0; k < 4; k++) a[k][0] = a[k][1] = _mm256_setzero_ps();
            for (int64_t r = 0; r < R; r++) {
                __m256 x0 = _mm256_loadu_ps(x[r] + d), x1 = _mm256_loadu_ps(x[r] + d + 8);
                const float *cr = c + r * KB + j;
                for (int k = 0; k < 4; k++) {
                    __m256 ck = _mm256_broadcast_ss(cr + k);
                    a[k][0] = _mm256_fmadd_ps(ck, x0, a[k][0]);
                    a[k][1] = _mm256_fmadd_ps(ck, x1, a[k][1]);
                }
            }
            for (int k = 0; k < 4 && j + k < jn; k++) {
                float *o = out + (j + k) * ostride + d;
                _mm256_storeu_ps(o, _mm256_add_ps(_mm256_loadu_ps(o), a[k][0]));
                _mm256_storeu_ps(o + 8, _mm256_add_ps(_mm256_loadu_ps(o + 8), a[k][1]));
            }
        }
    for (; d + 8 <= D; d += 8)
        for (int64_t j = 0; j < jn; j++) {
            __m256 a = _mm256_setzero_ps();
            for (int64_t r = 0; r < R; r++) a = _mm256_fmadd_ps(_mm256_broadcast_ss(c + r * KB + j), _mm256_loadu_ps(x[r] + d), a);
            float *o = out + j * ostride + d;
            _mm256_storeu_ps(o, _mm256_add_ps(_mm256_loadu_ps(o), a));
        }
    for (; d < D; d++)
        for (int64_t j = 0; j < jn; j++) {
            float a = 0.0f;
            for (int64_t r = 0; r < R; r++) a += c[r * KB + j] * x[r][d];
            out[j * ostride + d] += a;
        }
}

size_t tqk_attention_backward_scratch_bytes(int bf16, int64_t T, int64_t H, int64_t KVH, int64_t D) {
    if (T <= 0 || H <= 0 || KVH <= 0 || D <= 0) return 0;
    if (T > (INT64_C(1) << 20) || H > (INT64_C(1) << 20) || D > (INT64_C(1) << 20)) return SIZE_MAX;
    if (bf16) return 2 * (size_t)(H / KVH) * (size_t)T * (size_t)T * sizeof(float);   /* P, dS */
    return 2 * (size_t)KVH * (size_t)D * (size_t)((T + KB - 1) / KB * KB) * sizeof(float);   /* Kt, Vt */
}

void tqk_attention_backward(const float *Q, const float *K, const float *V, const float *dO, float *dQ, float *dK,
                            float *dV, int64_t T, int64_t H, int64_t KVH, int64_t D, float scale, int64_t window,
                            float softcap) {
    if (T <= 0) return;
    int64_t group = H / KVH, Tp = (T + KB - 1) / KB * KB, n_blocks = Tp / KB;
    /* Kt then Vt ([KVH x D x Tp] each) in one scratch buffer (one kept mapping serves both). */
    const size_t kv_bytes = tqk_attention_backward_scratch_bytes(0, T, H, KVH, D), kv_floats = kv_bytes / 2 / sizeof(float);
    float *Kt = tqk_scratch_alloc(kv_bytes), *Vt = Kt ? Kt + kv_floats : NULL;
    float *lse = tqk_alloc((size_t)(T * H) * sizeof(float));
    float *delta = tqk_alloc((size_t)(T * H) * sizeof(float));
    if (!Kt || !lse || !delta) goto done;
    const __m256 vscale = _mm256_set1_ps(scale), ninf = _mm256_set1_ps(-INFINITY);

    #pragma omp parallel
    {
        #pragma omp for schedule(static)
        for (int64_t tile = 0; tile < KVH * n_blocks; tile++) { /* tile = (kh, key block) */
            int64_t kh = tile / n_blocks, j0 = (tile % n_blocks) * KB;
            float *kt = Kt + tile * D * KB, *vt = Vt + tile * D * KB;
            for (int64_t l = 0; l < KB; l++) {
                int64_t j = j0 + l;
                for (int64_t d = 0; d < D; d++) {
                    kt[d * KB + l] = j < T ? K[(j * KVH + kh) * D + d] : 0.0f;
                    vt[d * KB + l] = j < T ? V[(j * KVH + kh) * D + d] : 0.0f;
                }
            }
        }

        float *p = tqk_alloc((size_t)Tp * sizeof(float)), *dp = tqk_alloc((size_t)Tp * sizeof(float));
        float *slope = tqk_alloc((size_t)Tp * sizeof(float)); /* dc/ds of the soft-cap per key */
        /* Pass 1. Head-major task order: concurrent rows share one head's K/V in cache; longest
         * rows first with round-robin chunks of 1 balance the triangle (static schedules only:
         * clang 21 emits __kmpc_dispatch_deinit for dynamic ones, which libomp 14 lacks). */
        #pragma omp for schedule(static, 1)
        for (int64_t task = 0; task < H * T; task++) {
            if (!p || !dp || !slope) continue; /* counted by tqk_alloc */
            int64_t h = task / T, t = T - 1 - task % T, kh = h / group;
            const float *q = Q + (t * H + h) * D, *go = dO + (t * H + h) * D;
            const float *kt = Kt + kh * n_blocks * D * KB, *vt = Vt + kh * n_blocks * D * KB;
            int64_t lo = tqk_window_start(t, window);
            int64_t b0 = lo / KB, nb = t / KB + 1; /* blocks holding keys lo..t */
            __m256 vmax = ninf;
            for (int64_t b = b0; b < nb; b++) {
                __m256 s0, s1, d0, d1, m0, m1;
                dots16(q, go, kt + b * D * KB, vt + b * D * KB, D, &s0, &s1, &d0, &d1);
                key_masks(b * KB, lo, t, &m0, &m1);
                __m256 g0, g1;
                s0 = _mm256_blendv_ps(ninf, softcap8(_mm256_mul_ps(s0, vscale), softcap, &g0), m0);
                s1 = _mm256_blendv_ps(ninf, softcap8(_mm256_mul_ps(s1, vscale), softcap, &g1), m1);
                _mm256_storeu_ps(slope + b * KB, g0);
                _mm256_storeu_ps(slope + b * KB + 8, g1);
                vmax = _mm256_max_ps(vmax, _mm256_max_ps(s0, s1));
                _mm256_storeu_ps(p + b * KB, s0);
                _mm256_storeu_ps(p + b * KB + 8, s1);
                _mm256_storeu_ps(dp + b * KB, d0);
                _mm256_storeu_ps(dp + b * KB + 8, d1);
            }
            float mx = hmax8(vmax);
            __m256 vmx = _mm256_set1_ps(mx), vsum = _mm256_setzero_ps();
            for (int64_t b = b0; b < nb; b++)
                for (int64_t k = 0; k < KB; k += 8) {
                    __m256 s = _mm256_loadu_ps(p + b * KB + k);
                    /* masked lanes hold -inf: tqk_exp8 would give a tiny value, force 0 */
                    __m256 e = _mm256_and_ps(tqk_exp8(_mm256_sub_ps(s, vmx)), _mm256_cmp_ps(s, ninf, _CMP_NEQ_OQ));
                    _mm256_storeu_ps(p + b * KB + k, e);
                    vsum = _mm256_add_ps(vsum, e);
                }
            float sum = hsum8(vsum);
            __m256 vinv = _mm256_set1_ps(1.0f / sum), vdl = _mm256_setzero_ps();
            for (int64_t j = b0 * KB; j < nb * KB; j += 8) {
                __m256 e = _mm256_mul_ps(_mm256_loadu_ps(p + j), vinv);
                _mm256_storeu_ps(p + j, e);
                vdl = _mm256_fmadd_ps(e, _mm256_loadu_ps(dp + j), vdl);
            }
            float dl = hsum8(vdl);
            __m256 vdl1 = _mm256_set1_ps(dl);
            for (int64_t j = b0 * KB; j < nb * KB; j += 8) /* dp <- ds * slope * scale (0 on masked lanes: p is 0) */
                _mm256_storeu_ps(dp + j, _mm256_mul_ps(_mm256_mul_ps(vscale, _mm256_loadu_ps(slope + j)),
                                                       _mm256_mul_ps(_mm256_loadu_ps(p + j),
                                                                     _mm256_sub_ps(_mm256_loadu_ps(dp + j), vdl1))));
            wsum_rows(dQ + (t * H + h) * D, dp + lo, K + (lo * KVH + kh) * D, KVH * D, t + 1 - lo, D);
            lse[t * H + h] = mx + logf(sum);
            delta[t * H + h] = dl;
        }
        free(p);
        free(dp);
        free(slope);
        /* (the implicit barrier of the omp for makes lse/delta complete before pass 2) */

        /* Pass 2. A task owns the KB rows of dK/dV of one kv head; block 0 sees the most
         * queries, so the same longest-first round robin. Queries are taken NT at a time (times the
         * group's heads): their p and ds for the tile's keys go to small buffers, then two rank
         * updates add P^T dO and dS^T Q into the tile. */
        float *pb = tqk_alloc((size_t)(NT * group * KB) * sizeof(float));
        float *db = tqk_alloc((size_t)(NT * group * KB) * sizeof(float));
        const float **xq = tqk_alloc((size_t)(NT * group) * sizeof(float *));
        const float **xg = tqk_alloc((size_t)(NT * group) * sizeof(float *));
        #pragma omp for schedule(static, 1)
        for (int64_t task = 0; task < KVH * n_blocks; task++) {
            if (!pb || !db || !xq || !xg) continue; /* counted by tqk_alloc */
            int64_t kh = task / n_blocks, j0 = (task % n_blocks) * KB;
            int64_t jn = j0 + KB < T ? KB : T - j0;
            const float *kt = Kt + task * D * KB, *vt = Vt + task * D * KB; /* task = tile index */
            float *dk = dK + (j0 * KVH + kh) * D, *dv = dV + (j0 * KVH + kh) * D;
            for (int64_t j = 0; j < jn; j++)
                for (int64_t d = 0; d < D; d++) dk[j * KVH * D + d] = dv[j * KVH * D + d] = 0.0f;
            /* the queries that see a key of the tile: j0 <= t, and t - window < j0 + jn - 1 */
            int64_t t_end = window > 0 && j0 + jn - 1 + window < T ? j0 + jn - 1 + window : T;
            for (int64_t t0 = j0; t0 < t_end; t0 += NT) {
                int64_t t1 = t0 + NT < t_end ? t0 + NT : t_end, R = 0;
                for (int64_t t = t0; t < t1; t++) {
                    __m256 m0, m1;
                    key_masks(j0, tqk_window_start(t, window), t, &m0, &m1); /* keys lo(t) <= j <= t */
                    for (int64_t h = kh * group; h < (kh + 1) * group; h++, R++) {
                        const float *q = Q + (t * H + h) * D, *go = dO + (t * H + h) * D;
                        __m256 s0, s1, d0, d1;
                        dots16(q, go, kt, vt, D, &s0, &s1, &d0, &d1);
                        __m256 l = _mm256_set1_ps(lse[t * H + h]), dl = _mm256_set1_ps(delta[t * H + h]), g0, g1;
                        s0 = softcap8(_mm256_mul_ps(s0, vscale), softcap, &g0);
                        s1 = softcap8(_mm256_mul_ps(s1, vscale), softcap, &g1);
                        __m256 e0 = _mm256_and_ps(tqk_exp8(_mm256_sub_ps(s0, l)), m0);
                        __m256 e1 = _mm256_and_ps(tqk_exp8(_mm256_sub_ps(s1, l)), m1);
                        _mm256_storeu_ps(pb + R * KB, e0);
                        _mm256_storeu_ps(pb + R * KB + 8, e1);
                        _mm256_storeu_ps(db + R * KB, _mm256_mul_ps(_mm256_mul_ps(vscale, g0), _mm256_mul_ps(e0, _mm256_sub_ps(d0, dl))));
                        _mm256_storeu_ps(db + R * KB + 8, _mm256_mul_ps(_mm256_mul_ps(vscale, g1), _mm256_mul_ps(e1, _mm256_sub_ps(d1, dl))));
                        xq[R] = q;
                        xg[R] = go;
                    }
                }
                rank_update(dk, KVH * D, db, xq, R, jn, D);
                rank_update(dv, KVH * D, pb, xg, R, jn, D);
            }
        }
        free(pb);
        free(db);
        free(xq);
        free(xg);
    }
done:
    tqk_scratch_free(Kt, kv_bytes);
    free(lse);
    free(delta);
}

/* ---- SwiGLU ----
 * out = g sig(g) u:  du = dout g sig(g),  dg = dout u sig(g) (1 + g (1 - sig(g))). */
void tqk_swiglu_backward(const float *g, const float *u, const float *dout, float *dg, float *du, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f);
    #pragma omp parallel for schedule(static) if (n > (1 << 15))
    for (int64_t i = 0; i < n; i += 8) {
        __m256i m = tqk_lanes_below(n - i);
        __m256 gv = _mm256_maskload_ps(g + i, m), d = _mm256_maskload_ps(dout + i, m), sg = tqk_sigmoid8(gv);
        _mm256_maskstore_ps(du + i, m, _mm256_mul_ps(_mm256_mul_ps(d, gv), sg));
        __m256 slope = _mm256_mul_ps(sg, _mm256_add_ps(one, _mm256_mul_ps(gv, _mm256_sub_ps(one, sg))));
        _mm256_maskstore_ps(dg + i, m, _mm256_mul_ps(_mm256_mul_ps(d, _mm256_maskload_ps(u + i, m)), slope));
    }
}

/* ---- GeGLU ----
 * out = gelu(g) u with gelu(g) = g (1 + t) / 2, t = tanh(k (g + c g^3)):  du = dout gelu(g),
 * dg = dout u ((1 + t) / 2 + g (1 - t^2) k (1 + 3 c g^2) / 2). */
void tqk_geglu_backward(const float *g, const float *u, const float *dout, float *dg, float *du, int64_t n) {
    #pragma omp parallel for schedule(static) if (n > (1 << 15))
    for (int64_t i = 0; i < n; i++) {
        float x = g[i], t = tanhf(tqk_gelu_inner(x));
        du[i] = dout[i] * 0.5f * x * (1.0f + t);
        float slope = 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * TQK_GELU_K * (1.0f + 3.0f * TQK_GELU_C * x * x);
        dg[i] = dout[i] * u[i] * slope;
    }
}

/* ---- L2 loss: L = sum_r w_r |y_r - target_r|^2 / rows (mean over tokens of the weighted squared error) ---- */
double tqk_l2_loss(const float *y, const float *target, int64_t rows, int64_t dim, const float *row_weight, float *dy) {
    double total = 0.0;
    float g = 2.0f / (float)rows;
    #pragma omp parallel for schedule(static) reduction(+ : total) if (rows * dim > (1 << 15))
    for (int64_t r = 0; r < rows; r++) {
        const float *yr = y + r * dim, *tr = target + r * dim;
        float w = row_weight ? row_weight[r] : 1.0f;
        double acc = 0.0;
        for (int64_t i = 0; i < dim; i++) {
            double e = (double)yr[i] - (double)tr[i];
            acc += e * e;
        }
        total += (double)w * acc;
        if (dy)
            for (int64_t i = 0; i < dim; i++) dy[r * dim + i] = g * w * (yr[i] - tr[i]);
    }
    return total / (double)rows;
}

/* ---- Squared norm of each row (accumulated in double) ---- */
void tqk_row_sumsq(const float *x, int64_t rows, int64_t dim, float *out) {
    #pragma omp parallel for schedule(static) if (rows * dim > (1 << 15))
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * dim;
        double acc = 0.0;
        for (int64_t i = 0; i < dim; i++) acc += (double)xr[i] * (double)xr[i];
        out[r] = (float)acc;
    }
}
