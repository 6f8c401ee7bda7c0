// Fuzz target (b): config.json. The input is config.json beside stories260K's real weights, so a
// configuration that matches them loads and runs; every other one must be refused with a status.
// A configuration with a quantization_config is also opened as a packed checkpoint.
#include <stdint.h>
#include <stdlib.h>

#include "support.h"
#include "tesseraq.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    stage_model_folder(TQ_REPO "/Tests/Fixtures/models/stories260K/model.safetensors", "model.safetensors");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tq_model *model = open_staged_model("config.json", data, size);
    if (model) {
        int64_t vocab = 0;
        check_status(tq_model_info(model, &vocab, NULL, NULL, NULL, NULL, NULL, NULL, NULL), "tq_model_info");
        const uint32_t tokens[2] = {1, 2};
        float *logits = malloc(sizeof(float) * 2 * (size_t)vocab);
        if (!logits) abort();
        check_status(tq_model_logits(model, tokens, 2, logits), "tq_model_logits");
        free(logits);
    }
    tq_model_free(model);
    tq_packed *packed = NULL;
    check_status(tq_packed_open(scratch_path(0, "model"), &packed), "tq_packed_open");
    tq_packed_free(packed);
    return 0;
}
