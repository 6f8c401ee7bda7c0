/* A minimal engine loop over the C API: open a (packed) checkpoint and its tokenizer, tokenize the
 * prompt, prefill, then decode and sample one token at a time, printing text as it is produced
 * and the speeds at the end.
 *
 *   generate CKPT_DIR PROMPT [MAX_NEW_TOKENS [TEMPERATURE [SEED]]]
 *
 * Greedy by default (temperature 0). Stops after MAX_NEW_TOKENS (default 64) or at the model's
 * end-of-text ids (tq_stop_tokens: config.json's eos_token_id). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "tesseraq.h"

static double now(void) {
    struct timespec ts;
    timespec_get(&ts, TIME_UTC); /* C11, no POSIX feature macro needed */
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int fail(const char *what) {
    fprintf(stderr, "%s: %s\n", what, tq_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 3 || argc > 6) {
        fprintf(stderr, "usage: %s CKPT_DIR PROMPT [MAX_NEW_TOKENS [TEMPERATURE [SEED]]]\n", argv[0]);
        return 2;
    }
    int64_t max_new = argc > 3 ? atoll(argv[3]) : 64;
    float temperature = argc > 4 ? (float)atof(argv[4]) : 0.0f;
    uint64_t seed = argc > 5 ? strtoull(argv[5], NULL, 10) : 0;

    tq_model *model = NULL;
    tq_tokenizer *tok = NULL;
    if (tq_model_open(argv[1], &model) != 0) return fail("model");
    if (tq_tokenizer_open(argv[1], &tok) != 0) return fail("tokenizer");
    int64_t vocab = 0, max_positions = 0, n_prompt = 0;
    if (tq_model_info(model, &vocab, NULL, NULL, NULL, NULL, NULL, NULL, &max_positions) != 0) return fail("info");
    /* Count first, then fill (the tokenizer keeps the result, so this encodes once). */
    if (tq_tokenize(tok, argv[2], -1, NULL, 0, &n_prompt) != 0) return fail("tokenize");
    uint32_t *ids = malloc(sizeof(uint32_t) * (size_t)n_prompt);
    float *logits = malloc(sizeof(float) * (size_t)vocab);
    if (!ids || !logits) return 1;
    if (tq_tokenize(tok, argv[2], -1, ids, n_prompt, &n_prompt) != 0) return fail("tokenize");

    uint32_t stop[8];
    int64_t n_stop = 0;
    if (tq_stop_tokens(argv[1], tok, 0, stop, 8, &n_stop) != 0) return fail("stop tokens");

    int64_t capacity = n_prompt + max_new < max_positions ? n_prompt + max_new : max_positions;
    tq_session *session = NULL;
    tq_sampler *sampler = NULL;
    if (tq_session_open(model, capacity, &session) != 0) return fail("session");
    if (tq_sampler_open(temperature, 0, 1.0f, 1.0f, seed, &sampler) != 0) return fail("sampler");
    tq_model_free(model); /* the session keeps the model alive */

    double t0 = now();
    if (tq_session_prefill(session, ids, n_prompt, logits) != 0) return fail("prefill");
    double t1 = now();
    /* A text stream hands out the text each token completes, whole UTF-8 characters only (a token
     * alone may hold half a character, or lose the space it shares with its neighbour). */
    tq_text_stream *text = NULL;
    if (tq_text_stream_open(tok, &text) != 0) return fail("text stream");
    const char *piece = NULL;
    int64_t n_gen = 0, len = 0;
    while (n_gen < max_new && n_prompt + n_gen < capacity) {
        uint32_t next = 0;
        if (tq_sampler_sample(sampler, logits, vocab, &next) != 0) return fail("sample");
        int is_stop = 0;
        for (int64_t i = 0; i < n_stop; i++) is_stop |= next == stop[i];
        if (is_stop) break;
        n_gen++;
        if (tq_text_stream_push(text, next, &piece, &len) != 0) return fail("text");
        fwrite(piece, 1, (size_t)len, stdout);
        fflush(stdout);
        if (n_gen < max_new && n_prompt + n_gen < capacity && tq_session_decode(session, next, logits) != 0)
            return fail("decode");
    }
    if (tq_text_stream_finish(text, &piece, &len) != 0) return fail("text");
    fwrite(piece, 1, (size_t)len, stdout);
    double t2 = now();
    printf("\n");
    int64_t kv = 0, weights = 0;
    if (tq_session_memory(session, &kv, &weights) != 0) return fail("memory");
    fprintf(stderr, "prompt: %lld tokens, %.1f tok/s; generated: %lld tokens, %.1f tok/s; kv cache %lld bytes, weights %lld bytes\n",
            (long long)n_prompt, (double)n_prompt / (t1 - t0), (long long)n_gen, (double)n_gen / (t2 - t1),
            (long long)kv, (long long)weights);
    tq_text_stream_free(text);
    free(logits);
    free(ids);
    tq_sampler_free(sampler);
    tq_session_free(session);
    tq_tokenizer_free(tok);
    return 0;
}
