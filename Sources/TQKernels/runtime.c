/* CPU feature check, instruction-set choice and thread count. */
#include "tq_kernels.h"
#include <omp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

int tqk_cpu_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
}

/* AVX-512 kernels are chosen at run time: used when the CPU has AVX512F/BW/DQ/VL (and BMI2, which
 * all of those have; the packed GEMV uses it), unless the environment sets TESSERAQ_NO_AVX512=1.
 * tqk_set_avx512 overrides that for the calling thread only (tests run both paths side by side);
 * kernels decide on the calling thread, before any parallel region. -1 = not decided yet / no
 * override. */
static int tqk_avx512 = -1;
static _Thread_local int tqk_avx512_thread = -1;

static int cpu_has_avx512(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("bmi2");
}

int tqk_use_avx512(void) {
    if (tqk_avx512_thread >= 0) return tqk_avx512_thread;
    if (tqk_avx512 < 0) {
        const char *off = getenv("TESSERAQ_NO_AVX512");
        tqk_avx512 = cpu_has_avx512() && !(off && off[0] && off[0] != '0');
    }
    return tqk_avx512;
}

/* Checked on top of tqk_use_avx512(), so TESSERAQ_NO_AVX512 and tqk_set_avx512(0) turn it off too. */
int tqk_use_avx512_bf16(void) {
    static int has = -1;
    if (has < 0) {
        __builtin_cpu_init();
        has = __builtin_cpu_supports("avx512bf16");
    }
    return has && tqk_use_avx512();
}

/* vdpbf16ps doubles float32 FMA's multiply rate only where it issues on as many ports: on AMD's
 * Zen 4 it does (a SmolLM2 block's bf16 step 137-147 ms against float32's 179-195); Intel's cores
 * issue it on one port where FMA has two, so it multiplies at float32's rate and its pair packing
 * costs more (the same step 665-682 ms against float32's 481-500 on an AMX Xeon with AMX off, 380-391
 * against 321-327 on an AVX512_BF16 Xeon without AMX). There tqk_gemm_bf16 runs the float32 AVX-512
 * kernel on the rounded operands. TESSERAQ_DPBF16=1 or 0 overrides the vendor rule; tqk_set_dpbf16
 * overrides it for the calling thread. */
static int tqk_dpbf16 = -1;
static _Thread_local int tqk_dpbf16_thread = -1;

int tqk_use_dpbf16(void) {
    if (!tqk_use_avx512_bf16()) return 0;
    if (tqk_dpbf16_thread >= 0) return tqk_dpbf16_thread;
    if (tqk_dpbf16 < 0) {
        const char *env = getenv("TESSERAQ_DPBF16");
        __builtin_cpu_init();
        tqk_dpbf16 = env && env[0] ? env[0] != '0' : !__builtin_cpu_is("intel");
    }
    return tqk_dpbf16;
}

int tqk_set_dpbf16(int enabled) {
    tqk_dpbf16_thread = enabled < 0 ? -1 : enabled != 0;
    return tqk_use_dpbf16();
}

/* AMX needs the CPU (AMX-TILE, AMX-BF16) and the kernel's leave to use the tile data state, asked
 * once per process (Linux arch_prctl ARCH_REQ_XCOMP_PERM; refused by kernels before 5.16 and where
 * a VM hides it). TESSERAQ_NO_AMX=1 turns it off; tqk_set_amx overrides it for the calling thread.
 * Checked on top of tqk_use_avx512_bf16(): the AMX path packs with AVX-512. */
static int tqk_amx = -1;
static _Thread_local int tqk_amx_thread = -1;

static int cpu_has_amx(void) {
    static int has = -1;
    if (has < 0) {
        __builtin_cpu_init();
        has = __builtin_cpu_supports("amx-tile") && __builtin_cpu_supports("amx-bf16") &&
              syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
    }
    return has;
}

int tqk_use_amx(void) {
    if (!tqk_use_avx512_bf16()) return 0;
    if (tqk_amx_thread >= 0) return tqk_amx_thread;
    if (tqk_amx < 0) {
        const char *off = getenv("TESSERAQ_NO_AMX");
        tqk_amx = cpu_has_amx() && !(off && off[0] && off[0] != '0');
    }
    return tqk_amx;
}

int tqk_set_amx(int enabled) {
    tqk_amx_thread = enabled < 0 ? -1 : enabled && cpu_has_amx();
    return tqk_use_amx();
}

int tqk_set_avx512(int enabled) {
    tqk_avx512_thread = enabled < 0 ? -1 : enabled && cpu_has_avx512();
    return tqk_use_avx512();
}

/* omp_set_num_threads only affects the calling thread, so the library keeps its own setting and
 * every C-ABI entry applies it to the thread it runs on (tqk_apply_num_threads). */
static atomic_int tqk_threads; /* set by any thread while others read it: atomic */

void tqk_set_num_threads(int n) {
    int threads = n > 0 ? n : omp_get_num_procs();
    atomic_store(&tqk_threads, threads);
    omp_set_num_threads(threads);
}

void tqk_apply_num_threads(void) {
    int threads = atomic_load(&tqk_threads);
    if (threads > 0 && omp_get_max_threads() != threads) omp_set_num_threads(threads);
}

/* The calling thread's count (what its next parallel region uses). */
int tqk_get_num_threads(void) { return omp_get_max_threads(); }

/* Allocation failures are counted process-wide: they happen on OpenMP worker threads, which know
 * nothing of the call that started them, and a caller only needs to know whether any occurred
 * while it ran (tqk_alloc_failures before and after). */
static atomic_llong alloc_failures;
/* Fault injection for tests: TESSERAQ_FAIL_ALLOCATION=n makes the n-th kernel allocation of the
 * process fail. -1 until the environment is read; then the allocations still to go (0: none). */
static atomic_llong fail_countdown = -1;

static int injected_failure(void) {
    long long c = atomic_load(&fail_countdown);
    if (c < 0) {
        const char *e = getenv("TESSERAQ_FAIL_ALLOCATION");
        long long n = e ? atoll(e) : 0;
        atomic_compare_exchange_strong(&fail_countdown, &c, n > 0 ? n : 0);
        c = atomic_load(&fail_countdown);
    }
    while (c > 0 && !atomic_compare_exchange_weak(&fail_countdown, &c, c - 1)) {}
    return c == 1;
}

/* Bytes the calling thread has asked tqk_alloc for (tqk_alloc_bytes_on_thread). */
static _Thread_local int64_t thread_bytes;

/* Counts a request of the calling thread; 1 (and the failure counted) when it is to fail. */
static int refused(size_t bytes) {
    thread_bytes += (int64_t)bytes;
    if (!injected_failure()) return 0;
    atomic_fetch_add(&alloc_failures, 1);
    return 1;
}

void *tqk_alloc(size_t bytes) {
    void *p = NULL;
    if (refused(bytes)) return NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) {
        atomic_fetch_add(&alloc_failures, 1);
        return NULL;
    }
    return p;
}

void *tqk_alloc_zeroed(size_t n, size_t size) {
    if (size && n > SIZE_MAX / size) {
        atomic_fetch_add(&alloc_failures, 1);
        return NULL;
    }
    void *p = tqk_alloc(n * size);
    if (p) memset(p, 0, n * size);
    return p;
}

/* A call's transient buffers of TQK_SCRATCH_MAP_BYTES or more come from a mapping each thread keeps
 * for its next call (the largest it has needed), its pages past the current request given back.
 * From the heap, one phase's freed scratch (GEMM packing, hardening scores, attention) stayed
 * resident where the next phase's differently sized scratch did not fit: 8 MB above live at an
 * out-of-core run's peak. A fresh mapping per call faults every page in on every call instead: the
 * weight-gradient GEMMs of a SmolLM2 block ran at 60% of their speed. Keeping the whole mapping
 * resident added the largest GEMM's scratch to every phase's peak: 3.5 MB more at the same run's. */
#define TQK_SCRATCH_MAP_BYTES ((size_t)1 << 20)

/* resident: how far the mapping's pages may be in memory (the largest request since the last trim). */
typedef struct { void *p; size_t bytes, resident; int busy; } scratch_cache;
static _Thread_local scratch_cache thread_scratch;
static pthread_key_t scratch_key; /* its destructor unmaps an exiting thread's cache */
static pthread_once_t scratch_key_once = PTHREAD_ONCE_INIT;

static void scratch_unmap(void *cache) {
    scratch_cache *c = cache;
    if (c->p) munmap(c->p, c->bytes);
    *c = (scratch_cache){0};
}

static void scratch_key_create(void) { pthread_key_create(&scratch_key, scratch_unmap); }

void *tqk_scratch_alloc(size_t bytes) {
    if (bytes < TQK_SCRATCH_MAP_BYTES) return tqk_alloc(bytes);
    if (refused(bytes)) return NULL;
    scratch_cache *c = &thread_scratch;
    if (c->p && !c->busy && c->bytes >= bytes) {
        /* A larger request later faults the pages given back here in again. */
        static _Thread_local size_t page;
        if (!page) page = (size_t)sysconf(_SC_PAGESIZE);
        size_t keep = (bytes + page - 1) / page * page;
        if (c->resident > keep) madvise((char *)c->p + keep, c->resident - keep, MADV_DONTNEED);
        c->resident = bytes;
        c->busy = 1;
        return c->p;
    }
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        atomic_fetch_add(&alloc_failures, 1);
        return NULL;
    }
    return p;
}

void tqk_scratch_free(void *p, size_t bytes) {
    if (!p) return;
    if (bytes < TQK_SCRATCH_MAP_BYTES) {
        free(p);
        return;
    }
    scratch_cache *c = &thread_scratch;
    if (p == c->p) {
        c->busy = 0;
    } else if (!c->busy && bytes > c->bytes) { /* the larger one is kept */
        scratch_unmap(c);
        *c = (scratch_cache){p, bytes, bytes, 0};
        pthread_once(&scratch_key_once, scratch_key_create);
        pthread_setspecific(scratch_key, c);
    } else {
        munmap(p, bytes);
    }
}

void tqk_scratch_release(void) {
    if (!thread_scratch.busy) scratch_unmap(&thread_scratch);
}

int64_t tqk_alloc_failures(void) { return atomic_load(&alloc_failures); }

int64_t tqk_alloc_bytes_on_thread(void) { return thread_bytes; }
