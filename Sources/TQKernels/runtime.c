/* CPU feature check and thread count. */
#include "tq_kernels.h"
#include <omp.h>

int tqk_cpu_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
}

/* omp_set_num_threads only affects the calling thread, so the library keeps its own setting and
 * every C-ABI entry applies it to the thread it runs on (tqk_apply_num_threads). */
static int tqk_threads = 0;

void tqk_set_num_threads(int n) {
    tqk_threads = n > 0 ? n : omp_get_num_procs();
    omp_set_num_threads(tqk_threads);
}

void tqk_apply_num_threads(void) {
    if (tqk_threads > 0 && omp_get_max_threads() != tqk_threads) omp_set_num_threads(tqk_threads);
}

/* The calling thread's count (what its next parallel region uses). */
int tqk_get_num_threads(void) { return omp_get_max_threads(); }
