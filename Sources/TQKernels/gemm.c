/* Single-precision GEMM, BLIS-style: B is packed into KC x NC panels (shared, L3), A into
 * MC x KC blocks (per task, L2), and a 6x16 AVX2/FMA micro-kernel sweeps 16-wide B micro-
 * panels (L1). Transposes are absorbed by the packing routines, so NN/NT/TN/TT share one
 * micro-kernel. */
#include "tq_kernels.h"
#include <immintrin.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

enum { MR = 6, NR = 16, KC = 256, MC = 96, NC = 3072 };

/* Pack rows [i0, i0+mc) x cols [p0, p0+kc) of op(A) into MR-row strips, zero padded. */
static void pack_a(int transA, const float *A, int64_t lda, int64_t i0, int64_t mc, int64_t p0,
                   int64_t kc, float *dst) {
    for (int64_t ir = 0; ir < mc; ir += MR) {
        int64_t mr = mc - ir < MR ? mc - ir : MR;
        float *d = dst + ir * kc;
        if (!transA) {
            for (int64_t r = 0; r < MR; r++) {
                if (r < mr) {
                    const float *s = A + (i0 + ir + r) * lda + p0;
                    for (int64_t k = 0; k < kc; k++) d[k * MR + r] = s[k];
                } else {
                    for (int64_t k = 0; k < kc; k++) d[k * MR + r] = 0.0f;
                }
            }
        } else {
            for (int64_t k = 0; k < kc; k++) {
                const float *s = A + (p0 + k) * lda + i0 + ir;
                int64_t r = 0;
                for (; r < mr; r++) d[k * MR + r] = s[r];
                for (; r < MR; r++) d[k * MR + r] = 0.0f;
            }
        }
    }
}

/* Pack rows [p0, p0+kc) x cols [j0+jr, ...) of op(B), one NR-wide strip, zero padded. */
static void pack_b_strip(int transB, const float *B, int64_t ldb, int64_t p0, int64_t kc,
                         int64_t j, int64_t nr, float *d) {
    if (!transB) {
        for (int64_t k = 0; k < kc; k++) {
            const float *s = B + (p0 + k) * ldb + j;
            float *o = d + k * NR;
            if (nr == NR) {
                _mm256_storeu_ps(o, _mm256_loadu_ps(s));
                _mm256_storeu_ps(o + 8, _mm256_loadu_ps(s + 8));
            } else {
                int64_t c = 0;
                for (; c < nr; c++) o[c] = s[c];
                for (; c < NR; c++) o[c] = 0.0f;
            }
        }
    } else {
        for (int64_t c = 0; c < NR; c++) {
            if (c < nr) {
                const float *s = B + (j + c) * ldb + p0;
                for (int64_t k = 0; k < kc; k++) d[k * NR + c] = s[k];
            } else {
                for (int64_t k = 0; k < kc; k++) d[k * NR + c] = 0.0f;
            }
        }
    }
}

/* acc(6x16) = Ap(6 x kc) * Bp(kc x 16); then C = alpha*acc + beta*C on the mr x nr corner. */
static void micro_kernel(int64_t kc, const float *Ap, const float *Bp, float *C, int64_t ldc,
                         int64_t mr, int64_t nr, float alpha, float beta) {
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
    __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
    for (int64_t k = 0; k < kc; k++) {
        __m256 b0 = _mm256_load_ps(Bp), b1 = _mm256_load_ps(Bp + 8);
        __m256 a;
        a = _mm256_broadcast_ss(Ap + 0); c00 = _mm256_fmadd_ps(a, b0, c00); c01 = _mm256_fmadd_ps(a, b1, c01);
        a = _mm256_broadcast_ss(Ap + 1); c10 = _mm256_fmadd_ps(a, b0, c10); c11 = _mm256_fmadd_ps(a, b1, c11);
        a = _mm256_broadcast_ss(Ap + 2); c20 = _mm256_fmadd_ps(a, b0, c20); c21 = _mm256_fmadd_ps(a, b1, c21);
        a = _mm256_broadcast_ss(Ap + 3); c30 = _mm256_fmadd_ps(a, b0, c30); c31 = _mm256_fmadd_ps(a, b1, c31);
        a = _mm256_broadcast_ss(Ap + 4); c40 = _mm256_fmadd_ps(a, b0, c40); c41 = _mm256_fmadd_ps(a, b1, c41);
        a = _mm256_broadcast_ss(Ap + 5); c50 = _mm256_fmadd_ps(a, b0, c50); c51 = _mm256_fmadd_ps(a, b1, c51);
        Ap += MR;
        Bp += NR;
    }
    __m256 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
    if (nr == NR) {
        for (int64_t r = 0; r < mr; r++) {
            float *c = C + r * ldc;
            for (int h = 0; h < 2; h++) {
                __m256 v = _mm256_mul_ps(acc[r][h], va);
                if (beta != 0.0f) v = _mm256_fmadd_ps(vb, _mm256_loadu_ps(c + 8 * h), v);
                _mm256_storeu_ps(c + 8 * h, v);
            }
        }
    } else {
        float tmp[NR];
        for (int64_t r = 0; r < mr; r++) {
            _mm256_storeu_ps(tmp, acc[r][0]);
            _mm256_storeu_ps(tmp + 8, acc[r][1]);
            float *c = C + r * ldc;
            for (int64_t j = 0; j < nr; j++)
                c[j] = beta != 0.0f ? alpha * tmp[j] + beta * c[j] : alpha * tmp[j];
        }
    }
}

/* 64-byte aligned; aligned_alloc wants a size that is a multiple of the alignment. */
static float *alloc_floats(int64_t n) {
    size_t bytes = ((size_t)n * sizeof(float) + 63) & ~(size_t)63;
    return aligned_alloc(64, bytes);
}

static void scale_c(float *C, int64_t ldc, int64_t M, int64_t N, float beta) {
    #pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
}

void tqk_sgemm(int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha,
               const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
               int64_t ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.0f) {
        scale_c(C, ldc, M, N, beta);
        return;
    }
    int64_t nc_max = N < NC ? N : NC;
    int64_t kc_max = K < KC ? K : KC;
    int64_t n_strips_max = (nc_max + NR - 1) / NR;
    int nthreads = omp_get_max_threads();
    float *Bp = alloc_floats(n_strips_max * NR * kc_max);
    float *Apool = alloc_floats((int64_t)nthreads * MC * kc_max);
    if (!Bp || !Apool) { free(Bp); free(Apool); return; }

    for (int64_t jc = 0; jc < N; jc += NC) {
        int64_t nc = N - jc < NC ? N - jc : NC;
        int64_t n_strips = (nc + NR - 1) / NR;
        for (int64_t pc = 0; pc < K; pc += KC) {
            int64_t kc = K - pc < KC ? K - pc : KC;
            float b = pc == 0 ? beta : 1.0f;
            int64_t m_blocks = (M + MC - 1) / MC;
            /* Split the N panel too when M alone gives too few tasks (thin GEMMs). */
            int64_t n_split = m_blocks >= 2 * nthreads ? 1 : (2 * nthreads + m_blocks - 1) / m_blocks;
            if (n_split > n_strips) n_split = n_strips;
            int64_t strips_per = (n_strips + n_split - 1) / n_split;
            #pragma omp parallel
            {
                #pragma omp for schedule(static)
                for (int64_t s = 0; s < n_strips; s++) {
                    int64_t j = s * NR;
                    int64_t nr = nc - j < NR ? nc - j : NR;
                    pack_b_strip(transB, B, ldb, pc, kc, jc + j, nr, Bp + s * NR * kc);
                }
                float *Ap = Apool + (size_t)omp_get_thread_num() * MC * kc_max;
                int64_t packed_block = -1;
                #pragma omp for schedule(static, 1)
                for (int64_t t = 0; t < m_blocks * n_split; t++) {
                    int64_t ib = t / n_split, ns = t % n_split;
                    int64_t ic = ib * MC;
                    int64_t mc = M - ic < MC ? M - ic : MC;
                    if (packed_block != ib) {
                        pack_a(transA, A, lda, ic, mc, pc, kc, Ap);
                        packed_block = ib;
                    }
                    int64_t s_end = (ns + 1) * strips_per < n_strips ? (ns + 1) * strips_per : n_strips;
                    for (int64_t s = ns * strips_per; s < s_end; s++) {
                        int64_t jr = s * NR;
                        int64_t nr = nc - jr < NR ? nc - jr : NR;
                        for (int64_t ir = 0; ir < mc; ir += MR) {
                            int64_t mr = mc - ir < MR ? mc - ir : MR;
                            micro_kernel(kc, Ap + ir * kc, Bp + s * NR * kc,
                                         C + (ic + ir) * ldc + jc + jr, ldc, mr, nr, alpha, b);
                        }
                    }
                }
            }
        }
    }
    free(Bp);
    free(Apool);
}
