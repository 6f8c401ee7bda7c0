/* Next-token negative log-likelihood over rows of logits. */
#include "tq_kernels.h"
#include <math.h>

double tqk_nll_sum(const float *logits, const uint32_t *targets, int64_t rows, int64_t vocab) {
    double total = 0.0;
    #pragma omp parallel for schedule(static) reduction(+ : total)
    for (int64_t r = 0; r < rows; r++) {
        const float *l = logits + r * vocab;
        float mx = l[0];
        for (int64_t i = 1; i < vocab; i++) mx = l[i] > mx ? l[i] : mx;
        double sum = 0.0;
        for (int64_t i = 0; i < vocab; i++) sum += exp((double)(l[i] - mx));
        total += log(sum) + (double)mx - (double)l[targets[r]];
    }
    return total;
}
