/* GPTQ bit packing (docs/FORMATS.md).
 *
 * Every packed column of qweight (and every packed row of qzeros) is one little-endian bit
 * stream: value n sits at bits [n*b, n*b + b) of the stream, stream bit P in word P / 32 at bit
 * P % 32. For b in {2, 4, 8} that is "f = 32/b values per word, least significant first"; for
 * b = 3 it is "32 values in 3 words, 96-bit little-endian concatenation" (values 10 and 21 of
 * each 32 straddle two words). Trailing values past n are padding and are written as 0.
 * All word arithmetic is on uint32_t. */
#include "tq_kernels.h"
#include <omp.h>
#include <string.h>

int64_t tqk_packed_len(int64_t n, int bits) {
    if (n <= 0) return 0;
    switch (bits) {
    case 2: return (n + 15) / 16;
    case 4: return (n + 7) / 8;
    case 8: return (n + 3) / 4;
    case 3: return 3 * ((n + 31) / 32);
    default: return 0;
    }
}

/* Word w of a stream of n b-bit values; get(k) returns value k (only k < n is asked for). */
#define PACK_WORD(result, w, n, b, get)                                                        \
    do {                                                                                       \
        uint32_t word_ = 0;                                                                    \
        int64_t lo_ = ((int64_t)(w) * 32) / (b);           /* first value touching the word */ \
        int64_t hi_ = ((int64_t)(w) * 32 + 31) / (b);      /* last value touching the word */  \
        if (hi_ >= (n)) hi_ = (n) - 1;                                                         \
        for (int64_t k_ = lo_; k_ <= hi_; k_++) {                                              \
            uint32_t c_ = (uint32_t)(get(k_)) & ((1u << (b)) - 1u);                            \
            int64_t p_ = k_ * (b) - (int64_t)(w) * 32; /* bit of the value's LSB rel. word */  \
            word_ |= p_ >= 0 ? (uint32_t)(c_ << p_) : (uint32_t)(c_ >> -p_);                   \
        }                                                                                      \
        (result) = word_;                                                                      \
    } while (0)

/* Value k of a stream whose word w is word(w). */
#define UNPACK_VALUE(result, k, b, word)                                                       \
    do {                                                                                       \
        int64_t P_ = (int64_t)(k) * (b);                                                       \
        int64_t w_ = P_ >> 5;                                                                  \
        int s_ = (int)(P_ & 31);                                                               \
        uint32_t v_ = (uint32_t)(word(w_)) >> s_;                                              \
        if (s_ + (b) > 32) v_ |= (uint32_t)(word(w_ + 1)) << (32 - s_);                        \
        (result) = (uint8_t)(v_ & ((1u << (b)) - 1u));                                         \
    } while (0)

static int bits_ok(int bits) { return bits == 2 || bits == 3 || bits == 4 || bits == 8; }

void tqk_pack_qweight(const uint8_t *codes, int64_t out, int64_t in, int bits, uint32_t *qweight) {
    if (!bits_ok(bits) || out <= 0) return;
    const int64_t rows = tqk_packed_len(in, bits);
    /* chunks of 16 output columns: one cache line of words per packed row */
    const int64_t nchunk = (out + 15) / 16;
    #pragma omp parallel for schedule(static) if (rows * out > (1 << 16))
    for (int64_t ch = 0; ch < nchunk; ch++) {
        const int64_t o0 = ch * 16, o1 = o0 + 16 < out ? o0 + 16 : out;
        for (int64_t w = 0; w < rows; w++) {
            for (int64_t o = o0; o < o1; o++) {
                const uint8_t *col = codes + o * in;
#define GETC(k) col[k]
                PACK_WORD(qweight[w * out + o], w, in, bits, GETC);
#undef GETC
            }
        }
    }
}

void tqk_unpack_qweight(const uint32_t *qweight, int64_t out, int64_t in, int bits, uint8_t *codes) {
    if (!bits_ok(bits) || out <= 0) return;
    const int64_t nchunk = (out + 15) / 16;
    #pragma omp parallel for schedule(static) if (in * out > (1 << 16))
    for (int64_t ch = 0; ch < nchunk; ch++) {
        const int64_t o0 = ch * 16, o1 = o0 + 16 < out ? o0 + 16 : out;
        for (int64_t o = o0; o < o1; o++) {
#define WORD(w) qweight[(w) * out + o]
            for (int64_t i = 0; i < in; i++) UNPACK_VALUE(codes[o * in + i], i, bits, WORD);
#undef WORD
        }
    }
}

void tqk_pack_qzeros(const uint8_t *zeros, int64_t n_groups, int64_t out, int bits, uint32_t *qzeros) {
    if (!bits_ok(bits)) return;
    const int64_t cols = tqk_packed_len(out, bits);
    #pragma omp parallel for schedule(static) if (n_groups * out > (1 << 16))
    for (int64_t g = 0; g < n_groups; g++) {
        const uint8_t *row = zeros + g * out;
        for (int64_t w = 0; w < cols; w++) {
#define GETZ(k) row[k]
            PACK_WORD(qzeros[g * cols + w], w, out, bits, GETZ);
#undef GETZ
        }
    }
}

void tqk_unpack_qzeros(const uint32_t *qzeros, int64_t n_groups, int64_t out, int bits, uint8_t *zeros) {
    if (!bits_ok(bits)) return;
    const int64_t cols = tqk_packed_len(out, bits);
    #pragma omp parallel for schedule(static) if (n_groups * out > (1 << 16))
    for (int64_t g = 0; g < n_groups; g++) {
        const uint32_t *row = qzeros + g * cols;
#define WORD(w) row[w]
        for (int64_t o = 0; o < out; o++) UNPACK_VALUE(zeros[g * out + o], o, bits, WORD);
#undef WORD
    }
}
