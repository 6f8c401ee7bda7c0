/* AVX-512 fast-path GEMV on GPTQ-packed words (g_idx NULL or trivial), run by tqk_packed_gemv
 * when tqk_use_avx512(); the functions are compiled for AVX-512 by the pragma below.
 *
 * Nibble tables instead of decoding values. A column's packed words are one bit stream whose
 * bit q belongs to value i = q / B with weight 2^(q mod B), so
 *   sum_i c_i x_i = sum over the stream's 4-bit nibbles n of T_n[nibble n],
 *   T_n[m] = sum over the set bits t of m of 2^((4n + t) mod B) x[(4n + t) / B].
 * vpermps looks up 16 columns at once and reads only the low 4 bits of each index lane, so the
 * word shifted right by 4n is the index as it is: per word of 16 columns, 7 shifts + 8 permutes
 * + 8 adds for 32/B values whatever B is (AVX2: AND + CVT + FMA per value and 8 columns), and
 * 3-bit values straddling words need nothing special (nibbles never straddle). The tables (512 B
 * per packed row) depend on x only: built once per call, shared by the threads; a tile's few KB
 * stay in L1 while its rows are swept. Zero points and scales are applied per tile as in
 * qgemv.c: y += s * (acc - z * sum(x over the tile)). */
#include "qgemv_internal.h"
#include <float.h>
#include <omp.h>
#include <string.h>

#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma"))), apply_to = function)

enum {
    TABLE_FLOATS = 8 * 16, /* per packed row: 8 nibbles x 16 entries */
    NV_MAX = 4,            /* 16-column vectors per block: 4 x 2 accumulators + 8 tables in zmm */
    PF_TILES = 2,          /* tiles ahead of the words prefetched into L2 (one is also fine; 4 worse) */
};

/* Tables of packed rows [r0, r1). Subnormal bit weights are flushed (microcode assists in the
 * hot loop; they contribute < 2^-100), and so are NaNs, as qgemv.c's prescale does: NaN in x
 * reaches y through the tile sums. */
static void build_tables(const Problem *p, const float *x, int64_t r0, int64_t r1, float *T) {
    static const __mmask16 has_bit[4] = {0xAAAA, 0xCCCC, 0xF0F0, 0xFF00}; /* entries m with bit t */
    const int B = (int)p->bits;
    /* bit q of word w of a unit: value vi[w][q] of the unit, weight pw[w][q] = 2^(bit in value) */
    int32_t vi[3][32];
    float pw[3][32];
    for (int q = 0; q < 32 * (int)p->WPU; q++) {
        vi[q / 32][q % 32] = q / B;
        pw[q / 32][q % 32] = (float)(1 << (q % B));
    }
    const __m512 tiny = _mm512_set1_ps(FLT_MIN);
    for (int64_t r = r0; r < r1; r++) {
        const int64_t i0 = r / p->WPU * p->V; /* first value of the row's unit */
        const int w = (int)(r % p->WPU);
        const int64_t nval = min64(p->V, p->in - i0); /* past `in`: padding, weight 0 */
        const __m512 xa = _mm512_maskz_loadu_ps((__mmask16)((1u << min64(16, nval)) - 1), x + i0);
        const __m512 xb = nval > 16 ? _mm512_maskz_loadu_ps((__mmask16)((1u << (nval - 16)) - 1), x + i0 + 16)
                                    : _mm512_setzero_ps();
        float wt[32];
        for (int h = 0; h < 2; h++) {
            __m512 v = _mm512_mul_ps(_mm512_permutex2var_ps(xa, _mm512_loadu_si512(vi[w] + 16 * h), xb),
                                     _mm512_loadu_ps(pw[w] + 16 * h));
            v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(_mm512_abs_ps(v), tiny, _CMP_GE_OQ), v);
            _mm512_storeu_ps(wt + 16 * h, v);
        }
        for (int n = 0; n < 8; n++) {
            __m512 e = _mm512_setzero_ps();
            for (int t = 0; t < 4; t++) e = _mm512_mask_add_ps(e, has_bit[t], e, _mm512_set1_ps(wt[4 * n + t]));
            _mm512_store_ps(T + r * TABLE_FLOATS + 16 * n, e);
        }
    }
}

/* acc[v] = sum over packed rows [r0, r1) of the table lookups of NV vectors of 16 columns at
 * qw; `last` masks the columns of the last vector (0 words look up entry 0, which is 0). Each
 * row also prefetches its words `ahead` words further (the same words of a later tile). */
AI void tile_acc(const int NV, __mmask16 last, const uint32_t *qw, int64_t out, int64_t ahead, const float *T,
                 int64_t r0, int64_t r1, __m512 *acc) {
    __m512 a[NV_MAX][2];
    for (int v = 0; v < NV; v++) a[v][0] = a[v][1] = _mm512_setzero_ps();
    for (int64_t r = r0; r < r1; r++) {
        const float *t = T + r * TABLE_FLOATS;
        __m512i w[NV_MAX];
        for (int v = 0; v < NV; v++) {
            w[v] = _mm512_maskz_loadu_epi32(v == NV - 1 ? last : 0xFFFF, qw + r * out + 16 * v);
            _mm_prefetch((const char *)(qw + r * out + 16 * v + ahead), _MM_HINT_T1);
        }
#pragma clang loop unroll(full)
        for (int n = 0; n < 8; n++) {
            const __m512 tn = _mm512_load_ps(t + 16 * n);
#pragma clang loop unroll(full)
            for (int v = 0; v < NV; v++) {
                const __m512i idx = n ? _mm512_srli_epi32(w[v], 4 * n) : w[v];
                a[v][n & 1] = _mm512_add_ps(a[v][n & 1], _mm512_permutexvar_ps(idx, tn));
            }
        }
    }
    for (int v = 0; v < NV; v++) acc[v] = _mm512_add_ps(a[v][0], a[v][1]);
}

static void tile_acc_full(const uint32_t *qw, int64_t out, int64_t ahead, const float *T, int64_t r0, int64_t r1,
                          __m512 *acc) {
    tile_acc(NV_MAX, 0xFFFF, qw, out, ahead, T, r0, r1, acc);
}

static void tile_acc_one(__mmask16 m, const uint32_t *qw, int64_t out, int64_t ahead, const float *T, int64_t r0,
                         int64_t r1, __m512 *acc) {
    tile_acc(1, m, qw, out, ahead, T, r0, r1, acc);
}

/* Zero points of columns o..o+15 of one qzeros row (cols words), o a multiple of 16, as floats;
 * lanes past the row's end are garbage, ignored by the caller. */
AI __m512 zeros16(const uint32_t *zrow, int64_t cols, const int B, int64_t o) {
    const int64_t P0 = o * B, w0 = P0 >> 5, avail = cols - w0; /* avail >= 1 */
    __m512i z;
    if (B == 8) {
        z = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(avail >= 4 ? 0xFFFF : (__mmask16)((1u << (4 * avail)) - 1), zrow + w0));
    } else {
        /* the 16 values lie in the 64 bits from word w0, from bit 0 (or 16 when B = 3): even
         * lanes from one 64-bit shift, odd lanes from another, moved up to the high halves */
        const __m512i q = _mm512_broadcastq_epi64(_mm_maskz_loadu_epi32(avail >= 2 ? 3 : 1, zrow + w0));
        const __m512i sh = _mm512_add_epi64(_mm512_set1_epi64(P0 & 31),
                                            _mm512_mullo_epi64(_mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14),
                                                               _mm512_set1_epi64(B)));
        const __m512i even = _mm512_srlv_epi64(q, sh);
        const __m512i odd = _mm512_srlv_epi64(q, _mm512_add_epi64(sh, _mm512_set1_epi64(B)));
        z = _mm512_and_si512(_mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32)),
                             _mm512_set1_epi32((1 << B) - 1));
    }
    return _mm512_cvtepi32_ps(z);
}

/* y[o..o+16) += s * (acc - z * sxt) for tile t, columns masked by m */
AI void tile_finish(const int B, const Problem *p, int64_t t, int64_t o, __mmask16 m, __m512 acc, float sxt,
                    float *y) {
    const int64_t g = p->tile_g[t];
    const __m512 z = zeros16(p->qzeros + g * p->cols_z, p->cols_z, B, o);
    const __m512 s = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p->scales + g * p->out + o));
    const __m512 d = _mm512_fnmadd_ps(z, _mm512_set1_ps(sxt), acc);
    _mm512_mask_storeu_ps(y + o, m, _mm512_fmadd_ps(s, d, _mm512_maskz_loadu_ps(m, y + o)));
}

/* columns of the 16-wide vectors [v0, v1), all tiles */
AI void gemv_range_body(const int B, const Problem *p, const float *T, int64_t v0, int64_t v1) {
    const int64_t out = p->out;
    if (v1 <= v0) return;
    const int64_t o_end = min64(v1 * 16, out);
    memset(p->Y + v0 * 16, 0, (size_t)(o_end - v0 * 16) * sizeof(float));
    for (int64_t t = 0; t < p->n_tiles; t++) {
        const int64_t r0 = p->tile_u0[t] * p->WPU, r1 = p->tile_u1[t] * p->WPU;
        /* From DRAM, the tile's rows (16 KB apart at out = 4096) are too many short streams for
         * the hardware prefetchers: cold 4096^2 GEMV ~0.3 of the copy bandwidth without this
         * prefetch of the same words PF_TILES tiles ahead, ~0.4 with it (pure reads reach ~0.5).
         * None in the last tiles: `ahead` 0 touches lines already in L1. */
        const int64_t ahead = t + PF_TILES < p->n_tiles ? (p->tile_u0[t + PF_TILES] - p->tile_u0[t]) * p->WPU * out : 0;
        int64_t v = v0;
        for (; v + NV_MAX <= v1 && (v + NV_MAX) * 16 <= out; v += NV_MAX) {
            __m512 acc[NV_MAX];
            tile_acc_full(p->qweight + v * 16, out, ahead, T, r0, r1, acc);
            for (int k = 0; k < NV_MAX; k++) tile_finish(B, p, t, (v + k) * 16, 0xFFFF, acc[k], p->sx[t], p->Y);
        }
        for (; v < v1; v++) {
            const int64_t n = min64(16, out - v * 16);
            const __mmask16 m = (__mmask16)((1u << n) - 1);
            __m512 acc;
            tile_acc_one(m, p->qweight + v * 16, out, ahead, T, r0, r1, &acc);
            tile_finish(B, p, t, v * 16, m, acc, p->sx[t], p->Y);
        }
    }
}

#define DEF_GEMV_RANGE(Bv) \
    static void gemv_range_##Bv(const Problem *p, const float *T, int64_t v0, int64_t v1) { gemv_range_body(Bv, p, T, v0, v1); }
DEF_GEMV_RANGE(2)
DEF_GEMV_RANGE(3)
DEF_GEMV_RANGE(4)
DEF_GEMV_RANGE(8)

static void gemv_range(const Problem *p, const float *T, int64_t v0, int64_t v1) {
    switch (p->bits) {
    case 2: gemv_range_2(p, T, v0, v1); break;
    case 3: gemv_range_3(p, T, v0, v1); break;
    case 4: gemv_range_4(p, T, v0, v1); break;
    default: gemv_range_8(p, T, v0, v1); break;
    }
}

void tqk_packed_gemv_fast_avx512(const Problem *p, const float *x, int parallel) {
    const int64_t rows = p->U * p->WPU;
    float *T = xmalloc((size_t)rows * TABLE_FLOATS * sizeof(float));
    if (!T) {
        for (int64_t o = 0; o < p->out; o++) p->Y[o] = __builtin_nanf("");
        return;
    }
    const int64_t nvec = (p->out + 15) / 16;
    #pragma omp parallel if (parallel)
    {
        const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
        build_tables(p, x, rows * t / nt, rows * (t + 1) / nt, T);
        #pragma omp barrier
        gemv_range(p, T, nvec * t / nt, nvec * (t + 1) / nt);
    }
    free(T);
}

#pragma clang attribute pop
