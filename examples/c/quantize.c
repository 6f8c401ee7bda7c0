/* Quantize a model through the C ABI: open, quantize with a JSON configuration and a progress
 * callback, then report the packed result.
 *
 *   quantize MODEL_DIR OUT_DIR '{"method": "rtn", "bits": 4, "group_size": 32}'
 */
#include <math.h>
#include <stdio.h>
#include "tesseraq.h"

static int32_t on_progress(int64_t block, int64_t n_blocks, int64_t round, int64_t step, double loss, void *user) {
    int64_t *events = user;
    (*events)++;
    if (round == 0) /* a block finished */
        fprintf(stderr, "block %lld/%lld done\n", (long long)block + 1, (long long)n_blocks);
    else if (step % 10 == 0 && !isnan(loss))
        fprintf(stderr, "block %lld round %lld step %lld loss %.5g\n", (long long)block + 1, (long long)round,
                (long long)step, loss);
    return 0; /* non-zero would cancel */
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s MODEL_DIR OUT_DIR CONFIG_JSON\n", argv[0]);
        return 2;
    }
    printf("libtesseraq %s\n", tq_version());
    tq_model *model = NULL;
    if (tq_model_open(argv[1], &model) != 0) {
        fprintf(stderr, "open: %s\n", tq_last_error());
        return 1;
    }
    int64_t layers = 0, hidden = 0;
    if (tq_model_info(model, NULL, &hidden, NULL, &layers, NULL, NULL, NULL, NULL) != 0) {
        fprintf(stderr, "info: %s\n", tq_last_error());
        return 1;
    }
    printf("model: %lld layers, hidden %lld\n", (long long)layers, (long long)hidden);
    int64_t events = 0;
    int32_t status = tq_quantize(model, argv[3], argv[2], on_progress, &events);
    tq_model_free(model);
    if (status != 0) {
        fprintf(stderr, "quantize: %s (%s)\n", tq_last_error(), tq_status_name(status));
        return 1;
    }
    tq_packed *ckpt = NULL;
    int64_t count = 0;
    if (tq_packed_open(argv[2], &ckpt) != 0 || tq_packed_count(ckpt, &count) != 0) {
        fprintf(stderr, "packed: %s\n", tq_last_error());
        return 1;
    }
    int32_t bits = 0;
    int64_t group = 0;
    if (tq_packed_info(ckpt, 0, NULL, NULL, NULL, &bits, &group, NULL) != 0) {
        fprintf(stderr, "packed info: %s\n", tq_last_error());
        return 1;
    }
    printf("wrote %s: %lld packed linears, %d-bit, group %lld (%lld progress events)\n", argv[2], (long long)count,
           bits, (long long)group, (long long)events);
    tq_packed_free(ckpt);
    return events > 0 && count == 7 * layers ? 0 : 1;
}
