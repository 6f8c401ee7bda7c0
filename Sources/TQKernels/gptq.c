/* GPTQ (Frantar et al., 2022): Hessian accumulation, the Cholesky factor of the inverse Hessian,
 * and the column-by-column quantization with lazy-batch error feedback. Declarations and the
 * exact contracts: the "GPTQ" section of tq_kernels.h. */
#include "tq_kernels.h"
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Same conversion as quant.c's tqk_quant_grid: the grid used is the grid exported. */
static inline float round_to_f16(float s) {
    float r = _cvtsh_ss(_cvtss_sh(s, _MM_FROUND_TO_NEAREST_INT));
    return r > 0.0f ? r : 0x1p-24f; /* smallest positive float16 */
}

/* dot product of two double vectors, 4 x 4 lanes with FMA */
static double dotd(const double *a, const double *b, int64_t n) {
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd(), s2 = _mm256_setzero_pd(), s3 = _mm256_setzero_pd();
    int64_t k = 0;
    for (; k + 16 <= n; k += 16) {
        s0 = _mm256_fmadd_pd(_mm256_loadu_pd(a + k), _mm256_loadu_pd(b + k), s0);
        s1 = _mm256_fmadd_pd(_mm256_loadu_pd(a + k + 4), _mm256_loadu_pd(b + k + 4), s1);
        s2 = _mm256_fmadd_pd(_mm256_loadu_pd(a + k + 8), _mm256_loadu_pd(b + k + 8), s2);
        s3 = _mm256_fmadd_pd(_mm256_loadu_pd(a + k + 12), _mm256_loadu_pd(b + k + 12), s3);
    }
    for (; k + 4 <= n; k += 4) s0 = _mm256_fmadd_pd(_mm256_loadu_pd(a + k), _mm256_loadu_pd(b + k), s0);
    __m256d s = _mm256_add_pd(_mm256_add_pd(s0, s1), _mm256_add_pd(s2, s3));
    double t[4];
    _mm256_storeu_pd(t, s);
    double r = (t[0] + t[1]) + (t[2] + t[3]);
    for (; k < n; k++) r += a[k] * b[k];
    return r;
}

void tqk_gptq_accumulate(float *H, const float *X, int64_t rows, int64_t n) {
    if (rows <= 0) return;
    tqk_sgemm(1, 0, n, n, rows, 1.0f, X, n, X, n, 1.0f, H, n);
}

int64_t tqk_gptq_hessian_finish(float *H, int64_t n, float scale, uint8_t *dead) {
    int64_t nd = 0;
    #pragma omp parallel for schedule(static) if (n * n > (1 << 16))
    for (int64_t i = 0; i < n * n; i++) H[i] *= scale;
    for (int64_t i = 0; i < n; i++) {
        int d = H[i * n + i] == 0.0f;
        if (d) { H[i * n + i] = 1.0f; nd++; }
        if (dead) dead[i] = (uint8_t)d;
    }
    return nd;
}

/* Blocked left-looking Cholesky, lower, row-major, in place. */
enum { CB = 64 };

int tqk_cholesky_f64(double *A, int64_t n) {
    int failed = 0;
    for (int64_t k0 = 0; k0 < n && !failed; k0 += CB) {
        int64_t k1 = k0 + CB < n ? k0 + CB : n;
        /* 1. panel rows i >= k0, columns [k0, k1): A[i, j] -= L[i, 0:k0] . L[j, 0:k0] (j <= i) */
        if (k0 > 0) {
            #pragma omp parallel for schedule(static) if ((n - k0) * k0 > 4096)
            for (int64_t i = k0; i < n; i++) {
                int64_t je = i < k1 ? i + 1 : k1;
                for (int64_t j = k0; j < je; j++) A[i * n + j] -= dotd(A + i * n, A + j * n, k0);
            }
        }
        /* 2. the diagonal block, unblocked */
        for (int64_t j = k0; j < k1; j++) {
            double d = A[j * n + j] - dotd(A + j * n + k0, A + j * n + k0, j - k0);
            if (!(d > 0.0)) { failed = (int)(j + 1); break; }
            d = sqrt(d);
            A[j * n + j] = d;
            for (int64_t i = j + 1; i < k1; i++)
                A[i * n + j] = (A[i * n + j] - dotd(A + i * n + k0, A + j * n + k0, j - k0)) / d;
        }
        if (failed) break;
        /* 3. the panel below: forward substitution against the diagonal block, per row */
        #pragma omp parallel for schedule(static) if ((n - k1) * (k1 - k0) > 4096)
        for (int64_t i = k1; i < n; i++)
            for (int64_t j = k0; j < k1; j++)
                A[i * n + j] = (A[i * n + j] - dotd(A + i * n + k0, A + j * n + k0, j - k0)) / A[j * n + j];
    }
    if (failed) return failed;
    #pragma omp parallel for schedule(static) if (n * n > (1 << 16))
    for (int64_t i = 0; i < n; i++) memset(A + i * n + i + 1, 0, (size_t)(n - i - 1) * sizeof(double));
    return 0;
}

void tqk_cholesky_inverse_f64(double *A, int64_t n) {
    /* Y = (L^-1)^T, upper: row j of Y is column j of L^-1, by forward substitution
     * Y[j, i] = (delta_ij - L[i, j:i] . Y[j, j:i]) / L[i, i], i >= j. */
    double *Y = tqk_alloc_zeroed((size_t)(n * n), sizeof(double));
    if (!Y) return; /* counted by tqk_alloc */
    #pragma omp parallel for schedule(static, 1) if (n > 32)
    for (int64_t j = 0; j < n; j++) {
        double *y = Y + j * n;
        y[j] = 1.0 / A[j * n + j];
        for (int64_t i = j + 1; i < n; i++) y[i] = -dotd(A + i * n + j, y + j, i - j) / A[i * n + i];
    }
    /* A^-1 = L^-T L^-1 = Y Y^T: entry (a, b) = Y[a, m:] . Y[b, m:], m = max(a, b) */
    #pragma omp parallel for schedule(static, 1) if (n > 32)
    for (int64_t a = 0; a < n; a++)
        for (int64_t b = a; b < n; b++) {
            double v = dotd(Y + a * n + b, Y + b * n + b, n - b);
            A[a * n + b] = v;
            A[b * n + a] = v;
        }
    free(Y);
}

int tqk_gptq_inverse_factor(const float *H, int64_t n, double damp, const int64_t *perm, float *U) {
    double *A = tqk_alloc((size_t)(n * n) * sizeof(double));
    if (!A) return -1; /* counted by tqk_alloc */
    #pragma omp parallel for schedule(static) if (n * n > (1 << 16))
    for (int64_t i = 0; i < n; i++) {
        int64_t pi = perm ? perm[i] : i;
        for (int64_t j = 0; j < n; j++) A[i * n + j] = (double)H[pi * n + (perm ? perm[j] : j)];
        A[i * n + i] += damp;
    }
    int rc = tqk_cholesky_f64(A, n);
    if (rc == 0) {
        tqk_cholesky_inverse_f64(A, n);
        rc = tqk_cholesky_f64(A, n);
    }
    if (rc == 0) {
        /* upper factor U = L^T of the inverse */
        #pragma omp parallel for schedule(static) if (n * n > (1 << 16))
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < n; j++) U[i * n + j] = j >= i ? (float)A[j * n + i] : 0.0f;
    }
    free(A);
    return rc;
}

void tqk_gptq_gather_columns(const float *src, const int64_t *perm, int64_t out, int64_t n, float *dst) {
    #pragma omp parallel for schedule(static) if (out * n > (1 << 16))
    for (int64_t o = 0; o < out; o++)
        for (int64_t j = 0; j < n; j++) dst[o * n + j] = src[o * n + perm[j]];
}

void tqk_gptq_scatter_codes(const uint8_t *src, const int64_t *perm, int64_t out, int64_t n, uint8_t *dst) {
    #pragma omp parallel for schedule(static) if (out * n > (1 << 16))
    for (int64_t o = 0; o < out; o++)
        for (int64_t j = 0; j < n; j++) dst[o * n + perm[j]] = src[o * n + j];
}

void tqk_dequant_codes_gidx(const uint8_t *codes, const float *scales, const uint8_t *zeros, const int32_t *g_idx,
                            int64_t out, int64_t in, float *W) {
    #pragma omp parallel for schedule(static) if (out * in > (1 << 16))
    for (int64_t o = 0; o < out; o++)
        for (int64_t i = 0; i < in; i++) {
            int64_t g = g_idx[i];
            W[o * in + i] = (float)((int)codes[o * in + i] - (int)zeros[g * out + o]) * scales[g * out + o];
        }
}

double tqk_gptq_quantize(float *W, int64_t out, int64_t n, const float *U, int64_t group, int bits, int sym,
                         int64_t block_size, uint8_t *codes, float *scales, uint8_t *zeros) {
    const float qmax = (float)((1 << bits) - 1);
    const float symq = (float)((1 << (bits - 1)) - 1), symz = (float)(1 << (bits - 1));
    if (block_size < 1) block_size = 1;
    float *Err = tqk_alloc((size_t)(out * block_size) * sizeof(float));
    if (!Err) return NAN; /* counted by tqk_alloc */
    double total = 0.0;
    int64_t i2;
    for (int64_t i1 = 0; i1 < n; i1 = i2) {
        i2 = i1 + block_size < n ? i1 + block_size : n;
        /* A group that starts inside the block and runs past its end would have its grid taken
         * from columns still missing this block's error feedback: end the block at its start. */
        int64_t last = (i2 - 1) / group * group;
        if (last > i1 && (last + group < n ? last + group : n) > i2) i2 = last;
        const int64_t count = i2 - i1;
        #pragma omp parallel for schedule(static) reduction(+ : total) if (out * count * count > (1 << 14))
        for (int64_t o = 0; o < out; o++) {
            float *w = W + o * n;
            float *e = Err + o * count;
            float s = 0.0f, z = 0.0f;
            if (i1 % group != 0) {
                int64_t g = i1 / group;
                s = scales[g * out + o];
                z = (float)zeros[g * out + o];
            }
            double loss = 0.0;
            for (int64_t i = i1; i < i2; i++) {
                if (i % group == 0) {
                    /* the grid of the group [i, i + group) from the current, error-updated weights */
                    int64_t c1 = i + group < n ? i + group : n;
                    float mn = w[i], mx = w[i];
                    for (int64_t c = i + 1; c < c1; c++) {
                        mn = w[c] < mn ? w[c] : mn;
                        mx = w[c] > mx ? w[c] : mx;
                    }
                    if (sym) {
                        float amax = fmaxf(fabsf(mn), fabsf(mx));
                        s = round_to_f16(fmaxf(amax, 1e-5f) / symq);
                        z = symz;
                    } else {
                        s = round_to_f16(fmaxf(mx - mn, 1e-5f) / qmax);
                        z = fminf(fmaxf(-rintf(mn / s), 0.0f), qmax);
                    }
                    int64_t g = i / group;
                    scales[g * out + o] = s;
                    zeros[g * out + o] = (uint8_t)z;
                }
                float q = fminf(fmaxf(rintf(w[i] / s) + z, 0.0f), qmax);
                uint8_t code = (uint8_t)q;
                codes[o * n + i] = code;
                float wq = (float)((int)code - (int)z) * s;
                const float *u = U + i * n;
                float d = u[i];
                float diff = w[i] - wq;
                float err = diff / d;
                loss += (double)diff * (double)diff / ((double)d * (double)d);
                w[i] = wq;
                e[i - i1] = err;
                for (int64_t j = i + 1; j < i2; j++) w[j] -= err * u[j];
            }
            total += loss;
        }
        /* lazy update of the columns after the block: W[:, i2:] -= Err U[i1:i2, i2:] */
        if (i2 < n)
            tqk_sgemm(0, 0, out, n - i2, count, -1.0f, Err, count, U + i1 * n + i2, n, 1.0f, W + i2, n);
    }
    free(Err);
    return total / 2.0;
}
