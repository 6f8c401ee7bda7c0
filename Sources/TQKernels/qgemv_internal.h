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

static inline void *xmalloc(size_t n) { return tqk_alloc(n); }

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
