// Fuzz target (d2): the tokenizers on arbitrary bytes. Byte 0 picks a fixture tokenizer
// (stories260K, aidreams260K: SentencePiece style with byte fallback; SmolLM2: GPT-2 byte-level),
// byte 1 the direction: even, the rest is text for tq_tokenize (any bytes, invalid UTF-8 and NULs
// included); odd, the rest is uint32 ids for tq_detokenize (out-of-vocabulary ones included), then
// the same ids one at a time through a tq_text_stream. Counting and then filling must agree, the
// text is NUL-terminated when there is room, and the stream's pieces join to the decoded text.
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

// The pieces of a text stream fed ids one by one must join to text (tq_detokenize of all of them).
static void stream_joins_to(tq_tokenizer *tok, const uint32_t *ids, int64_t n, const char *text, int64_t bytes) {
    tq_text_stream *stream = NULL;
    check_status(tq_text_stream_open(tok, &stream), "tq_text_stream_open");
    int64_t at = 0, len = -1;
    const char *piece = NULL;
    for (int64_t i = 0; i <= n; i++) {
        int32_t status = i < n ? tq_text_stream_push(stream, ids[i], &piece, &len) : tq_text_stream_finish(stream, &piece, &len);
        check_status(status, i < n ? "tq_text_stream_push" : "tq_text_stream_finish");
        if (status != TQ_OK || len < 0 || at + len > bytes || memcmp(text + at, piece, (size_t)len) != 0 || piece[len] != '\0') {
            fprintf(stderr, "tq_text_stream: piece %lld (%lld bytes at %lld) is not the decoded text's\n", (long long)i,
                    (long long)len, (long long)at);
            abort();
        }
        at += len;
    }
    if (at != bytes) { fprintf(stderr, "tq_text_stream: pieces hold %lld of %lld bytes\n", (long long)at, (long long)bytes); abort(); }
    tq_text_stream_free(stream);
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
        stream_joins_to(tok, ids, n, text, bytes);
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
