// Fuzz target (d1): tokenizer.json. The input is a tokenizer.json file; one that opens must
// encode and decode a fixed text (ASCII, accents, emoji, a special token written in the text).
#include <stdint.h>
#include <stdlib.h>

#include "support.h"
#include "tesseraq.h"

static const char sample[] = "Once upon a time, <s> a caf\xc3\xa9 \xf0\x9f\x98\x80 had  two\ttabs\n<|im_start|>";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    write_file(scratch_path(0, "tokenizer.json"), data, size);
    tq_tokenizer *tok = NULL;
    int32_t status = tq_tokenizer_open(scratch_path(0, "tokenizer.json"), &tok);
    check_status(status, "tq_tokenizer_open");
    if (status != TQ_OK) return 0;
    int64_t vocab = 0, n = 0, bytes = 0;
    uint32_t id = 0;
    check_status(tq_tokenizer_vocab_size(tok, &vocab), "tq_tokenizer_vocab_size");
    check_status(tq_tokenizer_token_id(tok, "<s>", &id), "tq_tokenizer_token_id");
    check_status(tq_tokenize(tok, sample, -1, NULL, 0, &n), "tq_tokenize");
    uint32_t *ids = malloc(sizeof(uint32_t) * (size_t)(n + 1));
    if (!ids) abort();
    check_status(tq_tokenize(tok, sample, -1, ids, n, &n), "tq_tokenize");
    check_status(tq_detokenize(tok, ids, n, NULL, 0, &bytes), "tq_detokenize");
    char *text = malloc((size_t)bytes + 1);
    if (!text) abort();
    check_status(tq_detokenize(tok, ids, n, text, bytes + 1, &bytes), "tq_detokenize");
    free(text);
    free(ids);
    tq_tokenizer_free(tok);
    return 0;
}
