/* CPU feature check and thread count. */
#include "tq_kernels.h"
#include <omp.h>

int tqk_cpu_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
}

void tqk_set_num_threads(int n) { omp_set_num_threads(n > 0 ? n : omp_get_num_procs()); }

int tqk_get_num_threads(void) { return omp_get_max_threads(); }
