/* AVX-512 fast-path GEMV on GPTQ-packed words (g_idx NULL or trivial), run by tqk_packed_gemv
 * when tqk_use_avx512(); the functions are compiled for AVX-512 by the pragma below.
 *
 * Nibble tables instead of decoding values. A column's packed words are one bit stream whose
 * bit q belongs to value i = q / B with weight 2^(q mod B), so
 *   sum_i c_i x_i = sum over the stream's 4-bit nibbles n of T_n[nibble n],
 *   T_n[m] = sum over the set bits t of m of 2^((4n + t) mod B) x[(4n + t) / B].
 * vpermps looks up 16 columns at once and reads only the low 4 bits of each index lane, so a
 * word whose nibble n sits at the bottom is the index as it is: per word of 16 columns, 3 extra
 * loads at byte offsets + 4 shifts + 8 permutes + 8 adds for 32/B values whatever B is (AVX2:
 * AND + CVT + FMA per value and 8 columns), and 3-bit values straddling words need nothing
 * special (nibbles never straddle). The tables (512 B per packed row) depend on x only; each
 * thread builds those of two units at a time and runs their rows, in pairs, over all columns into
 * an accumulator row in L1, so the packed words are read in memory order. At the end of a group's
 * rows, zero points and scales are applied as in qgemv.c: y += s * (acc - z * sum(x over the rows)).
 * Threads split the input dimension: no barrier (a thread needs only its own tables), one
 * sequential stream each; thread 0 accumulates into y, the others into partial sums added at the
 * end. Small matrices (SmolLM2's are 28-440 KB) are bound by per-call costs, the fork and join
 * above all, so several tensors sharing x (q/k/v, gate/up) can go through one parallel region. */
#include "qgemv_internal.h"
#include <float.h>
#include <omp.h>
#include <string.h>

#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma,bmi2"))), apply_to = function)

enum {
    TABLE_FLOATS = 8 * 16, /* per packed row: 8 nibbles x 16 entries */
    CHUNK_UNITS = 2,       /* units whose tables are built together: rows go through in pairs */
    PF_BYTES = 8192,       /* prefetch distance in the stream of packed rows */
    STACK_SCRATCH = 8192,  /* floats of partial sums and accumulators kept on the stack (32 KB) */
    /* packed bytes from which a second thread pays: the fork and join (~0.6 us) cost about what
     * a thread saves on a 192 x 576 3-bit matrix (41 KB) */
    PARALLEL_MIN_BYTES = 40 << 10,
    /* the other threads start ~0.2 us after the calling one (time-stamp counter), about the time
     * of this many packed words: the calling thread takes them on top of its share (of the first
     * tensor) */
    LEAD_WORDS = 640,
};

/* xf[0, n) = x[i0, i0 + n), 0 past `in`; subnormals flushed (microcode assists in the hot loop;
 * they contribute < 2^-100), and so are NaNs, as qgemv.c's prescale does: NaN in x reaches y
 * through the sums of x over each run of a group (sum_x). */
static void flush_x(const float *x, int64_t in, int64_t i0, int64_t n, float *xf) {
    const __m512 tiny = _mm512_set1_ps(FLT_MIN);
    for (int64_t k = 0; k < n; k += 16) {
        const int64_t i = i0 + k;
        const __mmask16 m = (__mmask16)(i + 16 <= in ? 0xFFFF : i < in ? (1u << (in - i)) - 1 : 0);
        const __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        _mm512_store_ps(xf + k, _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(_mm512_abs_ps(v), tiny, _CMP_GE_OQ), v));
    }
}

/* Tables of the packed rows of n_units units (B bits) whose values are xf. Nibble n of word w of
 * a unit holds bits of at most two values j0, j0 + 1 of the unit, so its table is
 * xf[j0] * C0 + xf[j0 + 1] * C1, where Ck[m] = the part of value jk that nibble value m encodes. */
AI void build_tables(const int B, const float *xf, int64_t n_units, float *T) {
    const int V = B == 3 ? 32 : 32 / B, WPU = B == 3 ? 3 : 1;
    __m512 bit[4]; /* bit t of entry m, as 0 or 1 */
    for (int t = 0; t < 4; t++)
        bit[t] = _mm512_maskz_mov_ps((__mmask16)(t == 0 ? 0xAAAA : t == 1 ? 0xCCCC : t == 2 ? 0xF0F0 : 0xFF00),
                                     _mm512_set1_ps(1.0f));
    __m512 C[3][8][2];
    for (int w = 0; w < WPU; w++)
        for (int n = 0; n < 8; n++) {
            const int q0 = 32 * w + 4 * n, j0 = q0 / B;
            C[w][n][0] = C[w][n][1] = _mm512_setzero_ps();
            for (int t = 0; t < 4; t++) {
                const int q = q0 + t;
                C[w][n][q / B - j0] = _mm512_fmadd_ps(bit[t], _mm512_set1_ps((float)(1 << (q % B))), C[w][n][q / B - j0]);
            }
        }
    for (int64_t u = 0; u < n_units; u++) {
        const float *xu = xf + u * V;
        float *Tu = T + u * WPU * TABLE_FLOATS;
#pragma clang loop unroll(full)
        for (int w = 0; w < WPU; w++)
#pragma clang loop unroll(full)
            for (int n = 0; n < 8; n++) {
                const int q0 = 32 * w + 4 * n, j0 = q0 / B;
                __m512 e = _mm512_mul_ps(_mm512_set1_ps(xu[j0]), C[w][n][0]);
                if ((q0 + 3) / B > j0) e = _mm512_fmadd_ps(_mm512_set1_ps(xu[j0 + 1]), C[w][n][1], e);
                _mm512_store_ps(Tu + w * TABLE_FLOATS + 16 * n, e);
            }
    }
}

/* Sum of the table lookups of one 16-column vector of a packed row (w: its words loaded at byte
 * offsets 0..3, t: the row's 8 tables). Nibbles 2k and 2k + 1 of each word are the low and high
 * nibble of its byte k: a load k bytes further puts byte k in the low bits of each lane (vpermps
 * ignores the rest), so 4 loads and 4 shifts give the 8 indices. Pairwise sums keep the chains short. */
AI __m512 row_lookup(const __m512i *w, const __m512 *t) {
    __m512 s[4];
    for (int k = 0; k < 4; k++)
        s[k] = _mm512_add_ps(_mm512_permutexvar_ps(w[k], t[2 * k]), _mm512_permutexvar_ps(_mm512_srli_epi32(w[k], 4), t[2 * k + 1]));
    return _mm512_add_ps(_mm512_add_ps(s[0], s[1]), _mm512_add_ps(s[2], s[3]));
}

/* acc[0, out) += the lookups of R (1 or 2) consecutive packed rows from qw (out words each) in
 * their tables T. Rows are read front to back, as the rows before and after them: the hardware
 * prefetchers see one sequential stream per thread (a tile of rows swept column block by column
 * block reached about half the bandwidth from DRAM), and a prefetch PF_BYTES ahead covers the
 * latency the lookups' work leaves exposed. The last vector loads only the bytes of the row (the
 * loads at byte offsets would run past the end of qweight); 0 words look up entry 0, which is 0. */
AI void rows_acc(const int R, const uint32_t *qw, int64_t out, const float *T, float *acc) {
    __m512 t[2][8];
    for (int r = 0; r < R; r++)
        for (int n = 0; n < 8; n++) t[r][n] = _mm512_load_ps(T + r * TABLE_FLOATS + 16 * n);
    const int64_t full = (out - 1) / 16; /* vectors before the last */
    __m512i w[4];
    for (int64_t v = 0; v < full; v++) {
        __m512 sum = _mm512_load_ps(acc + 16 * v);
        for (int r = 0; r < R; r++) {
            const char *q = (const char *)(qw + r * out + 16 * v);
            for (int k = 0; k < 4; k++) w[k] = _mm512_loadu_si512(q + k);
            _mm_prefetch(q + PF_BYTES, _MM_HINT_T0);
            sum = _mm512_add_ps(sum, row_lookup(w, t[r]));
        }
        _mm512_store_ps(acc + 16 * v, sum);
    }
    const __mmask64 bytes = _pdep_u64((1u << (out - 16 * full)) - 1, 0x1111111111111111ull);
    __m512 sum = _mm512_load_ps(acc + 16 * full);
    for (int r = 0; r < R; r++) {
        const char *q = (const char *)(qw + r * out + 16 * full);
        for (int k = 0; k < 4; k++) w[k] = _mm512_maskz_loadu_epi8(bytes, q + k);
        sum = _mm512_add_ps(sum, row_lookup(w, t[r]));
    }
    _mm512_store_ps(acc + 16 * full, sum);
}

/* Zero points of columns o..o+15 of one qzeros row (cols words), o a multiple of 16, as floats;
 * lanes past the row's end are garbage, ignored by the caller. */
AI __m512 zeros16(const uint32_t *zrow, int64_t cols, const int B, int64_t o) {
    const int64_t P0 = o * B, w0 = P0 >> 5, avail = cols - w0; /* avail >= 1 */
    __m512i z;
    if (B == 2) { /* one word */
        z = _mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32((int)zrow[w0]),
                                               _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30)),
                             _mm512_set1_epi32(3));
    } else if (B == 8) {
        z = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(avail >= 4 ? 0xFFFF : (__mmask16)((1u << (4 * avail)) - 1), zrow + w0));
    } else {
        /* the 16 values lie in the 64 bits from word w0, from bit 0 (or 16 when B = 3): even
         * lanes from one 64-bit shift, odd lanes from another, moved up to the high halves */
        const __m512i q = _mm512_broadcastq_epi64(_mm_maskz_loadu_epi32(avail >= 2 ? 3 : 1, zrow + w0));
        const __m512i sh = _mm512_add_epi64(_mm512_set1_epi64(B == 3 ? P0 & 31 : 0),
                                            _mm512_mullo_epi64(_mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14),
                                                               _mm512_set1_epi64(B)));
        const __m512i even = _mm512_srlv_epi64(q, sh);
        const __m512i odd = _mm512_srlv_epi64(q, _mm512_add_epi64(sh, _mm512_set1_epi64(B)));
        z = _mm512_and_si512(_mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32)),
                             _mm512_set1_epi32((1 << B) - 1));
    }
    return _mm512_cvtepi32_ps(z);
}

/* y += s * (acc - z * sx) over the columns of a run of rows of group g (sx: the sum of x over the
 * run), and acc = 0 for the next run */
AI void group_finish(const int B, const Problem *p, int64_t g, float sx, float *acc, float *y) {
    for (int64_t o = 0; o < p->out; o += 16) {
        const __mmask16 m = (__mmask16)((1u << min64(16, p->out - o)) - 1);
        const __m512 z = zeros16(p->qzeros + g * p->cols_z, p->cols_z, B, o);
        const __m512 s = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p->scales + g * p->out + o));
        const __m512 d = _mm512_fnmadd_ps(z, _mm512_set1_ps(sx), _mm512_load_ps(acc + o));
        _mm512_mask_storeu_ps(y + o, m, _mm512_fmadd_ps(s, d, _mm512_maskz_loadu_ps(m, y + o)));
        _mm512_store_ps(acc + o, _mm512_setzero_ps());
    }
}

/* sum of x over values [i0, i1), in double */
static float sum_x(const float *x, int64_t i0, int64_t i1) {
    __m512d s = _mm512_setzero_pd();
    int64_t i = i0;
    for (; i + 8 <= i1; i += 8) s = _mm512_add_pd(s, _mm512_cvtps_pd(_mm256_loadu_ps(x + i)));
    double r = _mm512_reduce_add_pd(s);
    for (; i < i1; i++) r += x[i];
    return (float)r;
}

/* y = the product of units [u0, u1) (all columns) with x; acc: padded_out zeroed floats of scratch
 * (zero again on return). CHUNK_UNITS units at a time: their tables (x only), then their packed
 * rows into acc; at the end of each group's run of units, acc scaled into y. */
AI void gemv_units_body(const int B, const Problem *p, const float *x, int64_t u0, int64_t u1, float *acc, float *y) {
    const int64_t out = p->out, V = p->V, WPU = p->WPU;
    float T[CHUNK_UNITS * 3 * TABLE_FLOATS] __attribute__((aligned(64))); /* a chunk's tables: WPU <= 3 */
    float xf[CHUNK_UNITS * 32] __attribute__((aligned(64)));              /* a chunk's values: V <= 32 */
    memset(y, 0, (size_t)out * sizeof(float));
    const int64_t GU = p->n_groups == 1 ? p->U : p->group_size / V; /* units per group */
    for (int64_t a = u0; a < u1;) {
        const int64_t g = a / GU, b = min64((g + 1) * GU, u1);
        for (int64_t u = a; u < b; u += CHUNK_UNITS) {
            const int64_t units = min64(CHUNK_UNITS, b - u), rows = units * WPU;
            const uint32_t *qw = p->qweight + u * WPU * out;
            flush_x(x, p->in, u * V, units * V, xf);
            build_tables(B, xf, units, T);
            int64_t r = 0;
            for (; r + 2 <= rows; r += 2) rows_acc(2, qw + r * out, out, T + r * TABLE_FLOATS, acc);
            if (r < rows) rows_acc(1, qw + r * out, out, T + r * TABLE_FLOATS, acc);
        }
        group_finish(B, p, g, sum_x(x, a * V, min64(b * V, p->in)), acc, y);
        a = b;
    }
}

#define DEF_GEMV_UNITS(Bv)                                                                           \
    static void gemv_units_##Bv(const Problem *p, const float *x, int64_t u0, int64_t u1, float *acc, float *y) { \
        gemv_units_body(Bv, p, x, u0, u1, acc, y);                                                                \
    }
DEF_GEMV_UNITS(2)
DEF_GEMV_UNITS(3)
DEF_GEMV_UNITS(4)
DEF_GEMV_UNITS(8)

static void gemv_units(const Problem *p, const float *x, int64_t u0, int64_t u1, float *acc, float *y) {
    switch (p->bits) {
    case 2: gemv_units_2(p, x, u0, u1, acc, y); break;
    case 3: gemv_units_3(p, x, u0, u1, acc, y); break;
    case 4: gemv_units_4(p, x, u0, u1, acc, y); break;
    default: gemv_units_8(p, x, u0, u1, acc, y); break;
    }
}

/* floats of a tensor's partial sums: out, rounded up to whole vectors */
static int64_t padded_out(const Problem *p) { return (p->out + 15) & ~(int64_t)15; }

/* y += partial sums, out floats */
static void add_partial(float *y, const float *q, int64_t out) {
    for (int64_t o = 0; o < out; o += 16) {
        const __mmask16 m = (__mmask16)((1u << min64(16, out - o)) - 1);
        _mm512_mask_storeu_ps(y + o, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, y + o), _mm512_maskz_loadu_ps(m, q + o)));
    }
}

void tqk_packed_gemv_fast_avx512(const Problem *ps, int64_t n, const float *x) {
    /* per_thread: partial sums of every tensor; acc_len: the row accumulators of the widest */
    int64_t bytes = 0, per_thread = 0, acc_len = 0, min_units = INT64_MAX;
    for (int64_t k = 0; k < n; k++) {
        bytes += ps[k].U * ps[k].WPU * ps[k].out * 4;
        per_thread += padded_out(&ps[k]);
        acc_len = max64(acc_len, padded_out(&ps[k]));
        min_units = min64(min_units, ps[k].U);
    }
    const int64_t nt_max = bytes >= PARALLEL_MIN_BYTES ? min64(omp_get_max_threads(), min_units) : 1;
    /* threads 1 .. nt_max-1's partial sums, then every thread's accumulators */
    const int64_t partial_len = per_thread * (nt_max - 1), scratch_len = partial_len + acc_len * nt_max;
    float stack_scratch[STACK_SCRATCH] __attribute__((aligned(64)));
    float *scratch = scratch_len <= STACK_SCRATCH ? stack_scratch : xmalloc((size_t)scratch_len * sizeof(float));
    if (!scratch) {
        for (int64_t k = 0; k < n; k++)
            for (int64_t o = 0; o < ps[k].out; o++) ps[k].Y[o] = __builtin_nanf("");
        return;
    }
    int64_t nt_used = 1;
    #pragma omp parallel num_threads((int)nt_max) if (nt_max > 1)
    {
        const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
        if (t == 0) nt_used = nt;
        float *acc = scratch + partial_len + t * acc_len;
        memset(acc, 0, (size_t)acc_len * sizeof(float));
        int64_t off = (t - 1) * per_thread; /* of this thread's sums (t > 0) */
        for (int64_t k = 0; k < n; k++) {
            const Problem *p = &ps[k];
            const int64_t unit_words = p->WPU * p->out;
            const int64_t lead = nt > 1 && k == 0 ? min64(p->U / 2, (LEAD_WORDS + unit_words / 2) / unit_words) : 0;
            const int64_t rest = p->U - lead;
            gemv_units(p, x, t ? lead + rest * t / nt : 0, lead + rest * (t + 1) / nt, acc, t ? scratch + off : p->Y);
            off += padded_out(p);
        }
    }
    const float *q = scratch;
    for (int64_t t = 1; t < nt_used; t++)
        for (int64_t k = 0; k < n; k++) {
            add_partial(ps[k].Y, q, ps[k].out);
            q += padded_out(&ps[k]);
        }
    if (scratch != stack_scratch) free(scratch);
}

#pragma clang attribute pop
