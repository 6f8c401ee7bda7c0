/* The AMX bf16 GEMM micro-kernel, its packing and blocking, run by the driver in gemm.c when
 * tqk_use_amx() (CPU and OS support checked at run time; the functions are compiled for AMX by the
 * pragma below, the target's flags being AVX2).
 *
 * A 32x32 tile of C is four 16x16 float32 tiles (tmm0-3); each 32-deep K chunk loads two 16x32
 * bf16 tiles of A (tmm4-5, a row of op(A) per tile row) and two 16-pair x 16-column tiles of B
 * (tmm6-7, each row a pair of k for 16 columns, the layout tdpbf16ps reads), then runs four
 * tdpbf16ps: 16K multiply-adds per instruction, where one vdpbf16ps does 32.
 * Packed layouts, both zero padded to whole 32-deep chunks (the arch's kpad):
 * - A strip (32 rows): row r of op(A) as kcs bf16 at 16-bit offset r*kcs (packed here, straight
 *   from op(A): one 64-byte run per row and chunk);
 * - B strip (32 columns): bf16 pairs as vdpbf16ps reads them (tqk_pack_bf16_pairs), 128 bytes per
 *   pair of k, so a tile takes 64 of every 128 bytes. */
#include "gemm_internal.h"
#include <immintrin.h>
#include <string.h>

#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,amx-tile,amx-bf16"))), apply_to = function)

enum { MR = 32, NR = 32, KCHUNK = 32 };

/* kc rounded up to whole K chunks: the depth of a packed strip. */
static inline int64_t chunked(int64_t kc) { return (kc + KCHUNK - 1) / KCHUNK * KCHUNK; }

/* The tile configuration (palette 1): eight 16-row x 64-byte tiles. */
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

/* Tile state is per thread: configured at the start of each thread's share, released after it
 * (so the OS does not save 8 KB of tile data at every switch of an idle thread). */
static void tiles_begin(void) {
    tile_config c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int t = 0; t < 8; t++) {
        c.colsb[t] = 64;
        c.rows[t] = 16;
    }
    _tile_loadconfig(&c);
}

static void tiles_end(void) { _tile_release(); }

/* bfloat16 rounding of 16 floats as tqk_bf16_round8 (to nearest, ties to even; NaN stays NaN):
 * the bf16 in the high half of each 32-bit lane, the low half zero. */
static inline __m512i bf16_round16(__m512 x) {
    __m512i b = _mm512_castps_si512(x);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_add_epi32(b, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF)));
    r = _mm512_mask_or_epi32(r, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), b, _mm512_set1_epi32(0x00400000));
    return _mm512_and_si512(r, _mm512_set1_epi32((int)0xFFFF0000u));
}

/* Mask of the 16 lanes below n. */
static inline __mmask16 below16(int64_t n) { return n >= 16 ? 0xFFFF : n <= 0 ? 0 : (__mmask16)((1u << n) - 1); }

/* In-register 16x16 transpose of 32-bit words: r[i] holds row i on entry, column i on exit. */
static inline void transpose16(__m512i r[16]) {
    __m512i t[16], u[16];
    for (int i = 0; i < 16; i += 2) { /* per 128-bit lane l: rows i, i+1 of columns 4l..4l+3 */
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) { /* u[i + c], lane l: rows i..i+3 of column 4l + c */
        u[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        u[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        u[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        u[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (int c = 0; c < 4; c++) { /* column 4l + c: lane l of u[c], u[4+c], u[8+c], u[12+c] */
        __m512i lo01 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0x44), hi01 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0xEE);
        __m512i lo23 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0x44), hi23 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0xEE);
        r[c] = _mm512_shuffle_i32x4(lo01, lo23, 0x88);
        r[4 + c] = _mm512_shuffle_i32x4(lo01, lo23, 0xDD);
        r[8 + c] = _mm512_shuffle_i32x4(hi01, hi23, 0x88);
        r[12 + c] = _mm512_shuffle_i32x4(hi01, hi23, 0xDD);
    }
}

/* Rows [i0, i0+mc) x cols [p0, p0+kc) of op(A) into 32-row strips of bf16 rows (strip at
 * dst + ir*kcs floats, row r at 16-bit offset r*kcs), zero past mc and kc. */
static void pack_a_amx(int transA, const float *A, int64_t lda, int64_t i0, int64_t mc, int64_t p0, int64_t kc,
                       int mr, float *dst) {
    const int64_t kcs = chunked(kc), rows = (mc + mr - 1) / mr * mr;
    uint32_t *words = (uint32_t *)dst; /* a word is a pair of k: row i's words at i*kcs/2 within its block */
    if (!transA) { /* rows of op(A) are rows of A: round 32 k at a time, keep the high halves in order */
        const __m512i odd = _mm512_set_epi16(63, 61, 59, 57, 55, 53, 51, 49, 47, 45, 43, 41, 39, 37, 35, 33, 31,
                                             29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
        for (int64_t i = 0; i < rows; i++) {
            uint32_t *d = words + i / mr * mr * kcs + i % mr * (kcs / 2);
            if (i >= mc) {
                memset(d, 0, (size_t)kcs * 2);
                continue;
            }
            const float *s = A + (i0 + i) * lda + p0;
            for (int64_t k = 0; k < kcs; k += KCHUNK) {
                __m512i lo = bf16_round16(_mm512_maskz_loadu_ps(below16(kc - k), s + k));
                __m512i hi = bf16_round16(_mm512_maskz_loadu_ps(below16(kc - k - 16), s + k + 16));
                _mm512_storeu_si512(d + k / 2, _mm512_permutex2var_epi16(lo, odd, hi));
            }
        }
        return;
    }
    /* op(A)[i][k] = A[k][i]: rows of A hold 16 i's of one k; pair two rows into 16 words (one pair
     * of k for 16 i's), then a 16x16 transpose makes 16 pairs for each i. */
    for (int64_t ib = 0; ib < rows; ib += 16) {
        __mmask16 m = below16(mc - ib);
        uint32_t *d = words + ib / mr * mr * kcs + ib % mr * (kcs / 2);
        for (int64_t k = 0; k < kcs; k += KCHUNK) {
            __m512i w[16];
            for (int q = 0; q < 16; q++) {
                int64_t k0 = k + 2 * q;
                const float *s = A + (p0 + k0) * lda + i0 + ib;
                __m512 x0 = k0 < kc ? _mm512_maskz_loadu_ps(m, s) : _mm512_setzero_ps();
                __m512 x1 = k0 + 1 < kc ? _mm512_maskz_loadu_ps(m, s + lda) : _mm512_setzero_ps();
                w[q] = _mm512_or_si512(_mm512_srli_epi32(bf16_round16(x0), 16), bf16_round16(x1));
            }
            transpose16(w);
            for (int r = 0; r < 16; r++) _mm512_storeu_si512(d + r * (kcs / 2) + k / 2, w[r]);
        }
    }
}

/* A packed float32 B strip into bf16 pairs, zero pairs up to the 32-deep chunk. */
static void finish_b_amx(float *strip, int64_t kc, int64_t width) {
    tqk_pack_bf16_pairs(strip, kc, width);
    int64_t pairs = (kc + 1) / 2, padded = chunked(kc) / 2;
    memset((uint32_t *)strip + pairs * width, 0, (size_t)((padded - pairs) * width) * 4);
}

/* A whole tile with alpha 1 and beta 0 or 1 (every call of a training step) accumulates in C's
 * own tiles: loaded (beta 1) or zeroed, stored straight back. Anything else goes through a
 * float buffer. */
static void kernel_amx_32x32(int64_t kc, const float *Ap, const float *Bp, float *C, int64_t ldc, int64_t mr,
                             int64_t nr, float alpha, float beta) {
    const int64_t kcs = chunked(kc), a_stride = kcs * 2, c_stride = ldc * 4;
    const char *a = (const char *)Ap, *b = (const char *)Bp;
    const int direct = mr == MR && nr == NR && alpha == 1.0f && (beta == 0.0f || beta == 1.0f);
    if (direct && beta == 1.0f) {
        _tile_loadd(0, C, c_stride);
        _tile_loadd(1, C + 16, c_stride);
        _tile_loadd(2, C + 16 * ldc, c_stride);
        _tile_loadd(3, C + 16 * ldc + 16, c_stride);
    } else {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
    }
    for (int64_t k = 0; k < kcs; k += KCHUNK, a += 64, b += 16 * NR * 4) {
        _tile_loadd(4, a, a_stride);
        _tile_loadd(6, b, NR * 4);
        _tile_dpbf16ps(0, 4, 6);
        _tile_loadd(7, b + 64, NR * 4);
        _tile_dpbf16ps(1, 4, 7);
        _tile_loadd(5, a + 16 * a_stride, a_stride);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    if (direct) {
        _tile_stored(0, C, c_stride);
        _tile_stored(1, C + 16, c_stride);
        _tile_stored(2, C + 16 * ldc, c_stride);
        _tile_stored(3, C + 16 * ldc + 16, c_stride);
        return;
    }
    float acc[MR * NR] __attribute__((aligned(64)));
    _tile_stored(0, acc, NR * 4);
    _tile_stored(1, acc + 16, NR * 4);
    _tile_stored(2, acc + 16 * NR, NR * 4);
    _tile_stored(3, acc + 16 * NR + 16, NR * 4);
    /* C = alpha * acc + beta * C on the mr x nr corner; masked-off lanes are not touched. */
    __mmask16 mask[2] = {below16(nr), below16(nr - 16)};
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    for (int64_t r = 0; r < mr; r++)
        for (int h = 0; h < 2; h++) {
            float *c = C + r * ldc + 16 * h;
            __m512 v = _mm512_mul_ps(_mm512_load_ps(acc + r * NR + 16 * h), va);
            if (beta != 0.0f) v = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mask[h], c), v);
            _mm512_mask_storeu_ps(c, mask[h], v);
        }
}

#pragma clang attribute pop

/* kc: deep K blocks (1024: 64 KB B strips and 640 KB A blocks, in the 2 MB L2) because each
 * kernel call pays for C's tile loads and stores and the tile pipeline's drain; measured 321-345 ms
 * per bench step against 368 with 512 (Xeon with AMX, 2 threads). */
const tqk_sgemm_arch tqk_sgemm_amx_bf16 = {
    .mr = MR, .nr = NR, .kc = 1024, .mc = 320, .tasks_per_thread = 2,
    .kernel = kernel_amx_32x32, .finish = finish_b_amx, .kpad = KCHUNK, .pack_a = pack_a_amx,
    .thread_begin = tiles_begin, .thread_end = tiles_end,
};
