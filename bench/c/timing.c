/* Timing loops for bench/packed_bench.py, compiled into its kernel library. Calls are timed here,
 * in C, because a Python call through ctypes (~1 us) is as long as a small packed GEMV: every
 * function returns the best wall time of one call over `reps` calls (at least min_seconds in
 * all), after one warm-up call. The fp32 reference is numpy's own OpenBLAS, called through the
 * cblas function pointers passed in. */
#include "tq_kernels.h"
#include <time.h>

typedef void (*cblas_sgemv_fn)(int order, int trans, int64_t m, int64_t n, float alpha, const float *a,
                               int64_t lda, const float *x, int64_t incx, float beta, float *y, int64_t incy);
typedef void (*cblas_sgemm_fn)(int order, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                               const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
                               int64_t ldc);

enum { ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112 };

typedef struct {
    const uint32_t *qweight, *qzeros;
    const uint16_t *scales;
    const int32_t *g_idx;
    int64_t out, in, group, batch;
    int bits;
    const float *X;
    float *Y;
    void *blas; /* cblas function, for the fp32 reference */
    const tqk_packed_tensor *many; /* tqk_packed_gemv_many: n_many tensors, outputs ys */
    int64_t n_many;
    float *const *ys;
} Call;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void run_packed(const Call *c) {
    if (c->batch == 1)
        tqk_packed_gemv(c->qweight, c->qzeros, c->scales, c->g_idx, c->out, c->in, c->bits, c->group, c->X, c->Y);
    else
        tqk_packed_gemm(c->qweight, c->qzeros, c->scales, c->g_idx, c->out, c->in, c->bits, c->group, c->X,
                        c->batch, c->Y);
}

/* Y = X W^T, W fp32 [out x in] passed as qweight */
static void run_sgemm(const Call *c) {
    tqk_sgemm(0, 1, c->batch, c->out, c->in, 1.0f, c->X, c->in, (const float *)c->qweight, c->in, 0.0f, c->Y, c->out);
}

static void run_blas(const Call *c) {
    const float *W = (const float *)c->qweight;
    if (c->batch == 1)
        ((cblas_sgemv_fn)c->blas)(ROW_MAJOR, NO_TRANS, c->out, c->in, 1.0f, W, c->in, c->X, 1, 0.0f, c->Y, 1);
    else
        ((cblas_sgemm_fn)c->blas)(ROW_MAJOR, NO_TRANS, TRANS, c->batch, c->out, c->in, 1.0f, c->X, c->in, W, c->in,
                                  0.0f, c->Y, c->out);
}

static void run_many(const Call *c) { tqk_packed_gemv_many(c->many, c->n_many, c->in, c->X, c->ys); }

static double best_time(void (*run)(const Call *), const Call *c, int64_t reps, double min_seconds) {
    run(c);
    double best = 1e30;
    const double start = now();
    for (int64_t n = 0; n < reps || (now() - start < min_seconds && n < 50 * reps); n++) {
        const double t = now();
        run(c);
        const double d = now() - t;
        if (d < best) best = d;
    }
    return best;
}

/* kind 0: tqk_packed_gemv (batch 1) / tqk_packed_gemm; 1: tqk_sgemm NT on the fp32 W passed as
 * qweight; 2: the cblas sgemv (batch 1) / sgemm `blas` on that W */
double tqb_best_time(int kind, const uint32_t *qweight, const uint32_t *qzeros, const uint16_t *scales,
                     const int32_t *g_idx, int64_t out, int64_t in, int bits, int64_t group, const float *X,
                     int64_t batch, float *Y, void *blas, int64_t reps, double min_seconds) {
    const Call c = {qweight, qzeros, scales, g_idx, out, in, group, batch, bits, X, Y, blas};
    return best_time(kind == 0 ? run_packed : kind == 1 ? run_sgemm : run_blas, &c, reps, min_seconds);
}

/* tqk_packed_gemv_many of n tensors sharing x (in values) */
double tqb_best_time_many(const tqk_packed_tensor *w, int64_t n, int64_t in, const float *x, float *const *ys,
                          int64_t reps, double min_seconds) {
    const Call c = {.in = in, .X = x, .many = w, .n_many = n, .ys = ys};
    return best_time(run_many, &c, reps, min_seconds);
}

/* The GEMV cycling through n distinct copies of the packed weights (so that each call streams
 * them from DRAM): the best over `rounds` of (time of one pass over all copies) / n. */
double tqb_cold_time(const uint32_t *const *qweight, const uint32_t *const *qzeros, const uint16_t *const *scales,
                     int64_t n, int64_t out, int64_t in, int bits, int64_t group, const float *x, float *y,
                     int64_t rounds) {
    double best = 1e30;
    for (int64_t r = 0; r < rounds; r++) {
        const double t = now();
        for (int64_t i = 0; i < n; i++)
            tqk_packed_gemv(qweight[i], qzeros[i], scales[i], NULL, out, in, bits, group, x, y);
        const double d = (now() - t) / (double)n;
        if (d < best) best = d;
    }
    return best;
}
