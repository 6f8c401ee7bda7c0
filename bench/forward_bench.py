"""Forward-pass throughput of libtesseraq: tokens/second of tq_model_logits on a SmolLM2-135M
shaped model, for sequence lengths 512 and 2048.

Without --model, a synthetic checkpoint with SmolLM2-135M's shapes (hidden 576, intermediate
1536, 30 layers, 9 heads / 3 KV heads of 64, vocab 49152, tied embeddings) and random float32
weights ~ N(0, 0.02) (norm weights 1) is written to a temporary directory first (~540 MB).
The speed does not depend on the weights' values.

    swift build -c release --scratch-path .build-bench
    python3 bench/forward_bench.py --lib .build-bench/release/libtesseraq.so [--threads 2]

The library is loaded through ctypes (tq_model_open / tq_model_logits / tq_model_free);
every status is checked and tq_last_error() printed on failure.
"""
import argparse
import ctypes
import json
import os
import shutil
import struct
import sys
import tempfile
import time

import numpy as np

CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "vocab_size": 49152,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "rope_theta": 100000.0,
    "rope_scaling": None,
    "hidden_act": "silu",
    "attention_bias": False,
    "mlp_bias": False,
    "tie_word_embeddings": True,
    "torch_dtype": "float32",
    "bos_token_id": 1,
    "eos_token_id": 2,
}


def tensor_shapes(c):
    """(name, shape) of every tensor of a LLaMA checkpoint with tied embeddings."""
    h, i, d = c["hidden_size"], c["intermediate_size"], c["head_dim"]
    q, kv = c["num_attention_heads"] * d, c["num_key_value_heads"] * d
    out = [("model.embed_tokens.weight", (c["vocab_size"], h)), ("model.norm.weight", (h,))]
    for layer in range(c["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        out += [(p + "input_layernorm.weight", (h,)), (p + "post_attention_layernorm.weight", (h,)),
                (p + "self_attn.q_proj.weight", (q, h)), (p + "self_attn.k_proj.weight", (kv, h)),
                (p + "self_attn.v_proj.weight", (kv, h)), (p + "self_attn.o_proj.weight", (h, q)),
                (p + "mlp.gate_proj.weight", (i, h)), (p + "mlp.up_proj.weight", (i, h)),
                (p + "mlp.down_proj.weight", (h, i))]
    return out


def write_safetensors(path, shapes, rng):
    """Minimal safetensors writer: u64 LE header length, JSON header (padded with spaces to a
    multiple of 8), then the F32 data in header order. Tensors are generated one at a time."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in shapes:
        nbytes = 4 * int(np.prod(shape))
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, shape in shapes:
            if name.endswith("norm.weight"):
                t = np.ones(shape, dtype=np.float32)
            else:
                t = rng.standard_normal(shape, dtype=np.float32)
                t *= 0.02
            f.write(t.tobytes())


def write_model(directory, seed=0):
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
    write_safetensors(os.path.join(directory, "model.safetensors"), tensor_shapes(CONFIG),
                      np.random.default_rng(seed))


def load_lib(path):
    lib = ctypes.CDLL(path)
    lib.tq_model_open.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
    lib.tq_model_open.restype = ctypes.c_int32
    lib.tq_model_logits.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32), ctypes.c_int64,
                                    ctypes.POINTER(ctypes.c_float)]
    lib.tq_model_logits.restype = ctypes.c_int32
    lib.tq_model_free.argtypes = [ctypes.c_void_p]
    lib.tq_model_free.restype = None
    lib.tq_set_num_threads.argtypes = [ctypes.c_int32]
    lib.tq_set_num_threads.restype = ctypes.c_int32
    lib.tq_last_error.argtypes = []
    lib.tq_last_error.restype = ctypes.c_char_p
    return lib


def check(lib, status, what):
    if status != 0:
        sys.exit(f"{what} failed with status {status}: {lib.tq_last_error().decode(errors='replace')}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lib", default=".build/release/libtesseraq.so", help="path of libtesseraq.so")
    ap.add_argument("--model", help="checkpoint directory (default: write a synthetic SmolLM2-135M)")
    ap.add_argument("--seq-lens", default="512,2048", help="comma-separated sequence lengths")
    ap.add_argument("--reps", type=int, default=3, help="timed runs per length (after a warm-up); the best is kept")
    ap.add_argument("--threads", type=int, default=0, help="library threads (default 0: one per core)")
    args = ap.parse_args()

    lib = load_lib(args.lib)
    check(lib, lib.tq_set_num_threads(args.threads), "tq_set_num_threads")

    tmp = None
    model_dir = args.model
    if model_dir is None:
        tmp = tempfile.mkdtemp(prefix="tq-forward-bench-")
        model_dir = tmp
        t0 = time.perf_counter()
        write_model(model_dir)
        print(f"wrote synthetic SmolLM2-135M-shaped model to {model_dir} in {time.perf_counter() - t0:.1f} s")
    try:
        handle = ctypes.c_void_p()
        t0 = time.perf_counter()
        check(lib, lib.tq_model_open(model_dir.encode(), ctypes.byref(handle)), "tq_model_open")
        print(f"opened in {time.perf_counter() - t0:.2f} s; threads={args.threads or os.cpu_count()}")
        with open(os.path.join(model_dir, "config.json")) as f:
            cfg = json.load(f)
        vocab = cfg["vocab_size"]
        rng = np.random.default_rng(1)
        try:
            print(f"{'seq len':>8} {'best s':>9} {'tokens/s':>10}")
            for n in [int(x) for x in args.seq_lens.split(",")]:
                tokens = rng.integers(0, vocab, size=n, dtype=np.uint32)
                logits = np.empty((n, vocab), dtype=np.float32)
                tp = tokens.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32))
                lp = logits.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
                best = float("inf")
                for rep in range(args.reps + 1):  # the first run is a warm-up
                    t0 = time.perf_counter()
                    check(lib, lib.tq_model_logits(handle, tp, n, lp), "tq_model_logits")
                    if rep > 0:
                        best = min(best, time.perf_counter() - t0)
                if not np.isfinite(logits[-1]).all():
                    sys.exit(f"non-finite logits at seq len {n}")
                print(f"{n:>8} {best:9.3f} {n / best:10.1f}")
        finally:
            lib.tq_model_free(handle)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
