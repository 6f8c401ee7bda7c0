/* Private to the sgemm files: what an instruction set supplies to the shared driver (gemm.c). */
#ifndef TQK_GEMM_INTERNAL_H
#define TQK_GEMM_INTERNAL_H

#include "tq_kernels.h"

/* acc(mr_max x nr_max) = Ap(mr_max x kc) * Bp(kc x nr_max), Ap packed as d[k*mr_max + r] and Bp as
 * d[k*nr_max + c] (64-byte aligned); then C = alpha*acc + beta*C on the mr x nr corner
 * (beta == 0 never reads C). */
typedef void (*tqk_sgemm_kernel_fn)(int64_t kc, const float *Ap, const float *Bp, float *C,
                                    int64_t ldc, int64_t mr, int64_t nr, float alpha, float beta);

/* Rewrites, in place, a packed strip of kc x width floats (d[k*width + c]) into what the kernel
 * reads (below). */
typedef void (*tqk_pack_finish_fn)(float *strip, int64_t kc, int64_t width);

/* Packs rows [i0, i0+mc) x cols [p0, p0+kc) of op(A) into mr-row strips, each kcs floats per row
 * (kcs = kc rounded up to the arch's kpad), zero padded to whole strips: what the kernel reads. */
typedef void (*tqk_pack_a_fn)(int transA, const float *A, int64_t lda, int64_t i0, int64_t mc,
                              int64_t p0, int64_t kc, int mr, float *dst);

/* A micro-kernel and the blocking tuned for it. nr is a multiple of 16 and mc of mr. */
typedef struct {
    int mr, nr;  /* micro-tile */
    int kc;      /* K block: a kc x nr strip of packed B stays in L1 */
    int mc;      /* rows per task: the packed mc x kc block of A stays in L2 */
    int tasks_per_thread; /* thin M: split N too, into about this many tasks per thread */
    tqk_sgemm_kernel_fn kernel;
    tqk_pack_finish_fn finish; /* run on every packed strip of B, and of A unless pack_a; NULL: none */
    int kpad;    /* > 1: K blocks are multiples of it and packed strips hold kc rounded up to it */
    tqk_pack_a_fn pack_a; /* NULL: the float32 packer, then finish */
    void (*thread_begin)(void), (*thread_end)(void); /* around each thread's share; NULL: none */
} tqk_sgemm_arch;

/* Packed strips rounded to bfloat16 values, kept as float32: a float32 kernel then computes the
 * bf16 GEMM where the CPU has no bf16 dot product. */
TQK_API void tqk_pack_round_bf16(float *strip, int64_t kc, int64_t width);
/* Packed strips turned into bf16 pairs: 32-bit word p*width + c holds rows 2p (low half) and
 * 2p+1 (high half, 0 past kc) of column c, each rounded to bfloat16, as vdpbf16ps reads them.
 * AVX-512 (gemm_avx512.c): only where tqk_use_avx512(), as the kernels that read pairs. */
TQK_API void tqk_pack_bf16_pairs(float *strip, int64_t kc, int64_t width);

/* 14x32 zmm kernels (gemm_avx512.c); use only when tqk_use_avx512(): float32, the same on
 * bf16-rounded strips, and the vdpbf16ps one (only when tqk_use_dpbf16()). */
TQK_API extern const tqk_sgemm_arch tqk_sgemm_avx512;
TQK_API extern const tqk_sgemm_arch tqk_sgemm_avx512_rounded;
TQK_API extern const tqk_sgemm_arch tqk_sgemm_avx512_bf16;
/* 32x32 AMX tile kernel (gemm_amx.c), bf16 operands: only when tqk_use_amx(). */
TQK_API extern const tqk_sgemm_arch tqk_sgemm_amx_bf16;

/* The kernel tqk_gemm_bf16 runs on the calling thread (tqk_use_amx etc. may be overridden per
 * thread), and the driver on a given arch: kernels that call the GEMM from their own parallel
 * tasks choose the arch once, on the caller's thread. Inside a parallel region the GEMM runs
 * on the calling thread alone. */
TQK_API const tqk_sgemm_arch *tqk_gemm_bf16_arch(void);
TQK_API void tqk_gemm_with(const tqk_sgemm_arch *arch, int transA, int transB, int64_t M, int64_t N, int64_t K,
                           float alpha, const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                           int64_t ldc);

#endif
