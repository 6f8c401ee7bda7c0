/* Private to the packed-weight kernels: the problem description and the helpers that qgemv.c
 * (AVX2) and qgemv_avx512.c share. */
#ifndef TQK_QGEMV_INTERNAL_H
#define TQK_QGEMV_INTERNAL_H

#include "tq_kernels.h"
#include <immintrin.h>
#include <stdlib.h>

#define AI static inline __attribute__((always_inline))

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

static inline void *xmalloc(size_t n) {
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? n : 64) != 0) return NULL;
    return p;
}

/* lane l < n set */
AI __m256i lane_mask(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* Zero points of columns o..o+7 of one qzeros row (cols words); lanes past the row's end are
 * padding or garbage and must be ignored by the caller. */
AI __m256i zero_vec(const uint32_t *zrow, int64_t cols, const int B, int64_t o) {
    const int64_t P0 = o * B, w0 = P0 >> 5;
    const int nw = (int)min64(8, cols - w0);
    const __m256i words = _mm256_maskload_epi32((const int *)(zrow + w0), lane_mask(nw));
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

typedef struct {
    const uint32_t *qweight, *qzeros;
    const uint16_t *scales;
    int64_t out, in, bits, group_size, n_groups, cols_z;
    int64_t U, V, WPU; /* units along in, values per unit, words per unit */
    /* fast path (AVX2) */
    int64_t n_tiles;
    const int64_t *tile_u0, *tile_u1, *tile_g;
    const float *xs;  /* [batch x U*V] prescaled x, zero padded */
    const float *sx;  /* [batch x n_tiles] sum of x over each tile */
    /* generic path */
    const int32_t *gmap; /* [U*V] group of each value (padding -> 0) */
    const float *X;      /* [batch x in] */
    int64_t batch;
    float *Y;            /* [batch x out] */
} Problem;

/* The fast-path GEMVs of n tensors with x (ps from setup(), Y set, the same `in`) on AVX-512
 * nibble tables, in one parallel region (qgemv_avx512.c); use only when tqk_use_avx512(). */
TQK_API void tqk_packed_gemv_fast_avx512(const Problem *ps, int64_t n, const float *x);

#endif
