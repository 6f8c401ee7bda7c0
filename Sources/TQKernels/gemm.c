/* Single-precision GEMM, BLIS-style: the driver, the packing routines and the AVX2/FMA kernel.
 *
 * op(B) is packed once per call (per N panel) into NR-wide strips for every K block, shared by
 * all threads; then threads take tasks (a block of C rows x a range of strips) from an atomic
 * counter. A task walks the K blocks: it packs its rows of op(A) for that K block (L2) and runs
 * an MR x NR FMA micro-kernel over each B strip (L1), adding into C. When tasks split N (or N
 * spans panels), op(A) is instead packed once up front and shared, so no row block is packed
 * twice. Called inside a parallel region, the GEMM runs on the calling thread alone.
 * Transposes are absorbed by the packing routines, so NN/NT/TN/TT share one micro-kernel.
 * tqk_gemm_bf16 runs the same driver with operands rounded to bfloat16 as they are packed: into
 * bf16 rows and pairs for the AMX tile kernel (gemm_amx.c, which packs A itself and pads K to whole
 * tile chunks), into bf16 pairs for the vdpbf16ps kernel (where tqk_use_dpbf16()), else into
 * float32 values for the float32 kernels.
 * The micro-kernel and blocking come from a tqk_sgemm_arch: the 6x16 AVX2 one here, or the
 * 14x32 AVX-512 one (gemm_avx512.c) when tqk_use_avx512(). Packing is AVX2 for both: it moves
 * O(MK + KN) floats against O(MNK) flops; only the bf16 pair conversion, which the AVX-512
 * kernels alone read, is AVX-512 (its masked stores are slow in AVX2 on AMD).
 *
 * Why this shape:
 * - one parallel region per call and two barriers per N panel (B is packed for all of K up
 *   front), instead of a parallel region per K block; a task keeps its C block in cache
 *   across the K blocks;
 * - B packing units and tasks are claimed dynamically (atomic counters: libomp 14 cannot link
 *   clang 21's schedule(dynamic)), so a core lost to another process does not stall the other;
 * - operands are packed by walking their rows (contiguous reads, which the prefetcher streams),
 *   with 8x8 AVX transposes where K runs along the rows, instead of strided scalar copies. */
#include "gemm_internal.h"
#include "vec.h"
#include <immintrin.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

enum {
    MR = 6, NR = 16,   /* AVX2 micro-tile: 12 accumulators + 2 B vectors + 1 A broadcast = 15 ymm */
    KC = 256,          /* K block: a 16-wide B strip (KC*NR*4 = 16 KB) stays in a 32 KB L1 */
    MC = 96,           /* rows per task: the packed A block (MC*KC*4 = 96 KB) stays in L2 */
    B_PANEL = 1 << 21, /* floats of packed B per N panel (8 MB): K x nc, shared in L3 */
    TASKS_PER_THREAD = 4,   /* thin M: split N too, so dynamic claiming can balance */
    PACK_STRIPS = 4,        /* B packing unit: 4 strips (64 or 128 columns) of one K block */
    SERIAL_FLOPS = 1 << 22, /* below this a fork/join costs more than it saves */
    A_SLACK = 16,           /* floats after a packed A block: pack_a's 8-wide stores spill into it */
};

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* Pack rows [i0, i0+mc) x cols [p0, p0+kc) of op(A) into mr-row strips (strip at dst + ir*kcs,
 * d[k*mr + r]), zero padded. Stores are 8 floats wide, in groups of 8 rows: a last group of
 * fewer rows spills into the next k (or strip), which is written afterwards; the caller leaves
 * 8 floats of slack after the block. */
static void pack_a(int transA, const float *A, int64_t lda, int64_t i0, int64_t mc, int64_t p0,
                   int64_t kc, int64_t kcs, int mr, float *dst) {
    if (transA) { /* op(A)[i][k] = A[k][i]: walk the rows of A, mr floats of each to each strip
                   * (walking a column, stride lda > 2 KB, defeats the prefetcher), 16 rows at a
                   * time: each strip then gets 16*mr floats in one run of whole cache lines while
                   * those rows stay in L1 (mr floats per strip per row leaves every strip's lines
                   * half written). Within a k the last group goes first, as below; its spill lands
                   * in k + 1, but at k = kc-1 in the next strip, already written: there the store
                   * is masked. */
        for (int64_t k0 = 0; k0 < kc; k0 += 16)
            for (int64_t ir = 0; ir < mc; ir += mr)
                for (int64_t k = k0; k < min64(k0 + 16, kc); k++) {
                    const float *s = A + (p0 + k) * lda + i0;
                    for (int h = (mr - 1) / 8 * 8; h >= 0; h -= 8) {
                        int64_t rows = mc - ir - h; /* masked at the block's end: never reads past it */
                        __m256 v = rows >= 8 ? _mm256_loadu_ps(s + ir + h) : _mm256_maskload_ps(s + ir + h, tqk_lanes_below(rows));
                        float *d = dst + ir * kcs + k * mr + h;
                        if (k == kc - 1 && h + 8 > mr) _mm256_maskstore_ps(d, tqk_lanes_below(mr - h), v);
                        else _mm256_storeu_ps(d, v);
                    }
                }
        return;
    }
    for (int64_t ir = 0; ir < mc; ir += mr) {
        int64_t m = min64(mc - ir, mr);
        float *d = dst + ir * kcs;
        const float *s = A + (i0 + ir) * lda + p0;
        int64_t k = 0;
        if (m == mr) { /* per group: up to 8 rows x 8 k -> 8x8 transpose -> 8 groups of rows */
            for (; k + 8 <= kc; k += 8) {
                /* Last group first: the full groups then overwrite what its stores spill. */
                for (int h = (mr - 1) / 8 * 8; h >= 0; h -= 8) {
                    __m256 r[8];
                    for (int q = 0; q < 8; q++)
                        r[q] = h + q < mr ? _mm256_loadu_ps(s + (h + q) * lda + k) : _mm256_setzero_ps();
                    tqk_transpose8(r);
                    for (int q = 0; q < 8; q++) _mm256_storeu_ps(d + (k + q) * mr + h, r[q]);
                }
            }
        }
        for (; k < kc; k++)
            for (int64_t r = 0; r < mr; r++) d[k * mr + r] = r < m ? s[r * lda + k] : 0.0f;
    }
}

/* Pack rows [p0, p0+kc) x cols [j0, j0+nc) of op(B) into nr-wide strips (strip s at
 * d + s*nr*kcs, d[k*nr + c]), zero padded; nr is a multiple of 8. */
static void pack_b(int transB, const float *B, int64_t ldb, int64_t p0, int64_t kc, int64_t kcs, int64_t j0,
                   int64_t nc, int nr, float *dst) {
    if (!transB) { /* walk rows of B (contiguous reads), nr floats to each strip */
        for (int64_t k = 0; k < kc; k++) {
            const float *s = B + (p0 + k) * ldb + j0;
            float *d = dst + k * nr;
            int64_t j = 0;
            for (; j + nr <= nc; j += nr, d += nr * kcs)
                for (int h = 0; h < nr; h += 8) _mm256_store_ps(d + h, _mm256_loadu_ps(s + j + h));
            if (j < nc)
                for (int64_t c = 0; c < nr; c++) d[c] = j + c < nc ? s[j + c] : 0.0f;
        }
        return;
    }
    /* op(B)[k][c] = B[c][k]: 8x8 transposes of 8 rows of B x 8 k */
    for (int64_t j = 0; j < nc; j += nr) {
        float *d = dst + j * kcs;
        int64_t k = 0;
        if (j + nr <= nc) {
            for (; k + 8 <= kc; k += 8) {
                for (int h = 0; h < nr; h += 8) {
                    const float *s = B + (j0 + j + h) * ldb + p0 + k;
                    __m256 r[8];
                    for (int q = 0; q < 8; q++) r[q] = _mm256_loadu_ps(s + q * ldb);
                    tqk_transpose8(r);
                    for (int q = 0; q < 8; q++) _mm256_store_ps(d + (k + q) * nr + h, r[q]);
                }
            }
        }
        for (; k < kc; k++)
            for (int64_t c = 0; c < nr; c++)
                d[k * nr + c] = j + c < nc ? B[(j0 + j + c) * ldb + p0 + k] : 0.0f;
    }
}

/* acc(6x16) = Ap(6 x kc) * Bp(kc x 16); then C = alpha*acc + beta*C on the mr x nr corner. */
static void micro_kernel(int64_t kc, const float *Ap, const float *Bp, float *C, int64_t ldc,
                         int64_t mr, int64_t nr, float alpha, float beta) {
    /* C is touched only after the k loop: start pulling its lines in now. */
    for (int64_t r = 0; r < mr; r++) {
        _mm_prefetch((const char *)(C + r * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(C + r * ldc + NR - 1), _MM_HINT_T0);
    }
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

static const tqk_sgemm_arch sgemm_avx2 = {MR, NR, KC, MC, TASKS_PER_THREAD, micro_kernel, NULL};
static const tqk_sgemm_arch sgemm_avx2_rounded = {MR, NR, KC, MC, TASKS_PER_THREAD, micro_kernel, tqk_pack_round_bf16};

void tqk_pack_round_bf16(float *strip, int64_t kc, int64_t width) {
    int64_t n = kc * width, i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_si256((__m256i *)(strip + i), tqk_bf16_round8(_mm256_loadu_ps(strip + i)));
    if (i < n) {
        __m256i m = tqk_lanes_below(n - i);
        _mm256_maskstore_ps(strip + i, m, _mm256_castsi256_ps(tqk_bf16_round8(_mm256_maskload_ps(strip + i, m))));
    }
}

/* Rows [i0, i0+mc) x cols [p0, p0+kc) of op(A) into what arch's kernel reads: mr-row strips of
 * kcs = kc rounded up to kpad values per row, strip ir at dst + ir*kcs. */
static void pack_a_block(const tqk_sgemm_arch *arch, int transA, const float *A, int64_t lda, int64_t i0, int64_t mc,
                         int64_t p0, int64_t kc, int64_t kpad, float *dst) {
    if (arch->pack_a) {
        arch->pack_a(transA, A, lda, i0, mc, p0, kc, arch->mr, dst);
        return;
    }
    int64_t kcs = cdiv(kc, kpad) * kpad;
    pack_a(transA, A, lda, i0, mc, p0, kc, kcs, arch->mr, dst);
    if (arch->finish)
        for (int64_t ir = 0; ir < mc; ir += arch->mr) arch->finish(dst + ir * kcs, kc, arch->mr);
}

/* Shared packed A: row block mi (rows from i0) of K block b, each block followed by its own
 * A_SLACK floats, so one block's spilling stores never touch another's. */
static inline float *shared_a_at(float *Apool, int64_t a_block, int64_t b, int64_t mi, int64_t i0, int64_t kcs) {
    return Apool + b * a_block + i0 * kcs + mi * A_SLACK;
}

static void scale_c(float *C, int64_t ldc, int64_t M, int64_t N, float beta) {
    #pragma omp parallel for schedule(static) if (M * N > 65536)
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
}

/* How one call is blocked and split, and the packing buffers it needs (gemm, and
 * tqk_gemm_scratch_bytes, which reports them before a run). */
typedef struct {
    int64_t kpad, kc_max, n_kb, kcs_max, n_panels, nc_max, m_strips, m_tasks, n_tasks, a_block, a_floats;
    int nt, shared_a;
    int64_t b_floats, apool_floats, a_offset;
    size_t scratch_bytes;
} gemm_plan;

static gemm_plan plan_gemm(const tqk_sgemm_arch *arch, int64_t M, int64_t N, int64_t K) {
    gemm_plan p;
    /* Micro-tile tm x tn and blocking bk (K), bm (rows) of the instruction set in use. */
    const int64_t tm = arch->mr, tn = arch->nr, bk = arch->kc, bm = arch->mc;
    /* K blocks of equal size (multiple of 8 for the transposing packers, and of kpad), no thin
     * tail; a packed strip holds kcs(kc) rows. */
    p.kpad = arch->kpad > 1 ? arch->kpad : 1;
    const int64_t kalign = p.kpad > 8 ? p.kpad : 8;
    p.kc_max = min64(K, cdiv(cdiv(K, cdiv(K, bk)), kalign) * kalign);
    p.n_kb = cdiv(K, p.kc_max);
    p.kcs_max = cdiv(p.kc_max, p.kpad) * p.kpad;
    /* N panels: packed B is K x nc; equal panels, each a multiple of tn. */
    p.n_panels = cdiv(K * cdiv(N, tn) * tn, B_PANEL);
    p.nc_max = cdiv(cdiv(N, p.n_panels), tn) * tn;
    /* Tasks: m_tasks blocks of <= bm rows (a multiple of the thread count, rows spread
     * evenly in tm units), times n_tasks ranges of strips when rows alone are too few. */
    int nt = omp_get_max_threads();
    /* Called from a parallel region (attention's per-head tasks): the caller owns the threads. */
    if (nt < 1 || omp_in_parallel() || 2.0 * M * N * K < SERIAL_FLOPS) nt = 1;
    p.m_strips = cdiv(M, tm);
    p.m_tasks = cdiv(p.m_strips, bm / tm);
    p.m_tasks = min64(p.m_strips, cdiv(p.m_tasks, nt) * nt);
    p.n_tasks = 1;
    int64_t want = (int64_t)arch->tasks_per_thread * nt;
    if (nt > 1 && p.m_tasks < want) p.n_tasks = min64(p.nc_max / tn, cdiv(want, p.m_tasks));
    if (nt > p.m_tasks * p.n_tasks) nt = (int)(p.m_tasks * p.n_tasks);
    p.nt = nt;
    /* When tasks split N, or N spans panels, each row block would be packed once per N range: then
     * op(A) is packed once up front instead, shared like B (shared_a_at), unless that would exceed
     * the B panel's budget. */
    p.a_block = p.m_strips * tm * p.kcs_max + A_SLACK * p.m_tasks;
    p.shared_a = (p.n_tasks > 1 || p.n_panels > 1) && p.n_kb * p.a_block <= B_PANEL;
    p.a_floats = p.shared_a ? 0 : bm * p.kcs_max + A_SLACK;
    p.b_floats = p.n_kb * p.kcs_max * p.nc_max;
    p.apool_floats = p.shared_a ? p.n_kb * p.a_block : (int64_t)nt * p.a_floats;
    /* One scratch buffer: packed B, then the A pool from the next 64-byte boundary. */
    p.a_offset = cdiv(p.b_floats, 16) * 16;
    p.scratch_bytes = (size_t)(p.a_offset + p.apool_floats) * sizeof(float);
    return p;
}

static void gemm(const tqk_sgemm_arch *arch, int transA, int transB, int64_t M, int64_t N, int64_t K,
                 float alpha, const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                 int64_t ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.0f) {
        scale_c(C, ldc, M, N, beta);
        return;
    }
    const gemm_plan pl = plan_gemm(arch, M, N, K);
    const int64_t tm = arch->mr, tn = arch->nr, kpad = pl.kpad, kc_max = pl.kc_max, n_kb = pl.n_kb;
    const int64_t kcs_max = pl.kcs_max, nc_max = pl.nc_max, m_strips = pl.m_strips, m_tasks = pl.m_tasks;
    const int64_t n_tasks = pl.n_tasks, a_block = pl.a_block, a_floats = pl.a_floats;
    const int nt = pl.nt, shared_a = pl.shared_a;
    float *Bp = tqk_scratch_alloc(pl.scratch_bytes);
    if (!Bp) return; /* counted by tqk_scratch_alloc */
    float *Apool = Bp + pl.a_offset;
    int64_t a_next = 0; /* shared A: packing units (K block, row block) claimed */
    /* Work counters [panel parity][0: B packing units, 1: tasks]. Units and tasks are claimed
     * dynamically, so a thread that loses its core to another process is not waited for. */
    int64_t next[2][2] = {{0, 0}, {0, 0}};

    #pragma omp parallel num_threads(nt)
    {
        float *Ap = Apool + (int64_t)omp_get_thread_num() * a_floats;
        if (arch->thread_begin) arch->thread_begin();
        if (shared_a) {
            for (;;) {
                int64_t u = __atomic_fetch_add(&a_next, 1, __ATOMIC_RELAXED);
                if (u >= n_kb * m_tasks) break;
                int64_t mi = u % m_tasks, p0 = u / m_tasks * kc_max, kc = min64(K - p0, kc_max);
                int64_t i0 = mi * m_strips / m_tasks * tm, i1 = min64((mi + 1) * m_strips / m_tasks * tm, M);
                pack_a_block(arch, transA, A, lda, i0, i1 - i0, p0, kc, kpad,
                             shared_a_at(Apool, a_block, u / m_tasks, mi, i0, cdiv(kc, kpad) * kpad));
            }
            #pragma omp barrier /* A is packed */
        }
        int64_t panel = 0;
        for (int64_t jc = 0; jc < N; jc += nc_max, panel++) {
            int64_t nc = min64(N - jc, nc_max);
            int64_t n_strips = cdiv(nc, tn);
            int64_t nsplit = min64(n_tasks, n_strips);
            int64_t ntask = m_tasks * nsplit;
            int64_t *ctr = next[panel & 1];
            /* Reset the next panel's counters; safe since the previous panel (same parity)
             * ended with a barrier. */
            if (omp_get_thread_num() == 0) next[(panel + 1) & 1][0] = next[(panel + 1) & 1][1] = 0;

            /* Pack op(B)[0:K, jc:jc+nc]: K block b starts at Bp + b*kcs_max*n_strips*tn. A unit is
             * (K block, PACK_STRIPS strips): rows of PACK_STRIPS*tn floats, read contiguously. */
            int64_t n_groups = cdiv(n_strips, PACK_STRIPS);
            for (;;) {
                int64_t u = __atomic_fetch_add(&ctr[0], 1, __ATOMIC_RELAXED);
                if (u >= n_kb * n_groups) break;
                int64_t p0 = (u / n_groups) * kc_max, s = (u % n_groups) * PACK_STRIPS;
                int64_t kc = min64(K - p0, kc_max), kcs = cdiv(kc, kpad) * kpad;
                int64_t width = min64(nc - s * tn, PACK_STRIPS * tn);
                float *dst = Bp + (u / n_groups) * kcs_max * n_strips * tn + s * tn * kcs;
                pack_b(transB, B, ldb, p0, kc, kcs, jc + s * tn, width, (int)tn, dst);
                if (arch->finish)
                    for (int64_t c = 0; c < width; c += tn) arch->finish(dst + c * kcs, kc, tn);
            }
            #pragma omp barrier /* B is packed */
            for (;;) {
                int64_t t = __atomic_fetch_add(&ctr[1], 1, __ATOMIC_RELAXED);
                if (t >= ntask) break;
                int64_t mi = t / nsplit, ni = t % nsplit;
                int64_t i0 = mi * m_strips / m_tasks * tm;
                int64_t i1 = min64((mi + 1) * m_strips / m_tasks * tm, M);
                int64_t s0 = ni * n_strips / nsplit, s1 = (ni + 1) * n_strips / nsplit;
                for (int64_t p0 = 0; p0 < K; p0 += kc_max) {
                    int64_t kc = min64(K - p0, kc_max), kcs = cdiv(kc, kpad) * kpad;
                    float b = p0 == 0 ? beta : 1.0f;
                    const float *Bk = Bp + p0 / kc_max * kcs_max * n_strips * tn;
                    const float *Ak = Ap;
                    if (shared_a) Ak = shared_a_at(Apool, a_block, p0 / kc_max, mi, i0, kcs);
                    else pack_a_block(arch, transA, A, lda, i0, i1 - i0, p0, kc, kpad, Ap);
                    for (int64_t s = s0; s < s1; s++) {
                        int64_t nr = min64(nc - s * tn, tn);
                        for (int64_t ir = 0; ir < i1 - i0; ir += tm)
                            arch->kernel(kc, Ak + ir * kcs, Bk + s * tn * kcs,
                                         C + (i0 + ir) * ldc + jc + s * tn, ldc,
                                         min64(i1 - i0 - ir, tm), nr, alpha, b);
                    }
                }
            }
            #pragma omp barrier /* the next panel overwrites Bp */
        }
        if (arch->thread_end) arch->thread_end();
    }
    tqk_scratch_free(Bp, pl.scratch_bytes);
}

/* The float32 kernel tqk_sgemm runs on the calling thread. */
static const tqk_sgemm_arch *sgemm_arch(void) { return tqk_use_avx512() ? &tqk_sgemm_avx512 : &sgemm_avx2; }

void tqk_sgemm(int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha,
               const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
               int64_t ldc) {
    gemm(sgemm_arch(), transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

const tqk_sgemm_arch *tqk_gemm_bf16_arch(void) {
    return tqk_use_amx()         ? &tqk_sgemm_amx_bf16
         : tqk_use_dpbf16()      ? &tqk_sgemm_avx512_bf16
         : tqk_use_avx512()      ? &tqk_sgemm_avx512_rounded
                                 : &sgemm_avx2_rounded;
}

void tqk_gemm_with(const tqk_sgemm_arch *arch, int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha,
                   const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    gemm(arch, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* Past this the plan's products could overflow; no such GEMM fits in memory. */
#define TOO_LARGE (INT64_C(1) << 40)

size_t tqk_gemm_scratch_bytes(int bf16, int64_t M, int64_t N, int64_t K) {
    if (M <= 0 || N <= 0 || K <= 0) return 0;
    if (M > TOO_LARGE || N > TOO_LARGE || K > TOO_LARGE) return SIZE_MAX;
    gemm_plan p = plan_gemm(bf16 ? tqk_gemm_bf16_arch() : sgemm_arch(), M, N, K);
    return p.scratch_bytes;
}

void tqk_gemm_bf16(int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha,
                   const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                   int64_t ldc) {
    gemm(tqk_gemm_bf16_arch(), transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
