// Fuzz target (d2): the tokenizers on arbitrary bytes. Byte 0 picks a fixture tokenizer
// (stories260K, aidreams260K: SentencePiece style with byte fallback; SmolLM2: GPT-2 byte-level),
// byte 1 the direction: even, the rest is text for tq_tokenize (any bytes, invalid UTF-8 and NULs
// included); odd, the rest is uint32 ids for tq_detokenize (out-of-vocabulary ones included).
// Counting and then filling must agree, and the text is NUL-terminated when there is room.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support.h"
#include "tesseraq.h"

static const char *const fixtures[] = {
    TQ_REPO "/Tests/Fixtures/models/stories260K/tokenizer.json",
    TQ_REPO "/Tests/Fixtures/models/aidreams260K/tokenizer.json",
    TQ_REPO "/Tests/Fixtures/tokenizers/SmolLM2-135M-Instruct/tokenizer.json",
};
enum { N_FIXTURES = sizeof fixtures / sizeof fixtures[0] };
static tq_tokenizer *tokenizers[N_FIXTURES];

// Freed at exit, so that LeakSanitizer's final check sees them gone (see scripts/fuzz.sh on why
// leak checking is off while they live).
static void free_tokenizers(void) {
    for (int i = 0; i < N_FIXTURES; i++) tq_tokenizer_free(tokenizers[i]);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    atexit(free_tokenizers);
    for (int i = 0; i < N_FIXTURES; i++) {
        if (tq_tokenizer_open(fixtures[i], &tokenizers[i]) != TQ_OK) {
            fprintf(stderr, "%s: %s\n", fixtures[i], tq_last_error());
            abort();
        }
    }
    return 0;
}

static void tokenize(tq_tokenizer *tok, const uint8_t *text, size_t size) {
    int64_t n = -1, filled = -1;
    int32_t status = tq_tokenize(tok, (const char *)text, (int64_t)size, NULL, 0, &n);
    check_status(status, "tq_tokenize (count)");
    if (status != TQ_OK) return;
    uint32_t *ids = malloc(sizeof(uint32_t) * (size_t)(n + 1));
    if (!ids) abort();
    check_status(tq_tokenize(tok, (const char *)text, (int64_t)size, ids, n, &filled), "tq_tokenize (fill)");
    if (filled != n) { fprintf(stderr, "tq_tokenize: counted %lld ids, filled %lld\n", (long long)n, (long long)filled); abort(); }
    free(ids);
}

static void detokenize(tq_tokenizer *tok, const uint8_t *data, size_t size) {
    int64_t n = (int64_t)(size / 4), bytes = -1, filled = -1;
    uint32_t *ids = malloc(sizeof(uint32_t) * (size_t)(n + 1));
    if (!ids) abort();
    memcpy(ids, data, (size_t)n * 4);
    int32_t status = tq_detokenize(tok, ids, n, NULL, 0, &bytes);
    check_status(status, "tq_detokenize (count)");
    if (status == TQ_OK) {
        char *text = malloc((size_t)bytes + 1);
        if (!text) abort();
        check_status(tq_detokenize(tok, ids, n, text, bytes + 1, &filled), "tq_detokenize (fill)");
        if (filled != bytes || text[bytes] != '\0') {
            fprintf(stderr, "tq_detokenize: counted %lld bytes, filled %lld\n", (long long)bytes, (long long)filled);
            abort();
        }
        free(text);
    }
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    tq_tokenizer *tok = tokenizers[data[0] % N_FIXTURES];
    if (data[1] % 2 == 0) tokenize(tok, data + 2, size - 2);
    else detokenize(tok, data + 2, size - 2);
    return 0;
}
