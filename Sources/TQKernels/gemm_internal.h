/* Private to the sgemm files: what an instruction set supplies to the shared driver (gemm.c). */
#ifndef TQK_GEMM_INTERNAL_H
#define TQK_GEMM_INTERNAL_H

#include "tq_kernels.h"

/* acc(mr_max x nr_max) = Ap(mr_max x kc) * Bp(kc x nr_max), Ap packed as d[k*mr_max + r] and Bp as
 * d[k*nr_max + c] (64-byte aligned); then C = alpha*acc + beta*C on the mr x nr corner
 * (beta == 0 never reads C). */
typedef void (*tqk_sgemm_kernel_fn)(int64_t kc, const float *Ap, const float *Bp, float *C,
                                    int64_t ldc, int64_t mr, int64_t nr, float alpha, float beta);

/* A micro-kernel and the blocking tuned for it. nr is a multiple of 16 and mc of mr. */
typedef struct {
    int mr, nr;  /* micro-tile */
    int kc;      /* K block: a kc x nr strip of packed B stays in L1 */
    int mc;      /* rows per task: the packed mc x kc block of A stays in L2 */
    int tasks_per_thread; /* thin M: split N too, into about this many tasks per thread */
    tqk_sgemm_kernel_fn kernel;
} tqk_sgemm_arch;

/* 14x32 zmm kernel (gemm_avx512.c); use only when tqk_use_avx512(). */
TQK_API extern const tqk_sgemm_arch tqk_sgemm_avx512;

#endif
