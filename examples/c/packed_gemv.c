/* Read a packed checkpoint back: list its tensors, run a packed GEMV on each and compare it with
 * the product of the dequantised weight (computed here in double); then the first block's q/k/v
 * (which share their input) in one tq_packed_gemv_many call, against the three GEMVs.
 *
 *   packed_gemv CKPT_DIR
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tesseraq.h"

/* Index of the tensor called `name`, -1 if none. */
static int64_t find_tensor(tq_packed *ckpt, int64_t count, const char *name) {
    for (int64_t t = 0; t < count; t++) {
        const char *n = NULL;
        if (tq_packed_info(ckpt, t, &n, NULL, NULL, NULL, NULL, NULL) == 0 && strcmp(n, name) == 0) return t;
    }
    return -1;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s CKPT_DIR\n", argv[0]);
        return 2;
    }
    tq_packed *ckpt = NULL;
    int64_t count = 0;
    if (tq_packed_open(argv[1], &ckpt) != 0 || tq_packed_count(ckpt, &count) != 0) {
        fprintf(stderr, "open: %s\n", tq_last_error());
        return 1;
    }
    double worst = 0.0;
    for (int64_t t = 0; t < count; t++) {
        const char *name = NULL;
        int64_t out = 0, in = 0, group = 0;
        int32_t bits = 0, sym = 0;
        if (tq_packed_info(ckpt, t, &name, &out, &in, &bits, &group, &sym) != 0) {
            fprintf(stderr, "info: %s\n", tq_last_error());
            return 1;
        }
        float *w = malloc(sizeof(float) * (size_t)(out * in));
        float *x = malloc(sizeof(float) * (size_t)in);
        float *y = malloc(sizeof(float) * (size_t)out);
        if (!w || !x || !y) return 1;
        for (int64_t i = 0; i < in; i++) x[i] = (float)sin(0.37 * (double)i + (double)t);
        if (tq_packed_dequantize(ckpt, t, 0, out, w) != 0 || tq_packed_gemv(ckpt, t, x, y) != 0) {
            fprintf(stderr, "%s: %s\n", name, tq_last_error());
            return 1;
        }
        double err = 0.0, scale = 0.0;
        for (int64_t o = 0; o < out; o++) {
            double ref = 0.0;
            for (int64_t i = 0; i < in; i++) ref += (double)w[o * in + i] * x[i];
            err = fmax(err, fabs(ref - y[o]));
            scale = fmax(scale, fabs(ref));
        }
        double rel = err / (scale > 0 ? scale : 1.0);
        worst = fmax(worst, rel);
        printf("%-40s %5lld x %-5lld %d-bit g%-4lld %s  gemv max rel err %.2e\n", name, (long long)out, (long long)in,
               bits, (long long)group, sym ? "sym " : "asym", rel);
        free(w);
        free(x);
        free(y);
    }
    /* q/k/v share x: one call computes the three (one thread start instead of three). */
    const char *qkv_names[3] = {"model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj",
                                "model.layers.0.self_attn.v_proj"};
    int64_t qkv[3], outs[3] = {0}, in = 0, out_max = 0;
    for (int k = 0; k < 3; k++) {
        qkv[k] = find_tensor(ckpt, count, qkv_names[k]);
        if (tq_packed_info(ckpt, qkv[k], NULL, &outs[k], &in, NULL, NULL, NULL) != 0) {
            fprintf(stderr, "%s: %s\n", qkv_names[k], tq_last_error());
            return 1;
        }
        out_max = outs[k] > out_max ? outs[k] : out_max;
    }
    float *x = malloc(sizeof(float) * (size_t)in), *ys[3], *one = malloc(sizeof(float) * (size_t)out_max);
    for (int k = 0; k < 3; k++) ys[k] = malloc(sizeof(float) * (size_t)outs[k]);
    if (!x || !one || !ys[0] || !ys[1] || !ys[2]) return 1;
    for (int64_t i = 0; i < in; i++) x[i] = (float)cos(0.11 * (double)i);
    if (tq_packed_gemv_many(ckpt, qkv, 3, x, ys) != 0) {
        fprintf(stderr, "gemv_many: %s\n", tq_last_error());
        return 1;
    }
    double diff = 0.0;
    for (int k = 0; k < 3; k++) {
        if (tq_packed_gemv(ckpt, qkv[k], x, one) != 0) return 1;
        for (int64_t o = 0; o < outs[k]; o++) diff = fmax(diff, fabs((double)ys[k][o] - one[o]));
        free(ys[k]);
    }
    free(x);
    free(one);
    printf("q/k/v in one tq_packed_gemv_many call: max |difference| from three GEMVs %.2e\n", diff);
    if (diff > 1e-5) return 1;

    /* Bad input gets a status and a message, never a crash. */
    if (tq_packed_gemv(ckpt, count, NULL, NULL) == 0) return 1;
    printf("out-of-range index: %s (%s)\n", tq_last_error(), tq_status_name(-1));
    tq_packed_free(ckpt);
    tq_packed_free(NULL);
    printf("worst relative error %.2e\n", worst);
    return worst < 1e-4 ? 0 : 1;
}
