// Fuzz target (f): the options JSON of tq_model_open_with, opening the tiny model. A valid options
// object opens it (then its logits of one token are computed, through the head it asked for); any
// other input is refused with a documented status and a message.
#include <stdint.h>
#include <stdlib.h>

#include "support.h"
#include "tesseraq.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    tq_set_num_threads(1);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *json = input_string(data, size);
    tq_model *model = NULL;
    int32_t status = tq_model_open_with(TQ_REPO "/" TINY_MODEL, json, &model);
    check_status(status, "tq_model_open_with");
    if ((status == TQ_OK) != (model != NULL)) abort();
    if (model) {
        int64_t vocab = 0;
        check_status(tq_model_info(model, &vocab, NULL, NULL, NULL, NULL, NULL, NULL, NULL), "tq_model_info");
        float *logits = malloc(sizeof(float) * (size_t)vocab);
        uint32_t token = 1;
        if (!logits) abort();
        check_status(tq_model_logits(model, &token, 1, logits), "tq_model_logits");
        free(logits);
        tq_model_free(model);
    }
    free(json);
    return 0;
}
