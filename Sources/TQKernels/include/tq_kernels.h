/* tq_kernels.h: the hot loops of libtesseraq, in C with OpenMP.
 * Row-major float32 everywhere. Sizes are int64_t. Nothing here allocates memory that
 * outlives a call, and nothing here reports errors: the Swift layer validates first. */
#ifndef TQ_KERNELS_H
#define TQ_KERNELS_H

#include <stdint.h>
#include <stddef.h>

/* Hidden in libtesseraq.so; bench/ rebuilds the kernels with -DTQK_API= to call them. */
#ifndef TQK_API
#define TQK_API __attribute__((visibility("hidden")))
#endif

/* ---- runtime ---- */
/* 1 when the CPU has AVX2, FMA and F16C (the kernels are compiled for them). */
TQK_API int tqk_cpu_supported(void);
TQK_API void tqk_set_num_threads(int n);
TQK_API int tqk_get_num_threads(void);

/* ---- GEMM: C = alpha * op(A) * op(B) + beta * C ----
 * op(A) is M x K (A is K x M when transA), op(B) is K x N (B is N x K when transB).
 * beta == 0 never reads C. */
TQK_API void tqk_sgemm(int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha,
                       const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                       float *C, int64_t ldc);

/* ---- element-wise and conversions ---- */
TQK_API void tqk_f16_to_f32(const uint16_t *src, float *dst, int64_t n);
TQK_API void tqk_bf16_to_f32(const uint16_t *src, float *dst, int64_t n);
TQK_API void tqk_f32_to_f16(const float *src, uint16_t *dst, int64_t n);
TQK_API void tqk_f32_to_bf16(const float *src, uint16_t *dst, int64_t n);
/* y[i] += x[i] */
TQK_API void tqk_add(float *y, const float *x, int64_t n);
/* y[r, c] += b[c] */
TQK_API void tqk_add_bias(float *y, const float *b, int64_t rows, int64_t cols);
/* gather rows of a [vocab x dim] float table */
TQK_API void tqk_embed(const float *table, const uint32_t *ids, int64_t n, int64_t dim, float *out);

/* ---- model ops (forward) ---- */
/* y = x / sqrt(mean(x^2) + eps) * w, per row of length dim */
TQK_API void tqk_rmsnorm(const float *x, const float *w, float *y, int64_t rows, int64_t dim, float eps);
/* cos/sin tables [n_pos x half] for angles pos * inv_freq[i] (float32, as Hugging Face) */
TQK_API void tqk_rope_tables(const float *inv_freq, int64_t half, int64_t n_pos, float *cos_t, float *sin_t);
/* in-place rotate_half RoPE on x [n_tokens x n_heads*head_dim], token t at table row t */
TQK_API void tqk_rope(float *x, int64_t n_tokens, int64_t n_heads, int64_t head_dim,
                      const float *cos_t, const float *sin_t);
/* causal grouped-query attention. Q/O [T x H*D], K/V [T x KVH*D]. */
TQK_API void tqk_attention(const float *Q, const float *K, const float *V, float *O, int64_t T,
                           int64_t H, int64_t KVH, int64_t D, float scale);
/* out = silu(g) * u */
TQK_API void tqk_swiglu(const float *g, const float *u, float *out, int64_t n);
/* sum over rows of -log softmax(logits[r])[target[r]], accumulated in double */
TQK_API double tqk_nll_sum(const float *logits, const uint32_t *targets, int64_t rows, int64_t vocab);

#endif
