// libtesseraq from C++17: RAII over the C handles in a few lines, errors as exceptions.
//
//   tesseraq_cpp MODEL_DIR OUT_DIR
//
// Opens a float model and its tokenizer, predicts the next token of a prompt, quantizes the model
// to 4 bits into OUT_DIR, checks the packed GEMV against the dequantised weight, and shows that a
// handle of the wrong type is refused at run time.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "tesseraq.h"

namespace tq {

struct Error : std::runtime_error {
    int32_t status;
    explicit Error(int32_t s) : std::runtime_error(std::string(tq_status_name(s)) + ": " + tq_last_error()), status(s) {}
};

inline void check(int32_t status) {
    if (status != TQ_OK) throw Error(status);
}

// One owning pointer type per handle, freed by its own tq_*_free.
template <typename T, void (*Free)(T *)>
struct Deleter {
    void operator()(T *p) const { Free(p); }
};
using Model = std::unique_ptr<tq_model, Deleter<tq_model, tq_model_free>>;
using Packed = std::unique_ptr<tq_packed, Deleter<tq_packed, tq_packed_free>>;
using Tokenizer = std::unique_ptr<tq_tokenizer, Deleter<tq_tokenizer, tq_tokenizer_free>>;

template <typename Owner, typename T>
Owner open(int32_t (*open_fn)(const char *, T **), const std::string &path) {
    T *handle = nullptr;
    check(open_fn(path.c_str(), &handle));
    return Owner(handle);
}

}  // namespace tq

int main(int argc, char **argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: %s MODEL_DIR OUT_DIR\n", argv[0]);
        return 2;
    }
    if (tq_version_number() != TQ_VERSION_NUMBER) {
        std::fprintf(stderr, "library %s does not match header %s\n", tq_version(), TQ_VERSION);
        return 1;
    }
    try {
        auto model = tq::open<tq::Model>(tq_model_open, argv[1]);
        auto tok = tq::open<tq::Tokenizer>(tq_tokenizer_open, argv[1]);
        int64_t vocab = 0;
        tq::check(tq_model_info(model.get(), &vocab, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr));

        const char *prompt = "Once upon a time, there was a little";
        int64_t n = 0;
        tq::check(tq_tokenize(tok.get(), prompt, -1, nullptr, 0, &n));
        std::vector<uint32_t> ids(static_cast<size_t>(n));
        tq::check(tq_tokenize(tok.get(), prompt, -1, ids.data(), n, &n));
        std::vector<float> logits(static_cast<size_t>(n * vocab));
        tq::check(tq_model_logits(model.get(), ids.data(), n, logits.data()));
        const float *last = logits.data() + (n - 1) * vocab;
        uint32_t next = 0;
        for (int64_t v = 1; v < vocab; ++v)
            if (last[v] > last[next]) next = static_cast<uint32_t>(v);
        char piece[64] = {0};
        int64_t bytes = 0;
        tq::check(tq_detokenize(tok.get(), &next, 1, piece, sizeof piece, &bytes));
        std::printf("%s [%s]\n", prompt, piece);

        // A tokenizer passed where a model is expected: refused, never read as a model.
        int32_t status = tq_model_info(reinterpret_cast<tq_model *>(tok.get()), &vocab, nullptr, nullptr, nullptr,
                                       nullptr, nullptr, nullptr, nullptr);
        if (status != TQ_ERR_INVALID_ARGUMENT || !std::strstr(tq_last_error(), "tq_tokenizer")) {
            std::fprintf(stderr, "a wrong handle was not refused (%s)\n", tq_status_name(status));
            return 1;
        }

        tq::check(tq_quantize(model.get(), R"({"method": "rtn", "bits": 4, "group_size": 32, "overwrite": true})",
                              argv[2], nullptr, nullptr));
        auto packed = tq::open<tq::Packed>(tq_packed_open, argv[2]);
        int64_t out = 0, in = 0;
        tq::check(tq_packed_info(packed.get(), 0, nullptr, &out, &in, nullptr, nullptr, nullptr));
        std::vector<float> w(static_cast<size_t>(out * in)), x(static_cast<size_t>(in)), y(static_cast<size_t>(out));
        for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.1f * static_cast<float>(i));
        tq::check(tq_packed_dequantize(packed.get(), 0, 0, out, w.data()));
        tq::check(tq_packed_gemv(packed.get(), 0, x.data(), y.data()));
        double worst = 0;
        for (int64_t o = 0; o < out; ++o) {
            double ref = 0;
            for (int64_t i = 0; i < in; ++i) ref += static_cast<double>(w[o * in + i]) * x[i];
            worst = std::fmax(worst, std::fabs(ref - y[o]));
        }
        std::printf("packed gemv %lldx%lld: worst |error| %.2e\n", static_cast<long long>(out),
                    static_cast<long long>(in), worst);
        return worst < 1e-4 ? 0 : 1;
    } catch (const tq::Error &e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
