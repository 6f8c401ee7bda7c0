"""QuaRot through the Python package: the rotated checkpoint checked with numpy (an orthogonal
rotation keeps every Gram matrix, folded norms scale the head's columns), its records in
config.json, WxAy evaluation, and the activation keys' typed errors."""
import json
import os

import numpy as np
import pytest

import tesseraq

from test_packed_format import read_safetensors


@pytest.fixture(scope="module")
def w8_rotated(fixtures, tmp_path_factory):
    """tiny-llama (widths 32 and 64: the online Hadamard applies) at W8 per-channel, rotated."""
    out = str(tmp_path_factory.mktemp("quarot") / "w8")
    report = tesseraq.quantize(fixtures.model("tiny-llama"), out, method="rtn", bits=8, group_size=-1,
                               rotate="hadamard", rotate_seed=5, progress=False)
    return fixtures.model("tiny-llama"), out, report


def test_rotation_is_orthogonal_on_the_stream(w8_rotated):
    src, out, report = w8_rotated
    assert report["rotate"] == "hadamard" and report["rotate_seed"] == 5
    a = {k: v.astype(np.float64) for k, v in read_safetensors(os.path.join(src, "model.safetensors")).items()}
    b = {k: v.astype(np.float64) for k, v in read_safetensors(os.path.join(out, "model.safetensors")).items()}
    e, e_rot = a["model.embed_tokens.weight"], b["model.embed_tokens.weight"]
    assert not np.allclose(e, e_rot)
    # E' = E Q with Q orthogonal: E' E'^T = E E^T.
    np.testing.assert_allclose(e_rot @ e_rot.T, e @ e.T, rtol=0, atol=1e-4 * np.abs(e @ e.T).max())
    # The head (tied in the input) is untied: W diag(g_final) Q.
    head = e * a["model.norm.weight"][None, :]
    h_rot = b["lm_head.weight"]
    np.testing.assert_allclose(h_rot @ h_rot.T, head @ head.T, rtol=0, atol=1e-4 * np.abs(head @ head.T).max())
    # And the stream's rotation is the same one: E'^T H' = Q^T E^T H Q keeps its trace.
    np.testing.assert_allclose(np.trace(e_rot.T @ h_rot), np.trace(e.T @ head), rtol=1e-5)
    for name, v in b.items():
        if name.endswith("layernorm.weight") or name == "model.norm.weight":
            assert np.all(v == 1), name
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert cfg["tie_word_embeddings"] is False
    assert cfg["tesseraq"]["rotation"] == {"type": "hadamard", "seed": 5, "online_hadamard": "down_proj"}
    assert "activations" not in cfg["tesseraq"]


def test_w8_rotated_scores_as_the_float_model(fixtures, w8_rotated):
    src, out, _ = w8_rotated
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 256, size=256, dtype=np.uint32)
    with tesseraq.Model(src) as m, tesseraq.Model(out) as q:
        fp, w8 = m.perplexity(ids, seq_len=64, progress=False), q.perplexity(ids, seq_len=64, progress=False)
    assert abs(w8 - fp) / fp < 0.02


def test_w4a4_checkpoint_records_and_applies_activations(fixtures, tmp_path):
    out = str(tmp_path / "w4a4")
    tesseraq.quantize(fixtures.model("tiny-llama"), out, method="rtn", bits=4, group_size=-1, a_bits=4, kv_bits=8,
                      rotate="hadamard", progress=False)
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert cfg["tesseraq"]["activations"] == {"bits": 4, "sym": False, "clip_ratio": 0.9, "kv_bits": 8}
    # The same weights read with the activation record removed score differently: evaluation applies it.
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 256, size=256, dtype=np.uint32)
    with tesseraq.Model(out) as q:
        a4 = q.perplexity(ids, seq_len=64, progress=False)
    del cfg["tesseraq"]["activations"]
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f)
    with tesseraq.Model(out) as q:
        a16 = q.perplexity(ids, seq_len=64, progress=False)
    assert a4 != a16 and np.isfinite(a4)


@pytest.mark.parametrize("keys, name", [({"a_bits": 5}, "a_bits"), ({"kv_bits": 2}, "kv_bits"),
                                        ({"a_sym": True}, "a_sym"), ({"rotate": "givens"}, "rotate"),
                                        ({"a_bits": 4, "a_clip_ratio": 0}, "a_clip_ratio")])
def test_bad_activation_keys_raise_typed_errors(fixtures, tmp_path, keys, name):
    with pytest.raises(tesseraq.InvalidArgumentError, match=f"config key {name}"):
        tesseraq.quantize(fixtures.model("tiny-llama"), str(tmp_path / "x"), method="rtn", progress=False, **keys)
    assert not os.path.exists(tmp_path / "x")


def test_rotation_refuses_post_norm_models(fixtures, tmp_path):
    with pytest.raises(tesseraq.UnsupportedError, match="rotate: .*post-norms"):
        tesseraq.quantize(fixtures.model("tiny-gemma2"), str(tmp_path / "g"), method="rtn", rotate="hadamard", progress=False)
