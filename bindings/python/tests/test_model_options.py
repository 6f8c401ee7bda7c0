"""Model(path, lm_head="w8") / tq_model_open_with: the head a numpy re-implementation of 8-bit RTN
(groups of 128, FORMATS.md's grid, float16 scales) predicts, and bad options raise typed errors."""
import ctypes
import json
import os
import shutil
import struct

import numpy as np
import pytest

import tesseraq
from tesseraq import _lib

from test_packed_format import read_safetensors


def rtn_w8_g128(w):
    """Asymmetric 8-bit round to nearest per row and group of 128 columns, dequantized."""
    out = np.empty_like(w)
    for g0 in range(0, w.shape[1], 128):
        blk = w[:, g0:g0 + 128]
        mn, mx = blk.min(axis=1, keepdims=True), blk.max(axis=1, keepdims=True)
        s = (np.maximum(mx - mn, np.float32(1e-5)) / np.float32(255)).astype(np.float16).astype(np.float32)
        z = np.clip(-np.rint(mn / s), 0, 255)
        q = np.clip(np.rint(blk / s) + z, 0, 255)
        out[:, g0:g0 + 128] = (q - z) * s
    return out


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, a in tensors.items():
        a = np.ascontiguousarray(a, dtype=np.float32)
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        blobs.append(a.tobytes())
        off += a.nbytes
    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


@pytest.fixture(scope="module")
def stories_untied_rtn_head(fixtures, tmp_path_factory):
    """stories260K with an untied float LM head equal to numpy's RTN of its (tied) embedding."""
    src = fixtures.model("stories260K")
    out = str(tmp_path_factory.mktemp("rtnhead") / "model")
    shutil.copytree(src, out)
    tensors = {k: v.astype(np.float32) for k, v in read_safetensors(os.path.join(src, "model.safetensors")).items()}
    tensors["lm_head.weight"] = rtn_w8_g128(tensors["model.embed_tokens.weight"])
    write_safetensors(os.path.join(out, "model.safetensors"), tensors)
    with open(os.path.join(out, "config.json")) as f:
        config = json.load(f)
    config["tie_word_embeddings"] = False
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f)
    return out


def test_w8_head_equals_numpy_rtn_head(fixtures, stories_untied_rtn_head):
    tokens = np.asarray(json.load(open(os.path.join(fixtures.model("stories260K"), "golden.json")))["greedy_ids"][:32],
                        dtype=np.uint32)
    with tesseraq.Model(fixtures.model("stories260K"), lm_head="w8") as w8, \
            tesseraq.Model(stories_untied_rtn_head) as ref, tesseraq.Model(fixtures.model("stories260K")) as plain:
        got, want, orig = w8.logits(tokens), ref.logits(tokens), plain.logits(tokens)
        with tesseraq.Session(w8, 40) as s:
            last = s.prefill(tokens)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    assert np.abs(last - got[-1]).max() <= 1e-4 * np.abs(got[-1]).max()
    assert 0 < np.abs(got - orig).max() <= 2e-2 * np.abs(orig).max()  # a real, small change


def test_bad_options_raise(fixtures):
    path = fixtures.model("stories260K")
    with pytest.raises(tesseraq.InvalidArgumentError, match="lm_head"):
        tesseraq.Model(path, lm_head="w4")
    handle = ctypes.c_void_p()
    for options, status in [(b'{"head": "w8"}', -1), (b"[1]", -1), (b"{", -3)]:
        assert _lib.lib().tq_model_open_with(path.encode(), options, ctypes.byref(handle)) == status
        assert handle.value is None
    # NULL and "" are the defaults
    for options in [None, b""]:
        assert _lib.lib().tq_model_open_with(path.encode(), options, ctypes.byref(handle)) == 0
        _lib.lib().tq_model_free(handle)
