"""Unit tests for the pure helpers of scripts/convert_smollm2.py (no network, no gguf needed)."""

import importlib.util
import json
import math
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "convert_smollm2.py"


def _load():
    spec = importlib.util.spec_from_file_location("convert_smollm2", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("convert_smollm2", mod)
    spec.loader.exec_module(mod)
    return mod


cv = _load()


# ---------------------------------------------------------------- Q/K permutation


def _llamacpp_permute(w, n_head):
    # Verbatim from llama.cpp convert_hf_to_gguf.py (LlamaModel.permute), n_head already
    # replaced by n_head_kv for k_proj by the caller.
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2)
            .reshape(w.shape))


@pytest.mark.parametrize("n_head,head_dim,cols", [
    (9, 64, 576),   # SmolLM2-135M q_proj
    (3, 64, 576),   # SmolLM2-135M k_proj (n_head = num_key_value_heads)
    (32, 128, 40),  # LLaMA-7B-like q, narrow input to stay small
    (8, 128, 24),   # LLaMA-3-8B-like k
    (1, 2, 3),      # smallest legal case
])
def test_unpermute_inverts_llamacpp_permute(n_head, head_dim, cols):
    rng = np.random.default_rng(n_head * 1000 + head_dim)
    w = rng.standard_normal((n_head * head_dim, cols)).astype(np.float32)
    gguf_layout = _llamacpp_permute(w, n_head)
    back = cv.unpermute_llamacpp(gguf_layout, n_head)
    assert back.shape == w.shape and back.dtype == w.dtype
    assert np.array_equal(back, w)
    # and the other way round
    assert np.array_equal(_llamacpp_permute(cv.unpermute_llamacpp(w, n_head), n_head), w)
    # the script's own copy of permute is llama.cpp's
    assert np.array_equal(cv.permute_llamacpp(w, n_head), gguf_layout)


def test_unpermute_1d_bias_and_not_identity():
    w = np.arange(3 * 8, dtype=np.float32)
    p = _llamacpp_permute(w, 3)
    assert not np.array_equal(p, w)
    assert np.array_equal(cv.unpermute_llamacpp(p, 3), w)


def test_permute_semantics_rotate_half_to_adjacent_pairs():
    # One head of dim 8: HF rows [x0..x3 | x4..x7] (pairs (i, i+4)) become llama.cpp rows
    # x0 x4 x1 x5 x2 x6 x3 x7 (pairs (2i, 2i+1)).
    w = np.arange(8, dtype=np.float32).reshape(8, 1)
    assert _llamacpp_permute(w, 1)[:, 0].tolist() == [0, 4, 1, 5, 2, 6, 3, 7]
    assert cv.unpermute_llamacpp(w, 1)[:, 0].tolist() == [0, 2, 4, 6, 1, 3, 5, 7]


def test_q_and_k_use_different_head_counts():
    rng = np.random.default_rng(1)
    k = rng.standard_normal((3 * 64, 16)).astype(np.float32)
    p = _llamacpp_permute(k, 3)
    assert np.array_equal(cv.unpermute_llamacpp(p, 3), k)
    assert not np.array_equal(cv.unpermute_llamacpp(p, 1), k)  # wrong head count is not the inverse
    assert cv.permute_heads_for("blk.0.attn_q.weight", 9, 3) == 9
    assert cv.permute_heads_for("blk.7.attn_k.weight", 9, 3) == 3
    assert cv.permute_heads_for("blk.7.attn_v.weight", 9, 3) is None
    assert cv.permute_heads_for("token_embd.weight", 9, 3) is None


def test_unpermute_rejects_bad_shape():
    with pytest.raises(ValueError):
        cv.unpermute_llamacpp(np.zeros((10, 4), np.float32), 3)


# ---------------------------------------------------------------- bf16 rounding


def _bf16_reference(x: float) -> int:
    """Round a float32 to bfloat16 bits the slow way: pick the nearer of the two bf16 neighbours
    by exact (float64/fraction-free) comparison, ties to the even mantissa."""
    bits = struct.unpack("<I", struct.pack("<f", x))[0]
    if math.isnan(x):
        return (bits >> 16) | 0x40
    if math.isinf(x):
        return bits >> 16
    lo = bits >> 16                 # truncation toward zero (same sign)
    hi = lo + 1                     # next bf16 away from zero (may be inf)

    def val(b):
        return struct.unpack("<f", struct.pack("<I", b << 16))[0]

    a = abs(x)
    dlo = a - abs(val(lo))          # exact in float64: both are float32 values
    if (hi & 0x7FFF) == 0x7F80:     # hi is infinity: compare against the rounding boundary
        boundary = 2.0 ** 128 - 2.0 ** 119  # midpoint between bf16 max (2^128 - 2^120) and 2^128
        if a < boundary:
            return lo
        if a > boundary:
            return hi
        return lo if lo % 2 == 0 else hi
    dhi = abs(val(hi)) - a
    if dlo < dhi:
        return lo
    if dhi < dlo:
        return hi
    return lo if lo % 2 == 0 else hi


def _f32(bits):
    return struct.unpack("<f", struct.pack("<I", bits))[0]


EDGE_BITS = [
    0x00000000, 0x80000000,                 # +0, -0
    0x3F800000, 0xBF800000,                 # +-1
    0x3F808000,                             # 1 + 2^-8: tie, even -> 1.0
    0x3F818000,                             # 1 + 3*2^-8: tie, odd -> round up
    0x3F808001, 0x3F807FFF,                 # just above / below a tie
    0x3F80FFFF,                             # rounds up into next
    0x3FFFFFFF,                             # rounds up, carries into exponent (-> 2.0)
    0x7F7FFFFF, 0xFF7FFFFF,                 # float32 max -> inf (past the bf16 rounding boundary)
    0x7F7F7FFF, 0x7F7F8000, 0x7F7F8001,     # near bf16 max: below tie, tie (odd mantissa 0x7F -> up to inf), above
    0x7F7EFFFF,
    0x7F800000, 0xFF800000,                 # +-inf
    0x7FC00000, 0xFFC00000,                 # quiet NaNs
    0x7F800001,                             # signalling NaN with payload only in low bits
    0x7FA00000,
    0x00000001, 0x80000001,                 # smallest subnormals -> 0
    0x00008000, 0x00018000,                 # subnormal ties
    0x007FFFFF,                             # largest subnormal -> rounds to smallest normal
    0x00800000,                             # smallest normal
    0x3EAAAAAB,                             # 1/3
    0x40490FDB,                             # pi
]


def test_bf16_rounding_edge_values():
    x = np.array(EDGE_BITS, dtype=np.uint32).view(np.float32)
    got = cv.f32_to_bf16_bits(x)
    assert got.dtype == np.uint16
    want = [_bf16_reference(_f32(b)) for b in EDGE_BITS]
    assert got.tolist() == want
    # spot-check the famous cases explicitly
    assert got[EDGE_BITS.index(0x3F808000)] == 0x3F80
    assert got[EDGE_BITS.index(0x3F818000)] == 0x3F82
    assert got[EDGE_BITS.index(0x3FFFFFFF)] == 0x4000
    assert got[EDGE_BITS.index(0x7F7FFFFF)] == 0x7F80
    assert got[EDGE_BITS.index(0x80000000)] == 0x8000
    back = cv.bf16_bits_to_f32(got)
    assert np.isnan(back[EDGE_BITS.index(0x7F800001)])
    assert np.isinf(back[EDGE_BITS.index(0xFF800000)]) and back[EDGE_BITS.index(0xFF800000)] < 0


def test_bf16_rounding_random_matches_reference_and_error_bound():
    rng = np.random.default_rng(7)
    bits = rng.integers(0, 2 ** 32, size=3000, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    got = cv.f32_to_bf16_bits(x)
    want = [_bf16_reference(float(v)) for v in x]
    assert got.tolist() == want
    y = rng.standard_normal(10000).astype(np.float32)
    r = cv.bf16_bits_to_f32(cv.f32_to_bf16_bits(y))
    assert np.all(np.abs(r - y) <= np.abs(y) * 2.0 ** -8)
    # already-bf16 values are fixed points
    assert np.array_equal(cv.f32_to_bf16_bits(r), cv.f32_to_bf16_bits(y))


# ---------------------------------------------------------------- safetensors


def _parse_safetensors(path):
    raw = Path(path).read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    return n, header, raw[8 + n:]


def test_safetensors_roundtrip(tmp_path):
    rng = np.random.default_rng(3)
    a = rng.standard_normal((5, 7)).astype(np.float32)
    b = rng.standard_normal((3,)).astype(np.float32)
    c = rng.standard_normal((2, 3, 4)).astype(np.float32)
    bf = cv.f32_to_bf16_bits(c)
    specs = [
        cv.TensorSpec("model.layers.0.self_attn.q_proj.weight", "F32", a.shape, a),
        cv.TensorSpec("model.norm.weight", "F32", b.shape, lambda: b),      # lazily produced
        cv.TensorSpec("x.bf16", "BF16", bf.shape, bf),
        cv.TensorSpec("empty", "F32", (0, 4), np.zeros((0, 4), np.float32)),
    ]
    path = tmp_path / "m.safetensors"
    cv.write_safetensors(path, specs, {"format": "pt"})

    n, header, data = _parse_safetensors(path)
    assert (8 + n) % 8 == 0
    assert header["__metadata__"] == {"format": "pt"}
    assert set(header) == {"__metadata__", "model.layers.0.self_attn.q_proj.weight", "model.norm.weight",
                           "x.bf16", "empty"}
    end = 0
    for name, arr, dt, np_dt in [("model.layers.0.self_attn.q_proj.weight", a, "F32", "<f4"),
                                 ("model.norm.weight", b, "F32", "<f4"),
                                 ("x.bf16", bf, "BF16", "<u2"),
                                 ("empty", np.zeros((0, 4), np.float32), "F32", "<f4")]:
        h = header[name]
        assert h["dtype"] == dt
        assert h["shape"] == list(arr.shape)
        lo, hi = h["data_offsets"]
        assert lo == end and hi - lo == arr.size * np.dtype(np_dt).itemsize
        end = hi
        got = np.frombuffer(data[lo:hi], dtype=np_dt).reshape(arr.shape)
        assert np.array_equal(got, arr)
    assert end == len(data)
    lo, hi = header["x.bf16"]["data_offsets"]
    assert np.allclose(cv.bf16_bits_to_f32(np.frombuffer(data[lo:hi], "<u2")).reshape(c.shape), c, rtol=2 ** -8)


def test_safetensors_header_padding_is_spaces():
    for name in ["a", "ab", "abc", "abcd", "abcde", "abcdef", "abcdefg", "abcdefgh"]:
        head = cv.safetensors_header([cv.TensorSpec(name, "F32", (1,), np.zeros(1, np.float32))])
        n = int.from_bytes(head[:8], "little")
        assert len(head) == 8 + n and len(head) % 8 == 0
        text = head[8:].decode("utf-8")
        assert text == text.rstrip(" ") + " " * (len(text) - len(text.rstrip(" ")))
        json.loads(text)


def test_safetensors_rejects_mismatch(tmp_path):
    with pytest.raises(ValueError):
        cv.write_safetensors(tmp_path / "x", [cv.TensorSpec("a", "F32", (2, 2), np.zeros(3, np.float32))])
    with pytest.raises(ValueError):
        cv.write_safetensors(tmp_path / "y", [cv.TensorSpec("a", "BF16", (2,), np.zeros(2, np.float32))])
    with pytest.raises(ValueError):
        cv.safetensors_header([cv.TensorSpec("a", "F32", (1,), np.zeros(1, np.float32))] * 2)


# ---------------------------------------------------------------- names, config, tokenizer


def test_name_mapping():
    m = cv.gguf_to_hf_name
    assert m("token_embd.weight") == "model.embed_tokens.weight"
    assert m("output_norm.weight") == "model.norm.weight"
    assert m("output.weight") == "lm_head.weight"
    assert m("blk.0.attn_q.weight") == "model.layers.0.self_attn.q_proj.weight"
    assert m("blk.12.attn_k.weight") == "model.layers.12.self_attn.k_proj.weight"
    assert m("blk.3.attn_v.weight") == "model.layers.3.self_attn.v_proj.weight"
    assert m("blk.3.attn_output.weight") == "model.layers.3.self_attn.o_proj.weight"
    assert m("blk.29.ffn_gate.weight") == "model.layers.29.mlp.gate_proj.weight"
    assert m("blk.29.ffn_up.weight") == "model.layers.29.mlp.up_proj.weight"
    assert m("blk.29.ffn_down.weight") == "model.layers.29.mlp.down_proj.weight"
    assert m("blk.5.attn_norm.weight") == "model.layers.5.input_layernorm.weight"
    assert m("blk.5.ffn_norm.weight") == "model.layers.5.post_attention_layernorm.weight"
    for bad in ["rope_freqs.weight", "blk.1.attn_qkv.weight", "blk.x.attn_q.weight", "token_embd"]:
        with pytest.raises(KeyError):
            m(bad)


SMOL_META = {
    "general.architecture": "llama",
    "llama.block_count": 30,
    "llama.context_length": 8192,
    "llama.embedding_length": 576,
    "llama.feed_forward_length": 1536,
    "llama.attention.head_count": 9,
    "llama.attention.head_count_kv": 3,
    "llama.rope.freq_base": 100000.0,
    "llama.attention.layer_norm_rms_epsilon": float(np.float32(1e-5)),
    "llama.rope.dimension_count": 64,
    "tokenizer.ggml.bos_token_id": 1,
    "tokenizer.ggml.eos_token_id": 2,
}


def test_build_config():
    cfg = cv.build_config(SMOL_META, tied=True, vocab_size=49152, torch_dtype="bfloat16")
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["model_type"] == "llama"
    assert (cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]) == (576, 1536, 30)
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]) == (9, 3, 64)
    assert cfg["rms_norm_eps"] == 1e-5 and cfg["rope_theta"] == 100000.0
    assert cfg["max_position_embeddings"] == 8192 and cfg["vocab_size"] == 49152
    assert cfg["tie_word_embeddings"] is True and cfg["torch_dtype"] == "bfloat16"
    assert (cfg["bos_token_id"], cfg["eos_token_id"]) == (1, 2)
    json.dumps(cfg)
    with pytest.raises(cv.ConvertError):
        cv.build_config({**SMOL_META, "general.architecture": "qwen2"}, tied=True, vocab_size=1,
                        torch_dtype="float32")


def test_build_tokenizer_json_small():
    tokens = ["<|endoftext|>", "a", "b", "ab", "Ġ", "Ġab"]
    merges = ["a b", "Ġ ab"]
    tok = cv.build_tokenizer_json(tokens, merges, [3, 1, 1, 1, 1, 1], "smollm")
    assert tok["model"]["vocab"] == {t: i for i, t in enumerate(tokens)}
    assert tok["model"]["merges"] == merges
    assert [a["content"] for a in tok["added_tokens"]] == ["<|endoftext|>"]
    assert tok["pre_tokenizer"]["pretokenizers"][0] == {"type": "Digits", "individual_digits": True}
    assert tok["pre_tokenizer"]["pretokenizers"][1]["add_prefix_space"] is False
    with pytest.raises(cv.ConvertError):
        cv.build_tokenizer_json(tokens, ["a c"], [1] * 6, "smollm")
    with pytest.raises(cv.ConvertError):
        cv.build_tokenizer_json(tokens, merges, [1] * 6, "llama-bpe")
    try:
        from tokenizers import Tokenizer
    except ImportError:
        return
    t = Tokenizer.from_str(json.dumps(tok))
    assert t.encode("ab ab").ids == [3, 5]
