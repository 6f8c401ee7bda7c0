/* Orthonormal Hadamard transforms of rows (QuaRot's rotations): H = H_m (x) H_p with p a power of
 * two (Sylvester's H_p, symmetric, applied by the fast Walsh-Hadamard butterflies in O(p log p))
 * and H_m a small +-1 Hadamard matrix the caller builds (Paley), applied as an m x m mix. */
#include "tq_kernels.h"
#include <math.h>
#include <stdlib.h>

/* In place: x [p] <- H_p x, unnormalised. */
static void fwht(float *x, int64_t p) {
    for (int64_t h = 1; h < p; h *= 2) {
        for (int64_t i = 0; i < p; i += 2 * h) {
            for (int64_t j = i; j < i + h; j++) {
                float a = x[j], b = x[j + h];
                x[j] = a + b;
                x[j + h] = a - b;
            }
        }
    }
}

/* One row: x <- x (H_m (x) H_p) / sqrt(n), or with H_m^T; tmp holds n floats when m > 1.
 * With index a*p + b, (H_m (x) H_p)[a p + b, c p + d] = H_m[a,c] H_p[b,d]: first every chunk
 * of p through H_p, then chunk c = sum_a H_m[a,c] chunk a. */
static void hadamard_row(float *x, int64_t n, const float *hm, int64_t m, int transpose, float *tmp, float norm) {
    int64_t p = n / m;
    for (int64_t a = 0; a < m; a++) fwht(x + a * p, p);
    if (m > 1) {
        for (int64_t c = 0; c < m; c++) {
            float *out = tmp + c * p;
            for (int64_t d = 0; d < p; d++) out[d] = 0.0f;
            for (int64_t a = 0; a < m; a++) {
                float h = transpose ? hm[c * m + a] : hm[a * m + c];
                const float *in = x + a * p;
                for (int64_t d = 0; d < p; d++) out[d] += h * in[d];
            }
        }
        for (int64_t i = 0; i < n; i++) x[i] = tmp[i] * norm;
    } else {
        for (int64_t i = 0; i < n; i++) x[i] *= norm;
    }
}

void tqk_hadamard_rows(float *x, int64_t rows, int64_t n, const float *hm, int64_t m, int transpose) {
    float norm = (float)(1.0 / sqrt((double)n));
    #pragma omp parallel if (rows * n > (1 << 14))
    {
        float *tmp = m > 1 ? tqk_alloc((size_t)n * sizeof(float)) : NULL;
        if (m == 1 || tmp) {
            #pragma omp for schedule(static)
            for (int64_t r = 0; r < rows; r++) hadamard_row(x + r * n, n, hm, m, transpose, tmp, norm);
        }
        free(tmp);
    }
}
