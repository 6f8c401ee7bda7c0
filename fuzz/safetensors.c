// Fuzz target (a): the safetensors header and file layout. The input is model.safetensors beside
// the tiny model's config.json (fuzz/fixtures/tiny-llama, one layer, hidden 8, 32 tokens), so the
// loader's header parser, dtype conversion and shape checks all see it; a model that opens must run.
#include <stdint.h>

#include "support.h"
#include "tesseraq.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    stage_model_folder(TQ_REPO "/" TINY_MODEL "/config.json", "config.json");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tq_model *model = open_staged_model("model.safetensors", data, size);
    if (model) {
        const uint32_t tokens[3] = {1, 7, 31};
        float logits[3 * 32];  // the fixture's vocab_size
        check_status(tq_model_logits(model, tokens, 3, logits), "tq_model_logits");
    }
    tq_model_free(model);
    return 0;
}
