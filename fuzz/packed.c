// Fuzz target (c): the packed-checkpoint loader. Byte 0 picks one of the valid GPTQ config.json
// files of fuzz/fixtures/packed-<n> (2, 3, 4, 8 bits; grouped and per-channel; v1 and v2 zeros);
// the rest is the model.safetensors beside it (qweight, qzeros, scales, g_idx). A checkpoint that
// opens must be readable through every packed entry point.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "support.h"
#include "tesseraq.h"

enum { N_CONFIGS = 4 };

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    for (int i = 0; i < N_CONFIGS; i++) {
        char dir[32], target[1024], link[32];
        snprintf(dir, sizeof dir, "packed-%d", i);
        mkdir(scratch_path(0, dir), 0755);
        snprintf(target, sizeof target, TQ_REPO "/fuzz/fixtures/packed-%d/config.json", i);
        snprintf(link, sizeof link, "packed-%d/config.json", i);
        link_file(target, scratch_path(0, link));
    }
    tq_set_num_threads(1);
    return 0;
}

// Every read of tensor i, each call checked against the contract.
static void read_tensor(tq_packed *ckpt, int64_t i) {
    int64_t out = 0, in = 0;
    check_status(tq_packed_info(ckpt, i, NULL, &out, &in, NULL, NULL, NULL), "tq_packed_info");
    uint8_t *codes = malloc((size_t)(out * in));
    float *w = malloc(sizeof(float) * (size_t)(out * in)), *x = malloc(sizeof(float) * 2 * (size_t)in);
    float *y = malloc(sizeof(float) * 2 * (size_t)out);
    if (!codes || !w || !x || !y) abort();
    for (int64_t k = 0; k < 2 * in; k++) x[k] = (float)(k % 7) - 3.0f;
    check_status(tq_packed_unpack(ckpt, i, codes), "tq_packed_unpack");
    check_status(tq_packed_dequantize(ckpt, i, 0, out, w), "tq_packed_dequantize");
    check_status(tq_packed_gemv(ckpt, i, x, y), "tq_packed_gemv");
    check_status(tq_packed_gemm(ckpt, i, x, 2, y), "tq_packed_gemm");
    free(codes); free(w); free(x); free(y);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    char dir[32], file[64];
    snprintf(dir, sizeof dir, "packed-%d", data[0] % N_CONFIGS);
    snprintf(file, sizeof file, "%s/model.safetensors", dir);
    write_file(scratch_path(1, file), data + 1, size - 1);
    tq_packed *ckpt = NULL;
    int32_t status = tq_packed_open(scratch_path(0, dir), &ckpt);
    check_status(status, "tq_packed_open");
    if (status == TQ_OK) {
        int64_t count = 0;
        check_status(tq_packed_count(ckpt, &count), "tq_packed_count");
        for (int64_t i = 0; i < count; i++) read_tensor(ckpt, i);
    }
    tq_packed_free(ckpt);
    return 0;
}
