// Fuzz target (e): the quantization configuration JSON of tq_quantize_tokens. A fuzzed
// configuration must not launch an expensive run, so three bounds hold: the model is the tiny one
// (one layer, hidden 8, 32 positions, so seq_len is at most 32), the progress callback cancels at
// its first call (after one block at most), and only a configuration whose every integer has at
// most two digits reaches the run at all, since the work before that first call grows with
// n_samples and the methods' grid sizes. Every input, large integers included, first goes through
// the parser and every key check, on a packed model (quantized in LLVMFuzzerInitialize), which
// is refused only after its configuration has been read.
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support.h"
#include "tesseraq.h"

enum { N_TOKENS = 64, MAX_DIGITS = 2 };
static tq_model *tiny, *tiny_packed;
static uint32_t tokens[N_TOKENS];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    tq_set_num_threads(1);
    tiny = open_fixture_model(TINY_MODEL);
    for (int i = 0; i < N_TOKENS; i++) tokens[i] = (uint32_t)(i * 7 + 3) % 32;
    const char *packed = scratch_path(0, "tiny-w4");
    if (tq_quantize(tiny, "{\"method\": \"rtn\", \"bits\": 4, \"group_size\": 8}", packed, NULL, NULL) != TQ_OK ||
        tq_model_open(packed, &tiny_packed) != TQ_OK) {
        fprintf(stderr, "%s: %s\n", packed, tq_last_error());
        abort();
    }
    return 0;
}

static int cheap(const char *json) {
    int run = 0;
    for (const char *c = json; *c; c++) {
        run = isdigit((unsigned char)*c) ? run + 1 : 0;
        if (run > MAX_DIGITS) return 0;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *json = input_string(data, size);
    const char *out = scratch_path(0, "out"), *partial = scratch_path(1, "out.partial");
    int32_t status = tq_quantize_tokens(tiny_packed, json, tokens, N_TOKENS, out, cancel_at_first_progress, NULL);
    check_status(status, "tq_quantize_tokens (packed model)");
    if (status == TQ_OK) { fprintf(stderr, "a packed model was quantized again\n"); abort(); }
    if (cheap(json)) {
        remove_tree(out);
        remove_tree(partial);
        check_status(tq_quantize_tokens(tiny, json, tokens, N_TOKENS, out, cancel_at_first_progress, NULL), "tq_quantize_tokens");
    }
    free(json);
    return 0;
}
