/* tq_kernels.h: the hot loops of libtesseraq, in C with OpenMP.
 * Row-major float32 everywhere. Sizes are int64_t. Nothing here allocates memory that
 * outlives a call, and nothing here reports errors but allocation failures (tqk_alloc_failures):
 * the Swift layer validates first. */
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
/* Applies the library's thread count to the calling thread (OpenMP settings are per thread). */
TQK_API void tqk_apply_num_threads(void);
TQK_API int tqk_get_num_threads(void);
/* 1 when the AVX-512 variants of the kernels run (CPU support, TESSERAQ_NO_AVX512 unset). */
TQK_API int tqk_use_avx512(void);
/* For the calling thread only: AVX-512 variants on (1, where the CPU has them), off (0), or back to
 * the process-wide choice (-1). Returns the calling thread's new state. */
TQK_API int tqk_set_avx512(int enabled);
/* 1 when the CPU has AVX512_BF16 and tqk_use_avx512(). */
TQK_API int tqk_use_avx512_bf16(void);
/* 1 when tqk_gemm_bf16 (without AMX) runs the vdpbf16ps kernel: tqk_use_avx512_bf16() and a CPU
 * where it outruns float32 FMA (not Intel's, which issue it on one port; TESSERAQ_DPBF16=1/0
 * overrides). Else the float32 AVX-512 kernel runs on the rounded operands. */
TQK_API int tqk_use_dpbf16(void);
/* For the calling thread only: the vdpbf16ps kernel on (1, where the CPU has AVX512_BF16), off (0),
 * or back to the process-wide choice (-1). Returns tqk_use_dpbf16() for the calling thread. */
TQK_API int tqk_set_dpbf16(int enabled);
/* 1 when tqk_gemm_bf16 runs the AMX tile kernel: tqk_use_avx512_bf16(), a CPU with AMX-TILE and
 * AMX-BF16, the OS's leave to use tile data (asked for on first call), TESSERAQ_NO_AMX unset. */
TQK_API int tqk_use_amx(void);
/* For the calling thread only: the AMX kernel on (1, where usable), off (0), or back to the
 * process-wide choice (-1). Returns tqk_use_amx() for the calling thread. */
TQK_API int tqk_set_amx(int enabled);

/* ---- allocation ----
 * Every kernel allocates through tqk_alloc (64-byte aligned, released with free), or for a
 * call's transient buffers tqk_scratch_alloc (released with tqk_scratch_free). When an
 * allocation fails the kernel skips the work that needed it, leaving that part of its output
 * unspecified, and the failure is counted: callers compare tqk_alloc_failures() before and after
 * a call and report TQ_ERR_OUT_OF_MEMORY. The count is process-wide, so under memory pressure a
 * concurrent call may report a failure of another's too. Tests inject a failure with the
 * environment variable TESSERAQ_FAIL_ALLOCATION=n: the n-th kernel allocation of the process fails. */
TQK_API void *tqk_alloc(size_t bytes);
/* n * size zeroed bytes (an overflowing product fails). */
TQK_API void *tqk_alloc_zeroed(size_t n, size_t size);
TQK_API int64_t tqk_alloc_failures(void);
/* A transient buffer of one call, released by tqk_scratch_free(p, bytes) on the thread that took
 * it: like tqk_alloc below 1 MiB; from 1 MiB up, a mapping the thread keeps for its next call (the
 * largest it has needed, one in use at a time; a second gets a mapping of its own), so repeated
 * calls fault no pages in, and freed scratch never stays resident in the heap. Handing the kept
 * mapping out again gives back its pages past the request. A thread's kept mapping goes when the
 * thread exits or calls tqk_scratch_release. Counted and failure-injected as tqk_alloc. */
TQK_API void *tqk_scratch_alloc(size_t bytes);
TQK_API void tqk_scratch_free(void *p, size_t bytes);
TQK_API void tqk_scratch_release(void);
/* Bytes the calling thread has requested from tqk_alloc and tqk_scratch_alloc since it started
 * (failed requests too): the difference around a call is what that call allocated on the caller's
 * thread, which for the GEMMs is all of their scratch (checked against tqk_gemm_scratch_bytes). */
TQK_API int64_t tqk_alloc_bytes_on_thread(void);

/* ---- GEMM: C = alpha * op(A) * op(B) + beta * C ----
 * op(A) is M x K (A is K x M when transA), op(B) is K x N (B is N x K when transB).
 * beta == 0 never reads C. Threads: OpenMP, except inside a parallel region, where it runs on the
 * calling thread alone. */
TQK_API void tqk_sgemm(int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha,
                       const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                       float *C, int64_t ldc);

/* As tqk_sgemm with every element of op(A) and op(B) rounded to bfloat16 (to nearest, ties to
 * even; NaN stays NaN) and the products summed in float32, C float32 as in tqk_sgemm. Products of
 * bf16 values are exact in float32, so the result is tqk_sgemm of the rounded operands up to
 * summation order and denormals: where tqk_use_amx(), AMX tiles (tdpbf16ps) add pairs of k into
 * 32x32 float32 tiles of C, 32 k per step; else where tqk_use_dpbf16(), vdpbf16ps sums pairs of
 * k first (both treat denormal inputs as zero); else the float32 kernels run on the rounded values.
 * Twice tqk_sgemm's multiply rate with vdpbf16ps, more on AMX; threads as tqk_sgemm. */
TQK_API void tqk_gemm_bf16(int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha,
                           const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                           float *C, int64_t ldc);

/* Bytes of packing buffers (packed op(B) panel and op(A) blocks) that tqk_sgemm (bf16 == 0) or
 * tqk_gemm_bf16 (bf16 != 0) allocates, and frees before it returns, for these sizes when called
 * outside a parallel region at the current thread count; 0 when a size is not positive, SIZE_MAX
 * past 2^40 (no such GEMM fits in memory). Packed B is cut into panels of about 8 MB, so large
 * GEMMs need little more than that. */
TQK_API size_t tqk_gemm_scratch_bytes(int bf16, int64_t M, int64_t N, int64_t K);

/* y[out] = W x[in], W row-major out x in (the Hugging Face layout): one dot product per output,
 * outputs in parallel above 32K weights. For a single row of activations, where tqk_sgemm would pack W. */
TQK_API void tqk_sgemv(const float *W, const float *x, float *y, int64_t out, int64_t in);
/* As tqk_sgemv with W in bfloat16 (raw bytes, any alignment), float32 products and sums: equal to
 * tqk_sgemv over the widened weights up to summation order (AVX-512 sums 32 lanes, AVX2 16, when
 * tqk_use_avx512() says which). Outputs in parallel above 32K weights, as tqk_sgemv. Halves the
 * bytes a decoding step reads for a bf16 LM head. */
TQK_API void tqk_gemv_bf16(const void *W, const float *x, float *y, int64_t out, int64_t in);

/* ---- element-wise and conversions ---- */
/* The sources are raw bytes of any alignment (a safetensors file places a 2-byte tensor at any
 * offset), read as little-endian 16-bit values. */
TQK_API void tqk_f16_to_f32(const void *src, float *dst, int64_t n);
TQK_API void tqk_bf16_to_f32(const void *src, float *dst, int64_t n);
TQK_API void tqk_f32_to_f16(const float *src, uint16_t *dst, int64_t n);
TQK_API void tqk_f32_to_bf16(const float *src, uint16_t *dst, int64_t n);
/* y[i] += x[i] */
TQK_API void tqk_add(float *y, const float *x, int64_t n);
/* y[r, c] += b[c] */
TQK_API void tqk_add_bias(float *y, const float *b, int64_t rows, int64_t cols);
/* gather rows of a [vocab x dim] float table */
TQK_API void tqk_embed(const float *table, const uint32_t *ids, int64_t n, int64_t dim, float *out);

/* ---- model ops (forward) ---- */
/* y = x / sqrt(mean(x^2) + eps) * w, per row of length dim; y may be x (a row is read before it is
 * written). Rows run in parallel above 32K elements. Qwen3's per-head q/k norm is this kernel on
 * [tokens * heads] rows of head_dim. */
TQK_API void tqk_rmsnorm(const float *x, const float *w, float *y, int64_t rows, int64_t dim, float eps);
/* cos/sin tables [n_pos x half] for angles pos * inv_freq[i] (float32, as Hugging Face) */
TQK_API void tqk_rope_tables(const float *inv_freq, int64_t half, int64_t n_pos, float *cos_t, float *sin_t);
/* in-place rotate_half RoPE on x [n_tokens x n_heads*head_dim], token t at table row t */
TQK_API void tqk_rope(float *x, int64_t n_tokens, int64_t n_heads, int64_t head_dim,
                      const float *cos_t, const float *sin_t);
/* causal grouped-query attention. Q/O [T x H*D], K/V [T x KVH*D]; query head h reads kv head
 * h / (H / KVH). window 0: query t attends keys 0..t; window > 0 (sliding window, as Hugging Face's
 * sliding_window): keys max(0, t - window + 1)..t. Scores s = scale q.k; softcap > 0 replaces them
 * by softcap tanh(s / softcap) before the softmax (Gemma 2's attn_logit_softcapping), 0 leaves them.
 * One (head, query) row per task, rows in parallel. */
TQK_API void tqk_attention(const float *Q, const float *K, const float *V, float *O, int64_t T,
                           int64_t H, int64_t KVH, int64_t D, float scale, int64_t window, float softcap);
/* Attention of n new queries over a KV cache (decoding). Q/O [n x H*D], query i at absolute position
 * pos + i; K/V the cache [(pos + n) x KVH*D], post-RoPE keys, rows 0 .. pos + n - 1 valid (the new
 * tokens' rows already written). Query pos + i attends keys tqk_window_start(pos + i, window) .. pos + i,
 * with the scale, softcap and GQA mapping of tqk_attention and the same arithmetic in the same order,
 * so a row equals tqk_attention's row for the same q and keys. One (head, query) pair per task, heads
 * outermost, in parallel. */
TQK_API void tqk_attention_cached(const float *Q, const float *K, const float *V, float *O, int64_t n, int64_t pos,
                                  int64_t H, int64_t KVH, int64_t D, float scale, int64_t window, float softcap);
/* tqk_attention with Q K^T and P V on tqk_gemm_bf16 (operands, P included, rounded to bfloat16;
 * sums, scores and the softmax float32): the training forward at compute_dtype bf16. Tasks are
 * blocks of 128 queries of one head, in parallel; each runs its GEMMs on its own thread. */
TQK_API void tqk_attention_bf16(const float *Q, const float *K, const float *V, float *O, int64_t T, int64_t H,
                                int64_t KVH, int64_t D, float scale, int64_t window, float softcap);
/* out = silu(g) * u, silu(g) = g / (1 + exp(-g)) with an 8-lane exp about an ulp from expf. */
TQK_API void tqk_swiglu(const float *g, const float *u, float *out, int64_t n);
/* out = gelu_tanh(g) * u, gelu_tanh(x) = x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))) / 2 (PyTorch's
 * gelu(approximate="tanh"), Gemma's gelu_pytorch_tanh); out may be g or u. */
TQK_API void tqk_geglu(const float *g, const float *u, float *out, int64_t n);
/* x = cap tanh(x / cap) in place (Gemma 2's final_logit_softcapping on logits) */
TQK_API void tqk_softcap(float *x, int64_t n, float cap);
/* sum over rows of -log softmax(logits[r])[target[r]], accumulated in double */
TQK_API double tqk_nll_sum(const float *logits, const uint32_t *targets, int64_t rows, int64_t vocab);

/* ---- uniform group quantizer (ALGORITHM.md section 2) ----
 * W is out x in; groups run along `in` (`group` columns, the last one partial). scales and
 * zeros are [n_groups x out], the GPTQ orientation. */
/* Per-group scale and zero point. Scales are rounded to float16 (what the checkpoint stores),
 * and floored at the smallest positive float16, so the grid used is exactly the grid exported. */
TQK_API void tqk_quant_grid(const float *W, int64_t out, int64_t in, int64_t group, int bits, int sym,
                            float *scales, uint8_t *zeros);
/* codes = clamp(rint(W / s) + z, 0, 2^bits - 1), rint rounding half to even (as torch.round) */
TQK_API void tqk_quant_codes(const float *W, const float *scales, const uint8_t *zeros, int64_t out,
                             int64_t in, int64_t group, int bits, uint8_t *codes);
/* W = (float)(code - z) * s */
TQK_API void tqk_dequant_codes(const uint8_t *codes, const float *scales, const uint8_t *zeros,
                               int64_t out, int64_t in, int64_t group, float *W);

/* ---- GPTQ packed weights: packing and kernels on packed words (pack.c, qgemv.c) ----
 * Layout: docs/FORMATS.md. W is out x in; codes are uint8 in [0, 2^bits - 1], bits in {2,3,4,8}.
 * qweight: uint32 [tqk_packed_len(in, bits) x out], codes packed along in.
 * qzeros: uint32 [n_groups x tqk_packed_len(out, bits)], zeros packed along out.
 * scales: float16 bit patterns [n_groups x out]; n_groups = ceil(in / group_size).
 * Values past in (or out) in the last packing unit are padding, written as 0, ignored on read.
 * g_idx: NULL means group(i) = i / group_size; otherwise group(i) = g_idx[i] (act-order). */
/* Number of uint32 words per packed column (qweight rows) / row (qzeros columns) for n values. */
TQK_API int64_t tqk_packed_len(int64_t n, int bits);
/* codes: out x in (W layout, row-major uint8). qweight: [tqk_packed_len(in,bits) x out]. */
TQK_API void tqk_pack_qweight(const uint8_t *codes, int64_t out, int64_t in, int bits, uint32_t *qweight);
TQK_API void tqk_unpack_qweight(const uint32_t *qweight, int64_t out, int64_t in, int bits, uint8_t *codes);
/* zeros: [n_groups x out] uint8; qzeros: [n_groups x tqk_packed_len(out,bits)]. */
TQK_API void tqk_pack_qzeros(const uint8_t *zeros, int64_t n_groups, int64_t out, int bits, uint32_t *qzeros);
TQK_API void tqk_unpack_qzeros(const uint32_t *qzeros, int64_t n_groups, int64_t out, int bits, uint8_t *zeros);
/* Dequantise rows [row_begin, row_end) of W (output rows o) into out_w [(row_end-row_begin) x in]:
 * W[o,i] = scales[g(i), o] * (code[i,o] - zero[g(i),o]), g(i) = g_idx ? g_idx[i] : i / group_size,
 * computed as (float)(code - zero) * scale. scales are float16 bit patterns [n_groups x out]. */
TQK_API void tqk_packed_dequantize(const uint32_t *qweight, const uint32_t *qzeros, const uint16_t *scales,
                                   const int32_t *g_idx, int64_t out, int64_t in, int bits, int64_t group_size,
                                   int64_t row_begin, int64_t row_end, float *out_w);
/* y[out] = W x[in] working directly on the packed words (never materialising W). */
TQK_API void tqk_packed_gemv(const uint32_t *qweight, const uint32_t *qzeros, const uint16_t *scales,
                             const int32_t *g_idx, int64_t out, int64_t in, int bits, int64_t group_size,
                             const float *x, float *y);
/* One packed tensor of the calls that take several (fields as tqk_packed_gemv's arguments). */
typedef struct {
    const uint32_t *qweight, *qzeros;
    const uint16_t *scales;
    const int32_t *g_idx;
    int64_t out, group_size;
    int bits;
} tqk_packed_tensor;
/* y[k][out_k] = W_k x[in] for n tensors sharing x (q/k/v, gate/up): on AVX-512, one parallel
 * region for all of them (one fork and join instead of n); otherwise n tqk_packed_gemv calls. */
TQK_API void tqk_packed_gemv_many(const tqk_packed_tensor *w, int64_t n, int64_t in, const float *x, float *const *y);
/* Y[batch x out] = X[batch x in] W^T, on the packed words. */
TQK_API void tqk_packed_gemm(const uint32_t *qweight, const uint32_t *qzeros, const uint16_t *scales,
                             const int32_t *g_idx, int64_t out, int64_t in, int bits, int64_t group_size,
                             const float *X, int64_t batch, float *Y);
/* ---- end GPTQ packed weights ---- */

/* ---- training: backward passes, fake quantisation, optimiser ----
 * Input gradients of the block's frozen ops (weights of norms etc. are not trained). */
/* RMSNorm backward (weights frozen): y = w * x * r, r = 1/sqrt(mean(x^2)+eps). dx from dy; dx may be dy
 * (a row of dy is read before its dx is written). Rows run in parallel above 32K elements; per-head
 * norms as tqk_rmsnorm. */
TQK_API void tqk_rmsnorm_backward(const float *x, const float *w, const float *dy, float *dx, int64_t rows, int64_t dim,
                                  float eps);
/* RoPE backward: the transpose of tqk_rope's rotation (rotate by -angle), in place on dx [n_tokens x n_heads*head_dim]. */
TQK_API void tqk_rope_backward(float *dx, int64_t n_tokens, int64_t n_heads, int64_t head_dim, const float *cos_t,
                               const float *sin_t);
/* Causal GQA attention backward, recomputing the softmax (no stored attention matrix).
 * Inputs as tqk_attention (Q [T x H*D] post-RoPE, K,V [T x KVH*D], the same window and softcap), dO [T x H*D].
 * Outputs dQ [T x H*D], dK, dV [T x KVH*D] (overwritten, not accumulated). Race-free: per query
 * row for dQ, per (kv head, key block) for dK/dV; results do not depend on the thread count. */
TQK_API void tqk_attention_backward(const float *Q, const float *K, const float *V, const float *dO, float *dQ,
                                    float *dK, float *dV, int64_t T, int64_t H, int64_t KVH, int64_t D, float scale,
                                    int64_t window, float softcap);
/* tqk_attention_backward of tqk_attention_bf16: the softmax recomputed in float32, the products
 * dO V^T, dS K, dS^T Q and P^T dO on tqk_gemm_bf16. Keeps P and dS of one kv head's query heads:
 * 2 (H / KVH) T^2 floats. Outputs overwritten; each has one writer and a fixed summation order,
 * so results do not depend on the thread count. */
TQK_API void tqk_attention_backward_bf16(const float *Q, const float *K, const float *V, const float *dO, float *dQ,
                                         float *dK, float *dV, int64_t T, int64_t H, int64_t KVH, int64_t D,
                                         float scale, int64_t window, float softcap);
/* The scratch tqk_attention_backward (bf16 == 0: K and V transposed into key tiles, 2 KVH D T'
 * floats with T' = T rounded up to 16) or tqk_attention_backward_bf16 (bf16 != 0: 2 (H / KVH) T^2
 * floats) takes in one tqk_scratch_alloc, for the memory estimate; 0 when a size is not positive,
 * SIZE_MAX past 2^20 tokens, heads or head width. */
TQK_API size_t tqk_attention_backward_scratch_bytes(int bf16, int64_t T, int64_t H, int64_t KVH, int64_t D);
/* out = silu(g) * u; given dout: dg, du (all distinct buffers). */
TQK_API void tqk_swiglu_backward(const float *g, const float *u, const float *dout, float *dg, float *du, int64_t n);
/* out = gelu_tanh(g) * u as tqk_geglu; given dout: dg, du (all distinct buffers). */
TQK_API void tqk_geglu_backward(const float *g, const float *u, const float *dout, float *dg, float *du, int64_t n);
/* L = sum_r w_r |y_r - target_r|^2 / rows; dy = 2 w_r (y_r - target_r) / rows, with w_r = row_weight[r]
 * (row_weight NULL: every w_r = 1; dy may be NULL). Returns L (accumulated in double). */
TQK_API double tqk_l2_loss(const float *y, const float *target, int64_t rows, int64_t dim, const float *row_weight, float *dy);
/* out[r] = sum_i x[r, i]^2 (accumulated in double, stored as float), rows in parallel. */
TQK_API void tqk_row_sumsq(const float *x, int64_t rows, int64_t dim, float *out);

/* TesseraQ fake-quantised weights (ALGORITHM.md section 3).
 * Per weight (out x in, row-major): fl = floor(w/s) (float), a = rounding variable, state: 0 soft, 1 hard 0, 2 hard 1.
 * Per group, layout [out x n_groups] (NOTE: transposed w.r.t. tqk_quant_grid's [n_groups x out]),
 * group = `group` consecutive inputs, last partial: s = scale, z = zero point (float), v = DST variable.
 * h(x) = clamp(1.2*sigmoid(x) - 0.1, 0, 1), sigmoid in float32 as 1/(1+exp(-x)), no fma; exp is expf for
 * h(v) and in tqk_fq_harden / tqk_fq_codes (so hardening decisions are exact), and an AVX2 exp within about
 * an ulp of expf for the soft weights' h(a) in tqk_fq_weights and tqk_fq_backward (8 weights at a time;
 * a group's last n mod 8 weights use expf). For a soft weight hw = h(a), hard: 0 or 1. u = fl + hw + z; q = clamp(u, 0, qmax), qmax = 2^bits - 1;
 * w_hat = (q - z) * (s * 2*h(v)). */
TQK_API void tqk_fq_weights(const float *fl, const float *a, const uint8_t *state, const float *s, const float *z,
                            const float *v, int64_t out, int64_t in, int64_t group, int bits, float *w_hat);
/* Given dw = dL/dw_hat (out x in): da (out x in; 0 for hard weights and where u is not strictly inside (0, qmax)):
 *   da = dw * s*2h(v) * h'(a), h'(a) = 1.2*sig(a)*(1-sig(a)) where 0 < 1.2*sig(a)-0.1 < 1, else 0;
 * dv ([out x n_groups], overwritten) = sum over the group of dw * (q - z) * s * 2 * h'(v). */
TQK_API void tqk_fq_backward(const float *fl, const float *a, const uint8_t *state, const float *s, const float *z,
                             const float *v, const float *dw, int64_t out, int64_t in, int64_t group, int bits,
                             float *da, float *dv);
/* Initialise: fl = floor(w/s), a = -log(1.2/(r + 0.1) - 1) with r = w/s - fl, so h(a) = r and the soft
 * weights reproduce w; state = 0 (soft). s is [out x n_groups]. */
TQK_API void tqk_fq_init(const float *w, const float *s, int64_t out, int64_t in, int64_t group, float *fl, float *a,
                         uint8_t *state);
/* PAR hardening for one layer: score = |h(a) - 0.5| over ALL n weights (hard ones score 0.5);
 * t = quantile(score, q), linear interpolation as numpy.quantile's default (virtual index q*(n-1) in double);
 * every SOFT weight with h(a) > 0.5 + t becomes state 2, h(a) < 0.5 - t state 1. Returns t. O(n) expected
 * (selection, no sort). final_ == 1: harden every soft weight by h(a) > 0.5 (-> 2) else (-> 1), return 0. */
TQK_API float tqk_fq_harden(const float *a, uint8_t *state, int64_t n, float q, int final_);
/* The hardening of tqk_fq_harden once its quantile's neighbours are known (tensor parallel: found over
 * every rank's weights): lo and hi the k-th and (k+1)-th smallest scores, gamma the fraction between them.
 * Returns t. */
TQK_API float tqk_fq_harden_between(const float *a, uint8_t *state, int64_t n, double lo, double hi, double gamma);
/* tqk_fq_harden's scores: |h(a) - 0.5| for soft weights, 0.5 for hard ones. */
TQK_API void tqk_fq_scores(const float *a, const uint8_t *state, int64_t n, float *score);
/* How many of x[0..n) are <= t. */
TQK_API int64_t tqk_count_le(const float *x, int64_t n, float t);
/* Final integer codes: q = clamp(fl + h + z, 0, qmax) with h from state (soft treated as h(a) > 0.5). */
TQK_API void tqk_fq_codes(const float *fl, const float *a, const uint8_t *state, const float *z, int64_t out,
                          int64_t in, int64_t group, int bits, uint8_t *codes);
/* OmniQuant's learnable weight clipping (LWC, lwc.c). W is out x in; per group, layout [out x n_groups]
 * (as tqk_fq_*), gamma and beta clip the group's range: xmax = sig(gamma) max(w), xmin = sig(beta) min(w),
 * sig in float32 as 1/(1+expf(-x)). The grid of [xmin, xmax] is exactly tqk_quant_grid's (float16-rounded
 * scale; sym: s = max(|xmin|, |xmax|) / (2^(bits-1) - 1), z = 2^(bits-1)), so gamma = beta = +inf is RTN.
 * Training runs on that float16-rounded scale, so the exported grid is the grid trained.
 * Rows run in parallel; results do not depend on the thread count. */
/* The grid: scales, zeros [n_groups x out] (GPTQ orientation, as tqk_quant_grid). */
TQK_API void tqk_lwc_grid(const float *W, const float *gamma, const float *beta, int64_t out, int64_t in,
                          int64_t group, int bits, int sym, float *scales, uint8_t *zeros);
/* w_hat = (clamp(rint(w / s) + z, 0, qmax) - z) * s on the LWC grid: tqk_quant_codes then
 * tqk_dequant_codes, bit for bit. */
TQK_API void tqk_lwc_weights(const float *W, const float *gamma, const float *beta, int64_t out, int64_t in,
                             int64_t group, int bits, int sym, float *w_hat);
/* dL/dgamma, dL/dbeta from dL/dw_hat (recomputing the grid), through straight-through estimators as
 * OmniQuant's round_ste: rint, the zero point's rounding and the scale's float16 rounding pass the
 * gradient unchanged; a clamp (of a code, of the zero point to [0, qmax], of the range at 1e-5)
 * passes it only where inactive, bounds included (as torch.clamp). sym: the gradient of the
 * absolute maximum goes to the factor that attains it (gamma on a tie). Group sums in double. */
TQK_API void tqk_lwc_backward(const float *W, const float *gamma, const float *beta, const float *dw, int64_t out,
                              int64_t in, int64_t group, int bits, int sym, float *dgamma, float *dbeta);
/* Fused Adam step (t = 1-based step for bias correction), torch.optim.Adam arithmetic; classic L2 weight decay
 * added to the gradient: g' = g + wd * p. m, v are the optimiser state, updated in place. */
TQK_API void tqk_adam(float *p, const float *g, float *m, float *v, int64_t n, float lr, float beta1, float beta2,
                      float eps, float wd, int64_t t);
/* As tqk_adam with the moments m and v stored as bfloat16 bit patterns (half their memory): each step
 * reads them into float32, updates p with the float32 moments exactly as tqk_adam does, and stores
 * them back rounded stochastically (unbiased), with noise hashed from (seed, t, i): the result does
 * not depend on the thread count. Round-to-nearest would lose v's per-step change, since beta2 = 0.999
 * moves v by 0.1%, under bfloat16's spacing of 0.4-0.8%. Scalar loop; threads over i. */
TQK_API void tqk_adam_bf16(float *p, const float *g, uint16_t *m, uint16_t *v, int64_t n, float lr, float beta1, float beta2,
                           float eps, float wd, int64_t t, uint64_t seed);
/* ---- end training ---- */

/* ---- GPTQ (gptq.c): Hessian, inverse-Hessian factor, column loop with error feedback ----
 * W is out x n (row-major), H and U are n x n. Everything is float32 except the factorisation,
 * which runs in double. Groups and grids follow tqk_quant_grid exactly (same float16 scale rounding,
 * same zero point, same codes), over `group` consecutive columns in processing order. */
/* H += X^T X for X [rows x n] (tqk_sgemm, transposed A). */
TQK_API void tqk_gptq_accumulate(float *H, const float *X, int64_t rows, int64_t n);
/* H *= scale; every input with H_ii == 0 ("dead") gets H_ii = 1. dead[i] (may be NULL) = 1 for those.
 * Returns the number of dead inputs (the caller zeroes their weight columns, as the reference does). */
TQK_API int64_t tqk_gptq_hessian_finish(float *H, int64_t n, float scale, uint8_t *dead);
/* In-place lower Cholesky factor of the symmetric positive definite A [n x n] (A = L L^T, the strict
 * upper part zeroed). Returns 0, or k + 1 when pivot k is not positive (A is then garbage). */
TQK_API int tqk_cholesky_f64(double *A, int64_t n);
/* A holds L (lower, as tqk_cholesky_f64 leaves it); on return A = (L L^T)^-1, full and symmetric
 * (torch.cholesky_inverse). */
TQK_API void tqk_cholesky_inverse_f64(double *A, int64_t n);
/* U [n x n] = upper Cholesky factor of (P^T H P + damp I)^-1, as the reference computes it:
 * L = cholesky(H'), H'^-1 = cholesky_inverse(L), U = cholesky(H'^-1, upper), in double, stored as
 * float with the strict lower part zero. perm (NULL = identity): H'[i, j] = H[perm[i], perm[j]].
 * Returns 0, a positive value when a factorisation meets a non-positive pivot (increase damp), or
 * -1 when its working memory cannot be allocated. */
TQK_API int tqk_gptq_inverse_factor(const float *H, int64_t n, double damp, const int64_t *perm, float *U);
/* dst[o, j] = src[o, perm[j]] (float, [out x n]) and dst[o, perm[j]] = src[o, j] (uint8 codes). */
TQK_API void tqk_gptq_gather_columns(const float *src, const int64_t *perm, int64_t out, int64_t n, float *dst);
TQK_API void tqk_gptq_scatter_codes(const uint8_t *src, const int64_t *perm, int64_t out, int64_t n, uint8_t *dst);
/* W = (float)(code - z) * s with the group of input i given by g_idx[i] (act-order layers). */
TQK_API void tqk_dequant_codes_gidx(const uint8_t *codes, const float *scales, const uint8_t *zeros,
                                    const int32_t *g_idx, int64_t out, int64_t in, float *W);
/* The GPTQ column loop on W [out x n] (columns in processing order) with U from tqk_gptq_inverse_factor.
 * Column i: q = clamp(rint(w/s) + z, 0, 2^bits - 1), w_hat = (q - z) s, err = (w - w_hat) / U_ii,
 * the later columns j of the lazy block get w_j -= err U_ij; after each block of block_size columns the
 * columns after it get W[:, i2:] -= Err U[i1:i2, i2:] (one tqk_sgemm). A group's grid (s, z) is computed
 * when its first column is reached, from the fully error-updated weights of its columns (a block is cut
 * short at a group start when that group would run past the block's end), so the result equals the
 * unbatched column-by-column algorithm. codes [out x n]; scales, zeros [n_groups x out],
 * n_groups = ceil(n / group). W is overwritten with w_hat. Returns the reference's error proxy
 * sum((w - w_hat)^2 / U_ii^2) / 2 (in double). Rows run in parallel; results do not depend on the
 * thread count except through tqk_sgemm. */
TQK_API double tqk_gptq_quantize(float *W, int64_t out, int64_t n, const float *U, int64_t group, int bits, int sym,
                                 int64_t block_size, uint8_t *codes, float *scales, uint8_t *zeros);
/* ---- end GPTQ ---- */

/* ---- AWQ: activation-aware scale search and clip search (awq.c, ALGORITHM.md section 4) ----
 * W is out x in (row-major), groups of `group` consecutive inputs (last one partial); the grid of a
 * group is exactly tqk_quant_grid's (float16-rounded scale), codes and dequantisation as
 * tqk_quant_codes / tqk_dequant_codes. */
/* W_out = Q(W * s) / s column-wise: each group of the scaled row gets its own min/max grid.
 * s [in] may be NULL (no scaling: plain RTN quantize-dequantize). W_out may equal W. */
TQK_API void tqk_awq_fake_quant(const float *W, const float *s, int64_t out, int64_t in, int64_t group, int bits,
                                int sym, float *W_out);
/* mean[i] = mean over rows o of |W[o,i]| / max_{j in group(i)} |W[o,j]| (rows whose group is all zero add 0). */
TQK_API void tqk_awq_weight_mean(const float *W, int64_t out, int64_t in, int64_t group, float *mean);
/* acc[c] += sum over rows of |X[r,c]|, X [rows x cols]. */
TQK_API void tqk_awq_abs_sum(const float *X, int64_t rows, int64_t cols, double *acc);
/* Clip search, in place on W: for every row o and group g, over candidates c = shrink[0..n_shrink),
 * w_c = clamp(w, c*min, c*max) (min/max of the group of W), dw = Q(w_c) - w (grid from w_c's min/max),
 * err = mean over the n_tokens rows of X [n_tokens x in] of (X_g dw)^2 = dw^T (X_g^T X_g) dw / n_tokens.
 * Keeps the first candidate with the smallest error and writes W's group clamped with it.
 * mode: 0 auto (Gram blocks when group <= n_tokens, else per-candidate GEMMs), 1 Gram, 2 GEMM.
 * chosen, err_first (error of candidate 0), err_best: [out x n_groups], each may be NULL. */
TQK_API void tqk_awq_clip_search(float *W, int64_t out, int64_t in, int64_t group, int bits, int sym, const float *X,
                                 int64_t n_tokens, const float *shrink, int64_t n_shrink, int mode, float *chosen,
                                 float *err_first, float *err_best);
/* The Gram blocks of the clip search, accumulated: for each group g (columns i0 .. i0+n of X
 * [rows x in]), gram[g*group*group + a*group + b] += sum over rows r = 0, step, 2*step, ... < rows
 * of X[r, i0+a] * X[r, i0+b] (tqk_sgemm, float; a partial last group fills the top-left n x n).
 * gram holds n_groups * group * group floats. Threads: inside tqk_sgemm only. */
TQK_API void tqk_awq_gram_accumulate(const float *X, int64_t rows, int64_t in, int64_t step, int64_t group, float *gram);
/* tqk_awq_clip_search's Gram path from accumulated Gram blocks (tqk_awq_gram_accumulate) of n_tokens
 * rows: err = dw^T G_g dw / n_tokens in double, rows o in parallel (same result at any thread count). */
TQK_API void tqk_awq_clip_search_gram(float *W, int64_t out, int64_t in, int64_t group, int bits, int sym,
                                      const float *gram, int64_t n_tokens, const float *shrink, int64_t n_shrink,
                                      float *chosen, float *err_first, float *err_best);
/* ---- end AWQ ---- */

/* ---- rotations and activation quantisation (QuaRot) ---- */
/* Every row of x [rows x n] in place: x <- x H / sqrt(n), H = H_m (x) H_p (Kronecker product,
 * n = m p, p a power of two), H_p Sylvester's Hadamard matrix (symmetric) applied by fast
 * Walsh-Hadamard butterflies, H_m the m x m +-1 matrix hm (row-major; m = 1 for H_p alone, hm may
 * then be NULL). transpose uses H_m^T, which makes the call the inverse of the plain one (H H^T = n I).
 * Float32 sums; rows in parallel (a row's result does not depend on the thread count). */
TQK_API void tqk_hadamard_rows(float *x, int64_t rows, int64_t n, const float *hm, int64_t m, int transpose);
/* Activations fake-quantised in place, each group of `group` consecutive columns of x [rows x cols]
 * on its own grid (group = cols: per token; group = head_dim: per head). bits 2..8.
 * Asymmetric: hi = clip max(max x, 0), lo = clip min(min x, 0) (an all-zero group takes [-1, 1]),
 * scale = (hi - lo) / (2^bits - 1), zero = round(-lo / scale),
 * x <- (clamp(round(x / scale) + zero, 0, 2^bits - 1) - zero) scale.
 * Symmetric: scale = clip max|x| / (2^(bits-1) - 1) (1 for an all-zero group),
 * x <- clamp(round(x / scale), -2^(bits-1), 2^(bits-1) - 1) scale.
 * round is to nearest, ties to even (torch.round), x / scale a true division; rows in parallel. */
TQK_API void tqk_act_fakequant(float *x, int64_t rows, int64_t cols, int64_t group, int bits, int sym, float clip);

#endif
