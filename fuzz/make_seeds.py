#!/usr/bin/env python3
"""Writes the seed corpora of fuzz/corpus/<target>/ and fuzz/fixtures/ from the committed fixtures
(Tests/Fixtures): small inputs, so that libFuzzer mutates kilobytes, not the 1 MB model files.
Deterministic; run it again after changing a fixture:  python3 fuzz/make_seeds.py"""
import json
import struct
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "Tests" / "Fixtures"
FUZZ = ROOT / "fuzz"
STORIES = FIX / "models" / "stories260K"
AIDREAMS = FIX / "models" / "aidreams260K"


def read_safetensors(path):
    b = path.read_bytes()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    data = b[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        out[name] = np.frombuffer(data[begin:end], dtype=np.float32).reshape(info["shape"])
    return out


def safetensors_bytes(tensors, metadata=None):
    """tensors: name -> (dtype name, numpy array of the stored bits)."""
    header, blobs, offset = {}, [], 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, (dtype, arr) in tensors.items():
        raw = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


# The tiny model (fuzz/fixtures/tiny-llama): stories260K's weights cut to hidden 8, one layer, a
# 32-token vocabulary; its safetensors in each dtype the loader converts are the safetensors seeds.
TINY = {"hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
        "num_key_value_heads": 1, "head_dim": 4, "vocab_size": 32, "max_position_embeddings": 32}


def tiny_model():
    w = read_safetensors(STORIES / "model.safetensors")
    h, m, kv = TINY["hidden_size"], TINY["intermediate_size"], TINY["num_key_value_heads"] * TINY["head_dim"]
    p = "model.layers.0."
    return {
        "model.embed_tokens.weight": w["model.embed_tokens.weight"][:TINY["vocab_size"], :h],
        p + "input_layernorm.weight": w[p + "input_layernorm.weight"][:h],
        p + "self_attn.q_proj.weight": w[p + "self_attn.q_proj.weight"][:h, :h],
        p + "self_attn.k_proj.weight": w[p + "self_attn.k_proj.weight"][:kv, :h],
        p + "self_attn.v_proj.weight": w[p + "self_attn.v_proj.weight"][:kv, :h],
        p + "self_attn.o_proj.weight": w[p + "self_attn.o_proj.weight"][:h, :h],
        p + "post_attention_layernorm.weight": w[p + "post_attention_layernorm.weight"][:h],
        p + "mlp.gate_proj.weight": w[p + "mlp.gate_proj.weight"][:m, :h],
        p + "mlp.up_proj.weight": w[p + "mlp.up_proj.weight"][:m, :h],
        p + "mlp.down_proj.weight": w[p + "mlp.down_proj.weight"][:h, :m],
        "model.norm.weight": w["model.norm.weight"][:h],
    }


def as_dtype(arr, dtype):
    if dtype == "F32":
        return arr.astype(np.float32)
    if dtype == "F16":
        return arr.astype(np.float16)
    return (arr.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)  # BF16 (truncated)


def tiny_fixture_and_seeds():
    config = json.loads((STORIES / "config.json").read_text())
    config.update(TINY)
    write(FUZZ / "fixtures" / "tiny-llama" / "config.json", json.dumps(config, indent=2) + "\n")
    weights = tiny_model()
    f32 = safetensors_bytes({k: ("F32", v) for k, v in weights.items()}, {"format": "pt"})
    write(FUZZ / "fixtures" / "tiny-llama" / "model.safetensors", f32)
    for dtype in ("F32", "F16", "BF16"):
        blob = safetensors_bytes({k: (dtype, as_dtype(v, dtype)) for k, v in weights.items()}, {"format": "pt"})
        write(FUZZ / "corpus" / "safetensors" / f"tiny-{dtype.lower()}.safetensors", blob)
    # The real header of stories260K with no data: the layout checks' refusal paths.
    real = (STORIES / "model.safetensors").read_bytes()
    n = struct.unpack("<Q", real[:8])[0]
    write(FUZZ / "corpus" / "safetensors" / "stories260K-header-only.safetensors", real[:8 + n])


def pack_rows(codes, bits):
    """GPTQ packing along axis 0 (32/bits codes per int32 word) for bits 2, 4, 8."""
    per = 32 // bits
    n = codes.shape[0]
    padded = np.zeros(((n + per - 1) // per * per,) + codes.shape[1:], dtype=np.uint32)
    padded[:n] = codes
    words = np.zeros((padded.shape[0] // per,) + codes.shape[1:], dtype=np.uint32)
    for j in range(per):
        words |= padded[j::per] << np.uint32(j * bits)
    return words.view(np.int32)


# The packed checkpoint configurations the packed harness selects with its first byte (fuzz/packed.c):
# every bit width the loader reads in one byte order, v1 and v2 zeros, grouped and per-channel.
PACKED_CONFIGS = [(4, 32, "gptq_v2"), (2, 16, "gptq_v2"), (8, -1, "gptq"), (3, 32, "gptq_v2")]


def packed_fixtures_and_seeds():
    rng = np.random.default_rng(15)
    config = json.loads((STORIES / "config.json").read_text())
    for i, (bits, group, fmt) in enumerate(PACKED_CONFIGS):
        c = dict(config, quantization_config={"quant_method": "gptq", "bits": bits, "group_size": group, "sym": False,
                                              "desc_act": False, "checkpoint_format": fmt})
        write(FUZZ / "fixtures" / f"packed-{i}" / "config.json", json.dumps(c, indent=2) + "\n")
        if bits == 3:
            continue  # 3-bit words straddle codes; the fuzzer reaches them from the other seeds' shapes
        out, inn = 16, 64
        g = inn if group == -1 else group
        groups = inn // g
        codes = rng.integers(0, 1 << bits, size=(inn, out), dtype=np.uint32)
        zeros = rng.integers(0, 1 << bits, size=(out, groups), dtype=np.uint32).T
        if fmt == "gptq":
            zeros = zeros - 1 & ((1 << bits) - 1)
        scales = (rng.random((groups, out)) * 0.1 + 0.01).astype(np.float16)
        g_idx = (np.arange(inn) // g).astype(np.int32)
        p = "model.layers.0.self_attn.q_proj"
        blob = safetensors_bytes({p + ".qweight": ("I32", pack_rows(codes, bits)), p + ".qzeros": ("I32", pack_rows(zeros.T, bits).T.copy()),
                                  p + ".scales": ("F16", scales), p + ".g_idx": ("I32", g_idx)})
        write(FUZZ / "corpus" / "packed" / f"w{bits}-g{group}-{fmt}.bin", bytes([i]) + blob)


def story_ids():
    """stories260K's 200-token greedy continuation (golden.json): real token ids."""
    return np.array(json.loads((STORIES / "golden.json").read_text())["greedy_ids"], dtype=np.uint32)


def text_seeds():
    # Tokenizer files: the two small real ones (SmolLM2's 1.3 MB one is the tokenize target's fixture).
    for model in (STORIES, AIDREAMS):
        write(FUZZ / "corpus" / "tokenizer_json" / f"{model.name}.json", (model / "tokenizer.json").read_bytes())
    # tokenize: byte 0 picks the fixture tokenizer, byte 1 the operation, the rest is text or ids.
    sample = (ROOT / "data" / "wikitext2" / "valid.txt").read_bytes()[:400]
    for fixture in range(3):
        write(FUZZ / "corpus" / "tokenize" / f"text-{fixture}.bin", bytes([fixture, 0]) + sample)
        write(FUZZ / "corpus" / "tokenize" / f"ids-{fixture}.bin", bytes([fixture, 1]) + story_ids()[:64].astype("<u4").tobytes())
    write(FUZZ / "corpus" / "tokenize" / "invalid-utf8.bin", bytes([2, 0]) + "héllo <|im_start|> 日本\U0001F600".encode() + b"\xff\xc3(\xed\xa0\x80")
    # config.json: the two real ones and the tiny model's.
    for model in (STORIES, AIDREAMS):
        write(FUZZ / "corpus" / "config_json" / f"{model.name}.json", (model / "config.json").read_bytes())
    write(FUZZ / "corpus" / "config_json" / "packed-w4.json", (FUZZ / "fixtures" / "packed-0" / "config.json").read_bytes())
    # Quantization configurations, one per method (README, Quantization).
    for name, cfg in {
        "rtn": {"method": "rtn", "bits": 3, "group_size": 32},
        "gptq": {"method": "gptq", "bits": 2, "group_size": 16, "sym": True, "act_order": True, "format": "gptq"},
        "awq": {"method": "awq", "bits": 4, "group_size": -1, "preset": "ci", "n_samples": 4, "seq_len": 16},
        "tesseraq": {"method": "tesseraq", "bits": 2, "group_size": 8, "preset": "ci", "init": "awq", "overwrite": True,
                     "n_samples": 2, "batch": 1, "iters": 3},
    }.items():
        write(FUZZ / "corpus" / "quantize_config" / f"{name}.json", json.dumps(cfg))
    # Model options (tq_model_open_with): the two heads, the defaults, and a refused key.
    for name, text in {"w8": '{"lm_head": "w8"}', "checkpoint": '{"lm_head": "checkpoint"}', "empty": "{}",
                       "unknown": '{"lm_head": "w4", "kv": 8}'}.items():
        write(FUZZ / "corpus" / "model_options" / f"{name}.json", text)
    # Calibration token files for the tiny model (32 tokens): the real ids folded into its
    # vocabulary, a file shorter than one window, and the real ids (past its vocabulary).
    ids = story_ids()
    write(FUZZ / "corpus" / "calib_tokens" / "story-folded.bin", (ids % TINY["vocab_size"]).astype("<u4").tobytes())
    write(FUZZ / "corpus" / "calib_tokens" / "story-short.bin", (ids[:6] % TINY["vocab_size"]).astype("<u4").tobytes())
    write(FUZZ / "corpus" / "calib_tokens" / "story.bin", ids.astype("<u4").tobytes())


if __name__ == "__main__":
    tiny_fixture_and_seeds()
    packed_fixtures_and_seeds()
    text_seeds()
