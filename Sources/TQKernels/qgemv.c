/* GEMV / GEMM / dequantisation straight from GPTQ-packed weights (docs/FORMATS.md).
 *
 * Layout reminders: qweight[r, o] (uint32, [rows_q x out]) packs the codes of column o along
 * the input dimension; every column is a little-endian bit stream, value i at stream bits
 * [i*b, i*b + b). A "unit" is the smallest whole number of words holding whole values:
 * 1 word of V = 32/b values for b in {2,4,8}, 3 words of V = 32 values for b = 3. qzeros rows
 * are the same kind of stream along the output columns. Words are always uint32_t.
 *
 * Vectorisation: qweight is contiguous along `out`, so one __m256i load gives the same word of
 * 8 consecutive columns, and each lane decodes its own code. Threads split output columns.
 *
 * Fast path (g_idx == NULL and group_size a multiple of V, or a single group):
 *   y[o] = sum_g s[g,o] * (sum_{i in g} c[i,o] x[i] - z[g,o] * sum_{i in g} x[i]).
 * The inner loop extracts a code "in place" with one AND (c << p, p = the value's bit offset
 * in its word; exact in float since it has at most b significant bits) and multiplies it by
 * x[i] * 2^-p, precomputed once per call, so one code costs AND + CVT + FMA per 8 columns.
 * (Values reaching bit 31 use a shift instead, because CVT is signed; the two b = 3 values
 * straddling words are assembled from both words.)
 * A g_idx equal to i / group_size is recognised and takes the fast path. On AVX-512 CPUs the
 * fast-path GEMV looks codes up in tables of x instead (qgemv_avx512.c).
 * Act-order GEMV (any other g_idx, or group sizes not a multiple of V): the same decoding, with
 * the code sums going to per-group accumulators in L1 (about 2x the fast path's time).
 * GEMM: a tile of codes (fast path) is decoded once into a 16 KB buffer and reused by every
 * batch row through a 6 x 16 FMA register block. Act-order GEMM dequantises each tile
 * exactly, W = (float)(c - z[g(i)]) * s[g(i)], into that buffer instead. */
#include "qgemv_internal.h"
#include "vec.h"
#include <omp.h>
#include <string.h>

enum {
    GEMV_TILE_VALUES = 256, /* values (inputs) per GEMV tile, at most */
    GEMM_TILE_VALUES = 128, /* values per decoded GEMM tile: 128 x 32 floats = 16 KB */
    BLK = 32,               /* output columns per block (4 vectors) */
};

static int bits_ok(int bits) { return bits == 2 || bits == 3 || bits == 4 || bits == 8; }
static int64_t values_per_unit(int bits) { return bits == 3 ? 32 : 32 / bits; }
static int64_t words_per_unit(int bits) { return bits == 3 ? 3 : 1; }

AI __m256i ld_words(const uint32_t *p, int masked, __m256i m) {
    return masked ? _mm256_maskload_epi32((const int *)p, m) : _mm256_loadu_si256((const __m256i *)p);
}

/* Code of value j (constant) of the unit whose first word (for these 8 columns) is at `row`,
 * consecutive words `out` apart. "Scaled": code << p when the code does not touch bit 31
 * (p = its bit offset), else the code itself. */
AI __m256i code_scaled(const uint32_t *row, int64_t out, const int B, const int j, int masked, __m256i m) {
    const int P = j * B, w = P >> 5, s = P & 31;
    const __m256i a = ld_words(row + (int64_t)w * out, masked, m);
    if (s + B < 32) return _mm256_and_si256(a, _mm256_set1_epi32((int)(((1u << B) - 1u) << s)));
    if (s + B == 32) return _mm256_srli_epi32(a, s);
    const __m256i b = ld_words(row + (int64_t)(w + 1) * out, masked, m);
    return _mm256_or_si256(_mm256_srli_epi32(a, s),
                           _mm256_and_si256(_mm256_slli_epi32(b, 32 - s), _mm256_set1_epi32((1 << B) - 1)));
}

/* Scale applied to x for value j of a unit in the scaled form: 2^-p, or 1. */
static float code_scale_factor(int B, int64_t j) {
    const int P = (int)(j * B), s = P & 31;
    if (s + B >= 32) return 1.0f;
    const uint32_t bits = (uint32_t)(127 - s) << 23; /* 2^-s, exact */
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* Plain code of value j (constant). */
AI __m256i code_plain(const uint32_t *row, int64_t out, const int B, const int j, int masked, __m256i m) {
    const int P = j * B, w = P >> 5, s = P & 31;
    const __m256i a = ld_words(row + (int64_t)w * out, masked, m);
    const __m256i mk = _mm256_set1_epi32((1 << B) - 1);
    if (s + B < 32) return _mm256_and_si256(_mm256_srli_epi32(a, s), mk);
    if (s + B == 32) return _mm256_srli_epi32(a, s);
    const __m256i b = ld_words(row + (int64_t)(w + 1) * out, masked, m);
    return _mm256_or_si256(_mm256_srli_epi32(a, s), _mm256_and_si256(_mm256_slli_epi32(b, 32 - s), mk));
}

/* Code of value i (runtime) of columns o..o+7 (lanes >= nvalid read as 0). */
static inline __m256i code_any(const uint32_t *qweight, int64_t out, int B, int64_t i, int64_t o, int nvalid) {
    const int64_t P = i * B, w = P >> 5;
    const int s = (int)(P & 31);
    const __m256i m = tqk_lanes_below(nvalid);
    const int masked = nvalid < 8;
    const __m256i a = ld_words(qweight + w * out + o, masked, m);
    __m256i v = _mm256_srl_epi32(a, _mm_cvtsi32_si128(s));
    if (s + B > 32) {
        const __m256i b = ld_words(qweight + (w + 1) * out + o, masked, m);
        v = _mm256_or_si256(v, _mm256_sll_epi32(b, _mm_cvtsi32_si128(32 - s)));
    }
    return _mm256_and_si256(v, _mm256_set1_epi32((1 << B) - 1));
}

/* Zero points of columns o..o+7 of one qzeros row (cols words); lanes past the row's end are
 * padding or garbage and must be ignored by the caller. */
AI __m256i zero_vec(const uint32_t *zrow, int64_t cols, const int B, int64_t o) {
    const int64_t P0 = o * B, w0 = P0 >> 5;
    const int nw = (int)min64(8, cols - w0);
    const __m256i words = _mm256_maskload_epi32((const int *)(zrow + w0), tqk_lanes_below(nw));
    const __m256i P = _mm256_add_epi32(_mm256_set1_epi32((int)(P0 & 31)),
                                       _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                                          _mm256_set1_epi32(B)));
    const __m256i wi = _mm256_srli_epi32(P, 5);
    const __m256i s = _mm256_and_si256(P, _mm256_set1_epi32(31));
    const __m256i lo = _mm256_permutevar8x32_epi32(words, wi);
    const __m256i hi = _mm256_permutevar8x32_epi32(words, _mm256_add_epi32(wi, _mm256_set1_epi32(1)));
    /* sllv by 32 gives 0: a value that fits its word takes nothing from the next one (and for
     * s + B <= 32 the bits of `hi` land at >= B, masked away) */
    const __m256i v = _mm256_or_si256(_mm256_srlv_epi32(lo, s),
                                      _mm256_sllv_epi32(hi, _mm256_sub_epi32(_mm256_set1_epi32(32), s)));
    return _mm256_and_si256(v, _mm256_set1_epi32((1 << B) - 1));
}

/* float16 scales of columns o..o+nvalid-1 (the rest 0) */
static inline __m256 scale_vec(const uint16_t *srow, int64_t o, int nvalid) {
    if (nvalid >= 8) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(srow + o)));
    uint16_t tmp[8] = {0};
    memcpy(tmp, srow + o, (size_t)nvalid * 2);
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)tmp));
}

AI void store_y(float *y, __m256 v, int nvalid) {
    if (nvalid >= 8) _mm256_storeu_ps(y, v);
    else _mm256_maskstore_ps(y, tqk_lanes_below(nvalid), v);
}

AI __m256 load_y(const float *y, int nvalid) {
    if (nvalid >= 8) return _mm256_loadu_ps(y);
    return _mm256_maskload_ps(y, tqk_lanes_below(nvalid));
}

/* ------------------------------------------------------------------------------------------ */
/* Tiles and prescaled x                                                                      */

/* Tiles: runs of whole units inside one group, at most tile_values values. */
static int64_t build_tiles(Problem *p, int64_t tile_values, int64_t **u0, int64_t **u1, int64_t **g) {
    const int64_t GU = p->n_groups == 1 ? p->U : p->group_size / p->V; /* units per group */
    const int64_t TU = max64(1, min64(GU, tile_values / p->V));
    int64_t n = 0;
    for (int64_t gs = 0; gs < p->U; gs += GU) n += (min64(gs + GU, p->U) - gs + TU - 1) / TU;
    *u0 = tqk_alloc((size_t)n * sizeof(int64_t));
    *u1 = tqk_alloc((size_t)n * sizeof(int64_t));
    *g = tqk_alloc((size_t)n * sizeof(int64_t));
    if (!*u0 || !*u1 || !*g) return -1;
    int64_t t = 0;
    for (int64_t gs = 0, gi = 0; gs < p->U; gs += GU, gi++) {
        const int64_t ge = min64(gs + GU, p->U);
        for (int64_t a = gs; a < ge; a += TU) {
            (*u0)[t] = a;
            (*u1)[t] = min64(a + TU, ge);
            (*g)[t] = gi;
            t++;
        }
    }
    return n;
}

/* xs = x * scale factor of its position, zero padded to U*V; sx per tile (double sums). */
static void prescale(const Problem *p, const float *x, float *xs, float *sx) {
    /* the factor pattern repeats every period = max(V, 8) values (V divides 32) */
    const int64_t period = max64(p->V, 8);
    float fac[32];
    for (int64_t j = 0; j < period; j++) fac[j] = code_scale_factor((int)p->bits, j % p->V);
    const int64_t UV = p->U * p->V, in = p->in;
    const __m256 tiny = _mm256_set1_ps(1.17549435e-38f); /* FLT_MIN */
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (int64_t i = 0; i < UV; i += 8) {
        __m256 v;
        if (i + 8 <= in) {
            v = _mm256_loadu_ps(x + i);
        } else {
            v = i < in ? _mm256_maskload_ps(x + i, tqk_lanes_below(in - i)) : _mm256_setzero_ps();
        }
        v = _mm256_mul_ps(v, _mm256_loadu_ps(fac + i % period));
        /* keep subnormals out of the hot loop (microcode assists); they contribute < 2^-100 */
        v = _mm256_and_ps(v, _mm256_cmp_ps(_mm256_and_ps(v, absmask), tiny, _CMP_GE_OQ));
        _mm256_storeu_ps(xs + i, v);
    }
    for (int64_t t = 0; t < p->n_tiles; t++) {
        const int64_t i0 = p->tile_u0[t] * p->V, i1 = min64(p->tile_u1[t] * p->V, in);
        __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
        int64_t i = i0;
        for (; i + 8 <= i1; i += 8) {
            const __m256 v = _mm256_loadu_ps(x + i);
            s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
            s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
        }
        double d[4];
        _mm256_storeu_pd(d, _mm256_add_pd(s0, s1));
        double s = (d[0] + d[1]) + (d[2] + d[3]);
        for (; i < i1; i++) s += x[i];
        sx[t] = (float)s;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Fast GEMV                                                                                  */

/* acc[v] = sum over units [u0,u1) of scaled codes * xs, for NV vectors of columns at qw. */
AI void gemv_tile(const int B, const int NV, const int masked, __m256i lm, const uint32_t *qw,
                  int64_t out, const float *xs, int64_t u0, int64_t u1, __m256 *res) {
    const int NA = NV == 1 ? 4 : 2; /* >= 8 independent FMA chains when possible */
    const int V = B == 3 ? 32 : 32 / B;
    const int WPU = B == 3 ? 3 : 1;
    __m256 acc[4][4];
    for (int v = 0; v < NV; v++)
        for (int a = 0; a < NA; a++) acc[v][a] = _mm256_setzero_ps();
    for (int64_t u = u0; u < u1; u++) {
        const uint32_t *row = qw + u * WPU * out;
        const float *xu = xs + u * V;
#pragma clang loop unroll(full)
        for (int j = 0; j < V; j++) {
            const __m256 xb = _mm256_broadcast_ss(xu + j);
#pragma clang loop unroll(full)
            for (int v = 0; v < NV; v++) {
                const __m256i c = code_scaled(row + 8 * v, out, B, j, masked && v == NV - 1, lm);
                acc[v][j % NA] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(c), xb, acc[v][j % NA]);
            }
        }
    }
    for (int v = 0; v < NV; v++) {
        __m256 r = acc[v][0];
        for (int a = 1; a < NA; a++) r = _mm256_add_ps(r, acc[v][a]);
        res[v] = r;
    }
}

/* y[o..o+8*nv) += s * (acc - z * sx) for tile t */
AI void gemv_finish(const int B, const Problem *p, int64_t t, int64_t o, int nv, const __m256 *acc, float sxt,
                    float *y) {
    const int64_t g = p->tile_g[t];
    const uint32_t *zrow = p->qzeros + g * p->cols_z;
    const uint16_t *srow = p->scales + g * p->out;
    const __m256 sxv = _mm256_set1_ps(sxt);
    for (int v = 0; v < nv; v++) {
        const int64_t ov = o + 8 * v;
        const int nvalid = (int)min64(8, p->out - ov);
        const __m256 z = _mm256_cvtepi32_ps(zero_vec(zrow, p->cols_z, B, ov));
        const __m256 s = scale_vec(srow, ov, nvalid);
        const __m256 r = _mm256_fmadd_ps(s, _mm256_fnmadd_ps(z, sxv, acc[v]), load_y(y + ov, nvalid));
        store_y(y + ov, r, nvalid);
    }
}

/* column blocks [b0, b1) of 32 columns, all tiles */
AI void gemv_fast_range_body(const int B, const Problem *p, int64_t b0, int64_t b1) {
    const int64_t out = p->out;
    if (b1 <= b0) return;
    const int64_t o_begin = b0 * BLK, o_end = min64(b1 * BLK, out);
    memset(p->Y + o_begin, 0, (size_t)(o_end - o_begin) * sizeof(float));
    const __m256i none = _mm256_setzero_si256();
    for (int64_t t = 0; t < p->n_tiles; t++) {
        const int64_t u0 = p->tile_u0[t], u1 = p->tile_u1[t];
        const float sxt = p->sx[t];
        for (int64_t b = b0; b < b1; b++) {
            const int64_t o = b * BLK;
            __m256 acc[4];
            /* software prefetch 2 blocks ahead in every row of the tile (+5-10% when the
             * weights stream from DRAM; the tile's rows are 16-32 concurrent streams) */
            if (b + 2 < b1) {
                const uint32_t *pf = p->qweight + (b + 2) * BLK;
                for (int64_t r = u0 * p->WPU; r < u1 * p->WPU; r++) {
                    _mm_prefetch((const char *)(pf + r * out), _MM_HINT_T0);
                    _mm_prefetch((const char *)(pf + r * out + 16), _MM_HINT_T0);
                }
            }
            if (o + BLK <= out) {
                gemv_tile(B, 4, 0, none, p->qweight + o, out, p->xs, u0, u1, acc);
                gemv_finish(B, p, t, o, 4, acc, sxt, p->Y);
            } else {
                for (int64_t ov = o; ov < out; ov += 8) {
                    const int nvalid = (int)min64(8, out - ov);
                    if (nvalid == 8) gemv_tile(B, 1, 0, none, p->qweight + ov, out, p->xs, u0, u1, acc);
                    else gemv_tile(B, 1, 1, tqk_lanes_below(nvalid), p->qweight + ov, out, p->xs, u0, u1, acc);
                    gemv_finish(B, p, t, ov, 1, acc, sxt, p->Y);
                }
            }
        }
    }
}

#define DEF_FAST_GEMV(Bv) \
    static void gemv_fast_range_##Bv(const Problem *p, int64_t b0, int64_t b1) { gemv_fast_range_body(Bv, p, b0, b1); }
DEF_FAST_GEMV(2)
DEF_FAST_GEMV(3)
DEF_FAST_GEMV(4)
DEF_FAST_GEMV(8)

static void gemv_fast_range(const Problem *p, int64_t b0, int64_t b1) {
    switch (p->bits) {
    case 2: gemv_fast_range_2(p, b0, b1); break;
    case 3: gemv_fast_range_3(p, b0, b1); break;
    case 4: gemv_fast_range_4(p, b0, b1); break;
    default: gemv_fast_range_8(p, b0, b1); break;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Batch FMA on a decoded tile: acc[r][v] += sum_t D[t][v] * X[r][t]                          */

/* R[r][0..16) = sum_t D[t][0..16) * x[r][t] for NR rows (x rows ldx apart), D rows BLK apart:
 * a 6 x 16 register block like the sgemm micro-kernel (12 accumulators, 2 D vectors). */
AI void fma_block(const int NR, const float *D, int64_t count, const float *x0, int64_t ldx, float *R) {
    __m256 acc[6][2];
    for (int r = 0; r < NR; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int64_t t = 0; t < count; t++) {
        const __m256 d0 = _mm256_load_ps(D + t * BLK), d1 = _mm256_load_ps(D + t * BLK + 8);
        for (int r = 0; r < NR; r++) {
            const __m256 xb = _mm256_broadcast_ss(x0 + r * ldx + t);
            acc[r][0] = _mm256_fmadd_ps(d0, xb, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(d1, xb, acc[r][1]);
        }
    }
    for (int r = 0; r < NR; r++) {
        _mm256_store_ps(R + r * BLK, acc[r][0]);
        _mm256_store_ps(R + r * BLK + 8, acc[r][1]);
    }
}

#define DEF_FMA_BLOCK(N) \
    static void fma_block_##N(const float *D, int64_t c, const float *x, int64_t ldx, float *R) { fma_block(N, D, c, x, ldx, R); }
DEF_FMA_BLOCK(1)
DEF_FMA_BLOCK(2)
DEF_FMA_BLOCK(3)
DEF_FMA_BLOCK(4)
DEF_FMA_BLOCK(5)
DEF_FMA_BLOCK(6)

/* R[batch x 32] = X[batch x count] D[count x 32] for the first nv vectors of D (R aligned). */
static void tile_fma(const float *D, int nv, int64_t count, const float *X, int64_t ldx, int64_t batch, float *R) {
    for (int64_t r = 0; r < batch; r += 6) {
        const int nr = (int)min64(6, batch - r);
        for (int h = 0; h < (nv + 1) / 2; h++) {
            const float *d = D + 16 * h;
            const float *x = X + r * ldx;
            float *rr = R + r * BLK + 16 * h;
            switch (nr) {
            case 1: fma_block_1(d, count, x, ldx, rr); break;
            case 2: fma_block_2(d, count, x, ldx, rr); break;
            case 3: fma_block_3(d, count, x, ldx, rr); break;
            case 4: fma_block_4(d, count, x, ldx, rr); break;
            case 5: fma_block_5(d, count, x, ldx, rr); break;
            default: fma_block_6(d, count, x, ldx, rr); break;
            }
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Fast GEMM: decode scaled codes of a tile once, then every batch row                        */

/* D[t][8v..8v+8) = float(scaled code) for units [u0,u1) and 32 columns at o (nv vectors,
 * lanes >= nvalid_last of the last one are 0). */
AI void decode_scaled_tile(const int B, const uint32_t *qw, int64_t out, int64_t u0, int64_t u1, int nv,
                           int nvalid_last, float *D) {
    const int V = B == 3 ? 32 : 32 / B;
    const int WPU = B == 3 ? 3 : 1;
    const __m256i lm = tqk_lanes_below(nvalid_last);
    for (int64_t u = u0; u < u1; u++) {
        const uint32_t *row = qw + u * WPU * out;
        float *d = D + (u - u0) * V * BLK;
        if (nv == 4 && nvalid_last == 8) {
#pragma clang loop unroll(full)
            for (int j = 0; j < V; j++)
#pragma clang loop unroll(full)
                for (int v = 0; v < 4; v++)
                    _mm256_store_ps(d + j * BLK + 8 * v,
                                    _mm256_cvtepi32_ps(code_scaled(row + 8 * v, out, B, j, 0, lm)));
        } else {
            for (int v = 0; v < 4; v++) {
                if (v >= nv) {
                    for (int j = 0; j < V; j++) _mm256_store_ps(d + j * BLK + 8 * v, _mm256_setzero_ps());
                } else if (v < nv - 1 || nvalid_last == 8) {
#pragma clang loop unroll(full)
                    for (int j = 0; j < V; j++)
                        _mm256_store_ps(d + j * BLK + 8 * v,
                                        _mm256_cvtepi32_ps(code_scaled(row + 8 * v, out, B, j, 0, lm)));
                } else {
#pragma clang loop unroll(full)
                    for (int j = 0; j < V; j++)
                        _mm256_store_ps(d + j * BLK + 8 * v,
                                        _mm256_cvtepi32_ps(code_scaled(row + 8 * v, out, B, j, 1, lm)));
                }
            }
        }
    }
}

#define DEF_DECODE_SCALED(Bv)                                                                              \
    static void decode_scaled_tile_##Bv(const uint32_t *qw, int64_t out, int64_t u0, int64_t u1, int nv, \
                                        int nvl, float *D) {                                              \
        decode_scaled_tile(Bv, qw, out, u0, u1, nv, nvl, D);                                               \
    }
DEF_DECODE_SCALED(2)
DEF_DECODE_SCALED(3)
DEF_DECODE_SCALED(4)
DEF_DECODE_SCALED(8)

static void decode_scaled(int B, const uint32_t *qw, int64_t out, int64_t u0, int64_t u1, int nv, int nvl, float *D) {
    switch (B) {
    case 2: decode_scaled_tile_2(qw, out, u0, u1, nv, nvl, D); break;
    case 3: decode_scaled_tile_3(qw, out, u0, u1, nv, nvl, D); break;
    case 4: decode_scaled_tile_4(qw, out, u0, u1, nv, nvl, D); break;
    default: decode_scaled_tile_8(qw, out, u0, u1, nv, nvl, D); break;
    }
}

/* Tile-major like the GEMV (qweight streams row-wise; Y stays in L2): for every tile, every
 * column block of the thread decodes its codes once into D, then all batch rows use them. */
static void gemm_fast_range(const Problem *p, int64_t b0, int64_t b1, float *D, float *R, int64_t ldxs) {
    const int64_t out = p->out, batch = p->batch;
    if (b1 <= b0) return;
    const int64_t o_begin = b0 * BLK, o_end = min64(b1 * BLK, out);
    for (int64_t r = 0; r < batch; r++)
        memset(p->Y + r * out + o_begin, 0, (size_t)(o_end - o_begin) * sizeof(float));
    for (int64_t t = 0; t < p->n_tiles; t++) {
        const int64_t u0 = p->tile_u0[t], u1 = p->tile_u1[t];
        const int64_t count = (u1 - u0) * p->V;
        const int64_t g = p->tile_g[t];
        const uint32_t *zrow = p->qzeros + g * p->cols_z;
        const uint16_t *srow = p->scales + g * out;
        for (int64_t b = b0; b < b1; b++) {
            const int64_t o = b * BLK;
            const int64_t ncol = min64(BLK, out - o);
            const int nv = (int)((ncol + 7) / 8);
            const int nvl = (int)(ncol - 8 * (nv - 1));
            decode_scaled((int)p->bits, p->qweight + o, out, u0, u1, nv, nvl, D);
            __m256 z[4], s[4];
            for (int v = 0; v < nv; v++) {
                const int nvalid = (int)min64(8, out - (o + 8 * v));
                z[v] = _mm256_cvtepi32_ps(zero_vec(zrow, p->cols_z, (int)p->bits, o + 8 * v));
                s[v] = scale_vec(srow, o + 8 * v, nvalid);
            }
            tile_fma(D, nv, count, p->xs + u0 * p->V, ldxs, batch, R);
            for (int64_t r = 0; r < batch; r++) {
                const __m256 sxv = _mm256_set1_ps(p->sx[r * p->n_tiles + t]);
                float *y = p->Y + r * out + o;
                for (int v = 0; v < nv; v++) {
                    const int nvalid = (int)min64(8, out - (o + 8 * v));
                    const __m256 acc = _mm256_load_ps(R + r * BLK + 8 * v);
                    const __m256 res = _mm256_fmadd_ps(s[v], _mm256_fnmadd_ps(z[v], sxv, acc), load_y(y + 8 * v, nvalid));
                    store_y(y + 8 * v, res, nvalid);
                }
            }
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Generic path: exact W tiles from any group map                                             */

/* zc/sc: per group, the 4 vectors of zero points (int) and scales of block o. */
static void fill_group_cache(const Problem *p, int64_t o, int nv, __m256i *zc, __m256 *sc) {
    for (int64_t g = 0; g < p->n_groups; g++) {
        const uint32_t *zrow = p->qzeros + g * p->cols_z;
        const uint16_t *srow = p->scales + g * p->out;
        for (int v = 0; v < 4; v++) {
            if (v < nv) {
                const int nvalid = (int)min64(8, p->out - (o + 8 * v));
                zc[g * 4 + v] = zero_vec(zrow, p->cols_z, (int)p->bits, o + 8 * v);
                sc[g * 4 + v] = scale_vec(srow, o + 8 * v, nvalid);
            } else {
                zc[g * 4 + v] = _mm256_setzero_si256();
                sc[g * 4 + v] = _mm256_setzero_ps();
            }
        }
    }
}

/* D[t][.] = (float)(code - z[g]) * s[g] for units [u0, u1) (exactly the reference W). */
AI void decode_exact_tile(const int B, const uint32_t *qw, int64_t out, int64_t u0, int64_t u1, int nv,
                          int nvalid_last, const int32_t *gmap, const __m256i *zc, const __m256 *sc, float *D) {
    const int V = B == 3 ? 32 : 32 / B;
    const int WPU = B == 3 ? 3 : 1;
    const __m256i lm = tqk_lanes_below(nvalid_last);
    for (int64_t u = u0; u < u1; u++) {
        const uint32_t *row = qw + u * WPU * out;
        float *d = D + (u - u0) * V * BLK;
        const int32_t *gm = gmap + u * V;
        for (int v = 0; v < 4; v++) {
            if (v >= nv) {
                for (int j = 0; j < V; j++) _mm256_store_ps(d + j * BLK + 8 * v, _mm256_setzero_ps());
                continue;
            }
            const int masked = v == nv - 1 && nvalid_last < 8;
#define EXACT_BODY(MASKED)                                                                       \
    for (int j = 0; j < V; j++) {                                                                \
        const int64_t g = gm[j];                                                                 \
        const __m256i c = code_plain(row + 8 * v, out, B, j, MASKED, lm);                        \
        const __m256 w = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(c, zc[g * 4 + v])), \
                                       sc[g * 4 + v]);                                           \
        _mm256_store_ps(d + j * BLK + 8 * v, w);                                                 \
    }
            if (masked) {
#pragma clang loop unroll(full)
                EXACT_BODY(1)
            } else {
#pragma clang loop unroll(full)
                EXACT_BODY(0)
            }
#undef EXACT_BODY
        }
    }
}

#define DEF_DECODE_EXACT(Bv)                                                                              \
    static void decode_exact_tile_##Bv(const uint32_t *qw, int64_t out, int64_t u0, int64_t u1, int nv,  \
                                       int nvl, const int32_t *gmap, const __m256i *zc, const __m256 *sc, \
                                       float *D) {                                                        \
        decode_exact_tile(Bv, qw, out, u0, u1, nv, nvl, gmap, zc, sc, D);                                 \
    }
DEF_DECODE_EXACT(2)
DEF_DECODE_EXACT(3)
DEF_DECODE_EXACT(4)
DEF_DECODE_EXACT(8)

static void decode_exact(int B, const uint32_t *qw, int64_t out, int64_t u0, int64_t u1, int nv, int nvl,
                         const int32_t *gmap, const __m256i *zc, const __m256 *sc, float *D) {
    switch (B) {
    case 2: decode_exact_tile_2(qw, out, u0, u1, nv, nvl, gmap, zc, sc, D); break;
    case 3: decode_exact_tile_3(qw, out, u0, u1, nv, nvl, gmap, zc, sc, D); break;
    case 4: decode_exact_tile_4(qw, out, u0, u1, nv, nvl, gmap, zc, sc, D); break;
    default: decode_exact_tile_8(qw, out, u0, u1, nv, nvl, gmap, zc, sc, D); break;
    }
}

static void gemm_generic_range(const Problem *p, int64_t b0, int64_t b1, float *D, float *R, __m256i *zc,
                               __m256 *sc) {
    const int64_t out = p->out, in = p->in, batch = p->batch;
    const int64_t tile_units = max64(1, GEMM_TILE_VALUES / p->V);
    for (int64_t b = b0; b < b1; b++) {
        const int64_t o = b * BLK;
        const int64_t ncol = min64(BLK, out - o);
        const int nv = (int)((ncol + 7) / 8);
        const int nvl = (int)(ncol - 8 * (nv - 1));
        fill_group_cache(p, o, nv, zc, sc);
        for (int64_t r = 0; r < batch; r++) memset(p->Y + r * out + o, 0, (size_t)ncol * sizeof(float));
        for (int64_t u0 = 0; u0 < p->U; u0 += tile_units) {
            const int64_t u1 = min64(u0 + tile_units, p->U);
            const int64_t i0 = u0 * p->V;
            const int64_t count = min64(u1 * p->V, in) - i0; /* valid values only: X has `in` columns */
            decode_exact((int)p->bits, p->qweight + o, out, u0, u1, nv, nvl, p->gmap, zc, sc, D);
            tile_fma(D, nv, count, p->X + i0, in, batch, R);
            for (int64_t r = 0; r < batch; r++) {
                float *y = p->Y + r * out + o;
                for (int v = 0; v < nv; v++) {
                    const int nvalid = (int)min64(8, out - (o + 8 * v));
                    const __m256 acc = _mm256_load_ps(R + r * BLK + 8 * v);
                    store_y(y + 8 * v, _mm256_add_ps(acc, load_y(y + 8 * v, nvalid)), nvalid);
                }
            }
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* GEMV with an arbitrary group map (act-order): per-group accumulators                       */
/* y[o] = sum_g s[g,o] * (sum_{i: g(i)=g} c[i,o] x[i] - z[g,o] * sum_{i: g(i)=g} x[i]). The code
 * sums go to a small per-group array of accumulators (L1/L2) instead of registers: the same
 * AND + CVT + FMA per code as the fast path plus an L1 load and store, instead of dequantising
 * every weight. Two accumulator sets (even/odd j) shorten the store-to-load chains when
 * neighbouring inputs share a group. */

/* floats per group: ACC_SETS sets of BLK (a power of two: the index is a shift, not an imul
 * competing with the FMAs for port 1) */
enum { ACC_SETS = 2, ACC_STRIDE = ACC_SETS * BLK };

AI void gemv_gidx_block(const int B, const int NV, const int masked, __m256i lm, const uint32_t *qw, int64_t out,
                        const float *xs, const int32_t *gmap, int64_t U, float *acc) {
    const int V = B == 3 ? 32 : 32 / B;
    const int WPU = B == 3 ? 3 : 1;
    for (int64_t u = 0; u < U; u++) {
        const uint32_t *row = qw + u * WPU * out;
        const float *xu = xs + u * V;
        const int32_t *gm = gmap + u * V;
#pragma clang loop unroll(full)
        for (int j = 0; j < V; j++) {
            const __m256 xb = _mm256_broadcast_ss(xu + j);
            float *a = acc + (int64_t)gm[j] * ACC_STRIDE + (j % ACC_SETS) * BLK;
#pragma clang loop unroll(full)
            for (int v = 0; v < NV; v++) {
                const __m256i c = code_scaled(row + 8 * v, out, B, j, masked && v == NV - 1, lm);
                _mm256_store_ps(a + 8 * v, _mm256_fmadd_ps(_mm256_cvtepi32_ps(c), xb, _mm256_load_ps(a + 8 * v)));
            }
        }
    }
}

/* acc: n_groups x ACC_STRIDE floats; sxg: per-group sum of x */
AI void gemv_gidx_range_body(const int B, const Problem *p, int64_t b0, int64_t b1, float *acc, const float *sxg) {
    const int64_t out = p->out, ng = p->n_groups;
    const __m256i none = _mm256_setzero_si256();
    for (int64_t b = b0; b < b1; b++) {
        const int64_t o = b * BLK;
        const int64_t ncol = min64(BLK, out - o);
        memset(acc, 0, (size_t)ng * ACC_STRIDE * sizeof(float));
        if (ncol == BLK) {
            gemv_gidx_block(B, 4, 0, none, p->qweight + o, out, p->xs, p->gmap, p->U, acc);
        } else {
            for (int64_t ov = o; ov < out; ov += 8) {
                const int nvalid = (int)min64(8, out - ov);
                float *a = acc + (ov - o); /* vector slot (ov - o) / 8 of every accumulator row */
                if (nvalid == 8) gemv_gidx_block(B, 1, 0, none, p->qweight + ov, out, p->xs, p->gmap, p->U, a);
                else gemv_gidx_block(B, 1, 1, tqk_lanes_below(nvalid), p->qweight + ov, out, p->xs, p->gmap, p->U, a);
            }
        }
        for (int64_t ov = o; ov < o + ncol; ov += 8) {
            const int nvalid = (int)min64(8, out - ov);
            __m256 y = _mm256_setzero_ps();
            for (int64_t g = 0; g < ng; g++) {
                const float *a = acc + g * ACC_STRIDE + (ov - o);
                __m256 tot = _mm256_load_ps(a);
                for (int k = 1; k < ACC_SETS; k++) tot = _mm256_add_ps(tot, _mm256_load_ps(a + k * BLK));
                const __m256 z = _mm256_cvtepi32_ps(zero_vec(p->qzeros + g * p->cols_z, p->cols_z, B, ov));
                const __m256 sc = scale_vec(p->scales + g * out, ov, nvalid);
                y = _mm256_fmadd_ps(sc, _mm256_fnmadd_ps(z, _mm256_set1_ps(sxg[g]), tot), y);
            }
            store_y(p->Y + ov, y, nvalid);
        }
    }
}

#define DEF_GIDX_GEMV(Bv)                                                                                   \
    static void gemv_gidx_range_##Bv(const Problem *p, int64_t b0, int64_t b1, float *acc, const float *sxg) { \
        gemv_gidx_range_body(Bv, p, b0, b1, acc, sxg);                                                      \
    }
DEF_GIDX_GEMV(2)
DEF_GIDX_GEMV(3)
DEF_GIDX_GEMV(4)
DEF_GIDX_GEMV(8)

static void gemv_gidx_range(const Problem *p, int64_t b0, int64_t b1, float *acc, const float *sxg) {
    switch (p->bits) {
    case 2: gemv_gidx_range_2(p, b0, b1, acc, sxg); break;
    case 3: gemv_gidx_range_3(p, b0, b1, acc, sxg); break;
    case 4: gemv_gidx_range_4(p, b0, b1, acc, sxg); break;
    default: gemv_gidx_range_8(p, b0, b1, acc, sxg); break;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Drivers                                                                                    */

static int setup(Problem *p, const uint32_t *qweight, const uint32_t *qzeros, const uint16_t *scales,
                 int64_t out, int64_t in, int bits, int64_t group_size) {
    memset(p, 0, sizeof *p);
    if (group_size <= 0 || group_size > in) group_size = in;
    p->qweight = qweight;
    p->qzeros = qzeros;
    p->scales = scales;
    p->out = out;
    p->in = in;
    p->bits = bits;
    p->group_size = group_size;
    p->n_groups = (in + group_size - 1) / group_size;
    p->cols_z = tqk_packed_len(out, bits);
    p->V = values_per_unit(bits);
    p->WPU = words_per_unit(bits);
    p->U = (in + p->V - 1) / p->V;
    return 0;
}

/* Many checkpoints without act-order still ship g_idx = i / group_size: treat it as NULL. */
static int g_idx_trivial(const Problem *p, const int32_t *g_idx) {
    if (!g_idx) return 1;
    for (int64_t i = 0; i < p->in; i++)
        if (g_idx[i] != (int32_t)(i / p->group_size)) return 0;
    return 1;
}

static int fast_path_ok(const Problem *p, const int32_t *g_idx) {
    return (p->n_groups == 1 || p->group_size % p->V == 0) && g_idx_trivial(p, g_idx);
}

/* group of every value, padded with 0; out-of-range g_idx entries are clamped (the Swift
 * layer validates g_idx; the clamp only keeps memory safe) */
static int32_t *make_gmap(const Problem *p, const int32_t *g_idx) {
    const int64_t UV = p->U * p->V;
    int32_t *gm = xmalloc((size_t)UV * sizeof(int32_t));
    if (!gm) return NULL;
    for (int64_t i = 0; i < UV; i++) {
        int64_t g = 0;
        if (i < p->in) g = g_idx ? g_idx[i] : i / p->group_size;
        if (g < 0) g = 0;
        if (g >= p->n_groups) g = p->n_groups - 1;
        gm[i] = (int32_t)g;
    }
    return gm;
}

/* Below ~128K weight-rows a second thread saves a few microseconds at best, and costs much more
 * when the other core is busy (fork/join waits for a descheduled thread). */
static int want_parallel(int64_t out, int64_t in, int64_t batch) { return out * in * batch >= (1 << 17); }

static void fill_nan(float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = __builtin_nanf("");
}

/* Allocation failures leave NaN in the output (nothing here reports errors). */
static void fill_nan_cols(float *Y, int64_t batch, int64_t out, int64_t o0, int64_t o1) {
    for (int64_t r = 0; r < batch; r++) fill_nan(Y + r * out + o0, o1 - o0);
}

static void run_generic(Problem *p, const int32_t *g_idx) {
    int32_t *gmap = make_gmap(p, g_idx);
    if (!gmap) {
        fill_nan(p->Y, p->batch * p->out);
        return;
    }
    p->gmap = gmap;
    const int64_t nblk = (p->out + BLK - 1) / BLK;
    #pragma omp parallel if (want_parallel(p->out, p->in, p->batch))
    {
        const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
        const int64_t b0 = nblk * t / nt, b1 = nblk * (t + 1) / nt;
        if (b1 > b0) {
            float *D = xmalloc((size_t)(GEMM_TILE_VALUES + 32) * BLK * sizeof(float));
            float *R = xmalloc((size_t)p->batch * BLK * sizeof(float));
            __m256i *zc = xmalloc((size_t)p->n_groups * 4 * sizeof(__m256i));
            __m256 *sc = xmalloc((size_t)p->n_groups * 4 * sizeof(__m256));
            if (D && R && zc && sc) gemm_generic_range(p, b0, b1, D, R, zc, sc);
            else fill_nan_cols(p->Y, p->batch, p->out, b0 * BLK, min64(b1 * BLK, p->out));
            free(D);
            free(R);
            free(zc);
            free(sc);
        }
    }
    free(gmap);
}

static void run_gemv_gidx(Problem *p, const int32_t *g_idx, const float *x) {
    int32_t *gmap = make_gmap(p, g_idx);
    float *xs = xmalloc((size_t)(p->U * p->V + 8) * sizeof(float));
    float *sxg = xmalloc((size_t)p->n_groups * sizeof(float));
    double *sxd = xmalloc((size_t)p->n_groups * sizeof(double));
    if (!gmap || !xs || !sxg || !sxd) {
        fill_nan(p->Y, p->out);
    } else {
        p->gmap = gmap;
        p->xs = xs;
        p->n_tiles = 0;
        prescale(p, x, xs, NULL);
        for (int64_t g = 0; g < p->n_groups; g++) sxd[g] = 0.0;
        for (int64_t i = 0; i < p->in; i++) sxd[gmap[i]] += x[i];
        for (int64_t g = 0; g < p->n_groups; g++) sxg[g] = (float)sxd[g];
        const int64_t nblk = (p->out + BLK - 1) / BLK;
        #pragma omp parallel if (want_parallel(p->out, p->in, 1))
        {
            const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
            const int64_t b0 = nblk * t / nt, b1 = nblk * (t + 1) / nt;
            if (b1 > b0) {
                float *acc = xmalloc((size_t)p->n_groups * ACC_STRIDE * sizeof(float));
                if (acc) gemv_gidx_range(p, b0, b1, acc, sxg);
                else fill_nan(p->Y + b0 * BLK, min64(b1 * BLK, p->out) - b0 * BLK);
                free(acc);
            }
        }
    }
    free(gmap);
    free(xs);
    free(sxg);
    free(sxd);
}

void tqk_packed_gemv(const uint32_t *qweight, const uint32_t *qzeros, const uint16_t *scales,
                     const int32_t *g_idx, int64_t out, int64_t in, int bits, int64_t group_size,
                     const float *x, float *y) {
    if (out <= 0) return;
    if (in <= 0 || !bits_ok(bits)) {
        memset(y, 0, (size_t)out * sizeof(float));
        return;
    }
    Problem p;
    setup(&p, qweight, qzeros, scales, out, in, bits, group_size);
    p.X = x;
    p.Y = y;
    p.batch = 1;
    if (!fast_path_ok(&p, g_idx)) {
        run_gemv_gidx(&p, g_idx, x);
        return;
    }
    if (tqk_use_avx512()) { /* needs neither the tiles nor the prescaled x below */
        tqk_packed_gemv_fast_avx512(&p, 1, x);
        return;
    }
    int64_t *u0 = NULL, *u1 = NULL, *tg = NULL;
    const int64_t nt_tiles = build_tiles(&p, GEMV_TILE_VALUES, &u0, &u1, &tg);
    float *xs = xmalloc((size_t)(p.U * p.V + 8) * sizeof(float)); /* prescale writes whole vectors */
    float *sx = xmalloc((size_t)max64(nt_tiles, 1) * sizeof(float));
    if (nt_tiles >= 0 && xs && sx) {
        p.n_tiles = nt_tiles;
        p.tile_u0 = u0;
        p.tile_u1 = u1;
        p.tile_g = tg;
        p.xs = xs;
        p.sx = sx;
        prescale(&p, x, xs, sx);
        const int64_t nblk = (out + BLK - 1) / BLK;
        #pragma omp parallel if (want_parallel(out, in, 1))
        {
            const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
            gemv_fast_range(&p, nblk * t / nt, nblk * (t + 1) / nt);
        }
    } else {
        fill_nan(y, out);
    }
    free(u0);
    free(u1);
    free(tg);
    free(xs);
    free(sx);
}

void tqk_packed_gemv_many(const tqk_packed_tensor *w, int64_t n, int64_t in, const float *x, float *const *y) {
    enum { CHUNK = 16 }; /* tensors per parallel region (more run in further regions) */
    for (int64_t k0 = 0; k0 < n; k0 += CHUNK) {
        const int64_t nk = min64(CHUNK, n - k0);
        Problem ps[CHUNK];
        int fast = tqk_use_avx512() && in > 0;
        for (int64_t k = 0; k < nk && fast; k++) {
            const tqk_packed_tensor *t = &w[k0 + k];
            if (t->out <= 0 || !bits_ok(t->bits)) {
                fast = 0;
                break;
            }
            setup(&ps[k], t->qweight, t->qzeros, t->scales, t->out, in, t->bits, t->group_size);
            ps[k].Y = y[k0 + k];
            fast = fast_path_ok(&ps[k], t->g_idx);
        }
        if (fast) {
            tqk_packed_gemv_fast_avx512(ps, nk, x);
            continue;
        }
        for (int64_t k = k0; k < k0 + nk; k++)
            tqk_packed_gemv(w[k].qweight, w[k].qzeros, w[k].scales, w[k].g_idx, w[k].out, in, w[k].bits,
                            w[k].group_size, x, y[k]);
    }
}

void tqk_packed_gemm(const uint32_t *qweight, const uint32_t *qzeros, const uint16_t *scales,
                     const int32_t *g_idx, int64_t out, int64_t in, int bits, int64_t group_size,
                     const float *X, int64_t batch, float *Y) {
    if (out <= 0 || batch <= 0) return;
    if (in <= 0 || !bits_ok(bits)) {
        memset(Y, 0, (size_t)(out * batch) * sizeof(float));
        return;
    }
    if (batch == 1) {
        tqk_packed_gemv(qweight, qzeros, scales, g_idx, out, in, bits, group_size, X, Y);
        return;
    }
    Problem p;
    setup(&p, qweight, qzeros, scales, out, in, bits, group_size);
    p.X = X;
    p.Y = Y;
    p.batch = batch;
    if (!fast_path_ok(&p, g_idx)) {
        run_generic(&p, g_idx);
        return;
    }
    int64_t *u0 = NULL, *u1 = NULL, *tg = NULL;
    const int64_t nt_tiles = build_tiles(&p, GEMM_TILE_VALUES, &u0, &u1, &tg);
    const int64_t UV = p.U * p.V;
    const int64_t ldxs = UV + 16; /* rows not 4 KiB apart (L1 set conflicts in the FMA block) */
    float *xs = xmalloc((size_t)(batch * ldxs) * sizeof(float));
    float *sx = xmalloc((size_t)max64(batch * nt_tiles, 1) * sizeof(float));
    if (nt_tiles >= 0 && xs && sx) {
        p.n_tiles = nt_tiles;
        p.tile_u0 = u0;
        p.tile_u1 = u1;
        p.tile_g = tg;
        p.xs = xs;
        p.sx = sx;
        #pragma omp parallel for schedule(static) if (batch * in > (1 << 14))
        for (int64_t r = 0; r < batch; r++) prescale(&p, X + r * in, xs + r * ldxs, sx + r * nt_tiles);
        const int64_t nblk = (out + BLK - 1) / BLK;
        #pragma omp parallel if (want_parallel(out, in, batch))
        {
            const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
            const int64_t b0 = nblk * t / nt, b1 = nblk * (t + 1) / nt;
            if (b1 > b0) {
                /* a tile never exceeds GEMM_TILE_VALUES values, except one unit of 32 */
                float *D = xmalloc((size_t)(GEMM_TILE_VALUES + 32) * BLK * sizeof(float));
                float *R = xmalloc((size_t)batch * BLK * sizeof(float));
                if (D && R) gemm_fast_range(&p, b0, b1, D, R, ldxs);
                else fill_nan_cols(Y, batch, out, b0 * BLK, min64(b1 * BLK, out));
                free(D);
                free(R);
            }
        }
    } else {
        fill_nan(Y, batch * out);
    }
    free(u0);
    free(u1);
    free(tg);
    free(xs);
    free(sx);
}

/* ------------------------------------------------------------------------------------------ */
/* Dequantisation of output rows [row_begin, row_end)                                         */

void tqk_packed_dequantize(const uint32_t *qweight, const uint32_t *qzeros, const uint16_t *scales,
                           const int32_t *g_idx, int64_t out, int64_t in, int bits, int64_t group_size,
                           int64_t row_begin, int64_t row_end, float *out_w) {
    if (row_begin < 0) row_begin = 0;
    if (row_end > out) row_end = out;
    if (row_end <= row_begin || in <= 0 || !bits_ok(bits)) return;
    Problem p;
    setup(&p, qweight, qzeros, scales, out, in, bits, group_size);
    int32_t *gmap = make_gmap(&p, g_idx);
    if (!gmap) return;
    const int64_t nrows = row_end - row_begin;
    const int64_t nvec = (nrows + 7) / 8;
    #pragma omp parallel if (nrows * in > (1 << 16))
    {
        __m256i *zc = xmalloc((size_t)p.n_groups * sizeof(__m256i));
        __m256 *sc = xmalloc((size_t)p.n_groups * sizeof(__m256));
        #pragma omp for schedule(static)
        for (int64_t vb = 0; vb < nvec; vb++) {
            if (!zc || !sc) continue;
            const int64_t o = row_begin + vb * 8;
            const int nvalid = (int)min64(8, row_end - o);
            for (int64_t g = 0; g < p.n_groups; g++) {
                zc[g] = zero_vec(qzeros + g * p.cols_z, p.cols_z, bits, o);
                sc[g] = scale_vec(scales + g * out, o, nvalid);
            }
            for (int64_t i0 = 0; i0 < in; i0 += 8) {
                const int ni = (int)min64(8, in - i0);
                __m256 r[8];
                for (int k = 0; k < 8; k++) {
                    if (k < ni) {
                        const int64_t i = i0 + k, g = gmap[i];
                        const __m256i c = code_any(qweight, out, bits, i, o, nvalid);
                        r[k] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(c, zc[g])), sc[g]);
                    } else {
                        r[k] = _mm256_setzero_ps();
                    }
                }
                tqk_transpose8(r); /* r[l] = W[o + l, i0 .. i0 + 8) */
                for (int l = 0; l < nvalid; l++) {
                    float *dst = out_w + (o + l - row_begin) * in + i0;
                    if (ni == 8) _mm256_storeu_ps(dst, r[l]);
                    else _mm256_maskstore_ps(dst, tqk_lanes_below(ni), r[l]);
                }
            }
        }
        free(zc);
        free(sc);
    }
    free(gmap);
}
