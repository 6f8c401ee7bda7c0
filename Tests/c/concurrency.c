/* Concurrent calls into libtesseraq, as an engine makes them: one model, one packed checkpoint and
 * one tokenizer shared by several threads; per-thread tq_last_error; tq_set_num_threads changed
 * while kernels run; independent handles opened, used and freed by each thread; a handle freed
 * while other threads use it. Built and run under
 * ThreadSanitizer by scripts/tsan_check.sh, and plainly by the same script's first run.
 *
 *   concurrency MODEL_DIR PACKED_DIR
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tesseraq.h"

enum { THREADS = 4, ROUNDS = 20, N_TOKENS = 16 };

static tq_model *model;
static tq_packed *packed;
static tq_tokenizer *tok;
static int64_t vocab, out_f, in_f;
static float *ref_logits, *ref_y, *x;
static uint32_t tokens[N_TOKENS];
static uint32_t ref_ids[64];
static int64_t n_ref_ids;
static const char *prompt = "Once upon a time, there was a little girl.";

static char *own_dirs[2];
static int failures;
static pthread_mutex_t failures_lock = PTHREAD_MUTEX_INITIALIZER;

static void fail(const char *what, int tid) {
    pthread_mutex_lock(&failures_lock);
    failures++;
    fprintf(stderr, "thread %d: %s (%s)\n", tid, what, tq_last_error());
    pthread_mutex_unlock(&failures_lock);
}

static void *shared_handles(void *arg) {
    int tid = (int)(intptr_t)arg;
    float *logits = malloc((size_t)(N_TOKENS * vocab) * sizeof(float)), *y = malloc((size_t)out_f * sizeof(float));
    uint32_t ids[64];
    for (int r = 0; r < ROUNDS; r++) {
        if (tq_model_logits(model, tokens, N_TOKENS, logits) != TQ_OK ||
            memcmp(logits, ref_logits, (size_t)(N_TOKENS * vocab) * sizeof(float)) != 0)
            fail("logits differ from the single-threaded ones", tid);
        if (tq_packed_gemv(packed, 0, x, y) != TQ_OK || memcmp(y, ref_y, (size_t)out_f * sizeof(float)) != 0)
            fail("packed gemv differs", tid);
        int64_t n = 0;
        if (tq_tokenize(tok, prompt, -1, ids, 64, &n) != TQ_OK || n != n_ref_ids ||
            memcmp(ids, ref_ids, (size_t)n * sizeof(uint32_t)) != 0)
            fail("tokenize differs", tid);
        /* This thread's own error message, untouched by the others' calls. */
        int64_t index = 1000 + tid * 100 + r;
        char expected[64];
        snprintf(expected, sizeof expected, "index %lld", (long long)index);
        if (tq_packed_info(packed, index, NULL, NULL, NULL, NULL, NULL, NULL) != TQ_ERR_INVALID_ARGUMENT ||
            !strstr(tq_last_error(), expected))
            fail("tq_last_error is not this thread's", tid);
        if (tq_packed_count(packed, &n) != TQ_OK || tq_last_error()[0] != '\0')
            fail("tq_last_error not cleared by a success", tid);
        if (tid == 0 && tq_set_num_threads(r % 2 ? 1 : 2) != TQ_OK) fail("tq_set_num_threads", tid);
    }
    free(logits);
    free(y);
    return NULL;
}

static void *own_handles(void *arg) {
    int tid = (int)(intptr_t)arg;
    char **dirs = own_dirs;
    float *logits = malloc((size_t)(N_TOKENS * vocab) * sizeof(float)), *y = malloc((size_t)out_f * sizeof(float));
    for (int r = 0; r < 3; r++) {
        tq_model *m = NULL;
        tq_packed *p = NULL;
        if (tq_model_open(dirs[0], &m) != TQ_OK || tq_packed_open(dirs[1], &p) != TQ_OK) {
            fail("open", tid);
        } else {
            if (tq_model_logits(m, tokens, N_TOKENS, logits) != TQ_OK ||
                memcmp(logits, ref_logits, (size_t)(N_TOKENS * vocab) * sizeof(float)) != 0)
                fail("own model's logits differ", tid);
            if (tq_packed_gemv(p, 0, x, y) != TQ_OK || memcmp(y, ref_y, (size_t)out_f * sizeof(float)) != 0)
                fail("own checkpoint's gemv differs", tid);
        }
        tq_packed_free(p);
        tq_model_free(m);
    }
    free(logits);
    free(y);
    return NULL;
}

static void *use_until_refused(void *arg) {
    tq_packed *h = arg;
    float *y = malloc((size_t)out_f * sizeof(float));
    int refused = 0;
    for (int r = 0; r < 200; r++) {
        int32_t s = tq_packed_gemv(h, 0, x, y);
        if (s == TQ_ERR_INVALID_ARGUMENT) refused = 1;
        else if (s != TQ_OK || refused) fail("a freed handle came back, or a call failed otherwise", -1);
    }
    free(y);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL_DIR PACKED_DIR\n", argv[0]);
        return 2;
    }
    if (tq_set_num_threads(1) != TQ_OK || tq_model_open(argv[1], &model) != TQ_OK ||
        tq_packed_open(argv[2], &packed) != TQ_OK || tq_tokenizer_open(argv[1], &tok) != TQ_OK ||
        tq_model_info(model, &vocab, NULL, NULL, NULL, NULL, NULL, NULL, NULL) != TQ_OK ||
        tq_packed_info(packed, 0, NULL, &out_f, &in_f, NULL, NULL, NULL) != TQ_OK) {
        fprintf(stderr, "setup: %s\n", tq_last_error());
        return 1;
    }
    for (int i = 0; i < N_TOKENS; i++) tokens[i] = (uint32_t)(1 + 37 * i % (int)vocab);
    ref_logits = malloc((size_t)(N_TOKENS * vocab) * sizeof(float));
    ref_y = malloc((size_t)out_f * sizeof(float));
    x = malloc((size_t)in_f * sizeof(float));
    for (int64_t i = 0; i < in_f; i++) x[i] = (float)(i % 7) - 3.0f;
    if (tq_model_logits(model, tokens, N_TOKENS, ref_logits) != TQ_OK || tq_packed_gemv(packed, 0, x, ref_y) != TQ_OK ||
        tq_tokenize(tok, prompt, -1, ref_ids, 64, &n_ref_ids) != TQ_OK) {
        fprintf(stderr, "reference: %s\n", tq_last_error());
        return 1;
    }

    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++) pthread_create(&th[t], NULL, shared_handles, (void *)(intptr_t)t);
    for (int t = 0; t < THREADS; t++) pthread_join(th[t], NULL);
    tq_set_num_threads(1);
    own_dirs[0] = argv[1];
    own_dirs[1] = argv[2];
    for (int t = 0; t < THREADS; t++) pthread_create(&th[t], NULL, own_handles, (void *)(intptr_t)t);
    for (int t = 0; t < THREADS; t++) pthread_join(th[t], NULL);
    int shared_failures = failures;

    /* Free racing with calls: running calls finish, later ones are refused. */
    tq_packed *doomed = NULL;
    if (tq_packed_open(argv[2], &doomed) != TQ_OK) return 1;
    for (int t = 0; t < THREADS; t++) pthread_create(&th[t], NULL, use_until_refused, doomed);
    tq_packed_free(doomed);
    for (int t = 0; t < THREADS; t++) pthread_join(th[t], NULL);

    tq_tokenizer_free(tok);
    tq_packed_free(packed);
    tq_model_free(model);
    free(ref_logits);
    free(ref_y);
    free(x);
    printf("concurrency: %d passed, %d failed\n", (shared_failures == 0) + (failures == shared_failures),
           (shared_failures != 0) + (failures != shared_failures));
    return failures == 0 ? 0 : 1;
}
