"""The Python package: every public function, with good and bad input."""
import ctypes
import os
import signal
import sys
import threading

import numpy as np
import pytest

import tesseraq
from tesseraq import _lib


@pytest.fixture(scope="module")
def stories(fixtures):
    return fixtures.model("stories260K")


@pytest.fixture(scope="module")
def test_tokens(fixtures):
    return tesseraq.read_tokens(fixtures.tokens("test.raw"))


@pytest.fixture(scope="module")
def packed_dir(stories, tmp_path_factory):
    out = tmp_path_factory.mktemp("packed") / "w4"
    report = tesseraq.quantize(stories, out, method="rtn", bits=4, group_size=32, progress=False)
    assert report["method"] == "rtn" and report["bits"] == 4 and len(report["blocks"]) == 5
    return out


def test_version_and_threads():
    assert tesseraq.version().count(".") == 2
    tesseraq.set_num_threads(1)
    assert _lib.lib().tq_get_num_threads() == 1
    tesseraq.set_num_threads(0)
    assert _lib.lib().tq_get_num_threads() >= 1


def test_library_search_reports_where_it_looked(monkeypatch, tmp_path):
    monkeypatch.setenv("TESSERAQ_LIBRARY", str(tmp_path / "nope.so"))
    paths = _lib.candidate_paths()
    assert paths[0] == tmp_path / "nope.so"
    assert any(p.name == "libtesseraq.so" and p.parent.name == "tesseraq" for p in paths)
    assert any(".build" in p.parts for p in paths)


def test_model_info_logits_perplexity(stories, fixtures, test_tokens):
    import json
    golden = json.load(open(os.path.join(stories, "golden.json")))
    with tesseraq.Model(stories) as m:
        assert m.info == tesseraq.ModelInfo(512, 64, 172, 5, 8, 4, 8, 512)
        lc = golden["logits_check"]
        out = m.logits(lc["input_ids"])
        assert out.shape == (64, 512) and out.dtype == np.float32
        np.testing.assert_allclose(out[:16], np.array(lc["logits"]), atol=2e-4, rtol=0)
        np.testing.assert_array_equal(m.logits(np.array(lc["input_ids"], dtype=np.uint32)), out)
        pc = golden["perplexity_check"]
        assert abs(m.perplexity(pc["input_ids"], seq_len=512, progress=False) / pc["ppl"] - 1) < 1e-4
        p2 = m.perplexity(test_tokens, seq_len=256, max_windows=2)
        assert 1 < p2 < 1000


def test_model_bad_input(stories, tmp_path):
    with pytest.raises(tesseraq.TesseraQIOError, match="config.json"):
        tesseraq.Model(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(tesseraq.FormatError, match="malformed JSON"):
        tesseraq.Model(tmp_path)
    m = tesseraq.Model(stories)
    with pytest.raises(tesseraq.InvalidArgumentError, match="outside the vocabulary"):
        m.logits([1, 2, 99999])
    with pytest.raises(tesseraq.InvalidArgumentError, match="dtype uint32"):
        m.logits(np.array([1, 2, 3], dtype=np.int64))
    with pytest.raises(tesseraq.InvalidArgumentError, match="C-contiguous"):
        m.logits(np.arange(10, dtype=np.uint32)[::2])
    with pytest.raises(tesseraq.InvalidArgumentError):
        m.logits([])
    with pytest.raises(tesseraq.InvalidArgumentError, match="integers"):
        m.logits([1, -2])
    with pytest.raises(tesseraq.InvalidArgumentError, match="seq_len"):
        m.perplexity(list(range(100)), seq_len=4096, progress=False)
    m.close()
    m.close()
    with pytest.raises(tesseraq.InvalidArgumentError, match="closed"):
        m.info


def test_perplexity_ctrl_c_cancels_cleanly(stories, test_tokens):
    with tesseraq.Model(stories) as m:
        timer = threading.Timer(0.2, lambda: os.kill(os.getpid(), signal.SIGINT))
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            m.perplexity(test_tokens, seq_len=512, progress=False)
        timer.join()
        assert m.perplexity(test_tokens, seq_len=512, max_windows=1, progress=False) > 1  # still usable


def test_packed_checkpoint(packed_dir):
    with tesseraq.PackedCheckpoint(packed_dir) as ckpt:
        tensors = list(ckpt)
        assert len(ckpt) == 35 and len(tensors) == 35
        t = tensors[0]
        assert t.bits == 4 and t.group_size == 32 and not t.sym
        assert ckpt.info(t.name) == t
        codes = ckpt.unpack(t.name)
        assert codes.shape == (t.out_features, t.in_features) and codes.max() <= 15
        w = ckpt.dequantize(0)
        np.testing.assert_array_equal(ckpt.dequantize(0, rows=slice(2, 5)), w[2:5])
        x = np.random.default_rng(0).standard_normal(t.in_features).astype(np.float32)
        np.testing.assert_allclose(ckpt.gemv(0, x), w.astype(np.float64) @ x, rtol=1e-4, atol=1e-5)
        X = np.random.default_rng(1).standard_normal((3, t.in_features)).astype(np.float32)
        out = np.empty((3, t.out_features), dtype=np.float32)
        Y = ckpt.gemm(0, X, out=out)
        assert Y is out
        np.testing.assert_allclose(Y, X.astype(np.float64) @ w.T, rtol=1e-4, atol=1e-5)


def test_packed_gemv_many(packed_dir):
    """A block's q/k/v and gate/up in one call each: every output against the dequantised W and
    against gemv."""
    blocks = (("self_attn", ("q_proj", "k_proj", "v_proj")), ("mlp", ("gate_proj", "up_proj")))
    with tesseraq.PackedCheckpoint(packed_dir) as ckpt:
        for module, projections in blocks:
            names = [f"model.layers.1.{module}.{p}" for p in projections]
            x = np.random.default_rng(2).standard_normal(ckpt.info(names[0]).in_features).astype(np.float32)
            ys = ckpt.gemv_many(names, x)
            assert [y.shape[0] for y in ys] == [ckpt.info(n).out_features for n in names]
            for n, y in zip(names, ys):
                np.testing.assert_allclose(y, ckpt.dequantize(n).astype(np.float64) @ x, rtol=1e-4, atol=1e-5)
                np.testing.assert_allclose(y, ckpt.gemv(n, x), rtol=1e-6, atol=1e-6)
        q, down = ckpt.info("model.layers.1.self_attn.q_proj"), ckpt.info("model.layers.1.mlp.down_proj")
        x = np.zeros(q.in_features, dtype=np.float32)
        with pytest.raises(tesseraq.InvalidArgumentError, match="takes"):
            ckpt.gemv_many([q.index, down.name], x)
        with pytest.raises(tesseraq.InvalidArgumentError, match="empty"):
            ckpt.gemv_many([], x)
        with pytest.raises(tesseraq.InvalidArgumentError, match="out of range"):
            ckpt.gemv_many([q.index, 1000], x)
        # the library's own checks, which the method above does not reach
        outs = [np.zeros(t.out_features, dtype=np.float32) for t in (q, down)]
        idx = (ctypes.c_int64 * 2)(q.index, down.index)
        ptrs = (ctypes.c_void_p * 2)(*(o.ctypes.data for o in outs))
        with pytest.raises(tesseraq.InvalidArgumentError, match="different in_features"):
            _lib.call("tq_packed_gemv_many", ckpt.handle, idx, 2, x.ctypes.data, ptrs)
        with pytest.raises(tesseraq.InvalidArgumentError, match="count must be positive"):
            _lib.call("tq_packed_gemv_many", ckpt.handle, idx, 0, x.ctypes.data, ptrs)
        with pytest.raises(tesseraq.InvalidArgumentError, match=r"ys\[1\] is NULL"):
            _lib.call("tq_packed_gemv_many", ckpt.handle, idx, 2, x.ctypes.data, (ctypes.c_void_p * 2)(ptrs[0], None))
        with pytest.raises(tesseraq.InvalidArgumentError, match="x is NULL"):
            _lib.call("tq_packed_gemv_many", ckpt.handle, idx, 1, None, ptrs)


def test_packed_bad_input(packed_dir, tmp_path):
    with pytest.raises(tesseraq.TesseraQIOError):
        tesseraq.PackedCheckpoint(tmp_path / "missing")
    ckpt = tesseraq.PackedCheckpoint(packed_dir)
    t = ckpt.info(0)
    with pytest.raises(tesseraq.InvalidArgumentError, match="out of range"):
        ckpt.unpack(1000)
    with pytest.raises(tesseraq.InvalidArgumentError, match="no packed tensor"):
        ckpt.dequantize("model.nothing")
    with pytest.raises(tesseraq.InvalidArgumentError, match="float32"):
        ckpt.gemv(0, np.zeros(t.in_features, dtype=np.float64))
    with pytest.raises(tesseraq.InvalidArgumentError, match="C-contiguous"):
        ckpt.gemv(0, np.zeros(2 * t.in_features, dtype=np.float32)[::2])
    with pytest.raises(tesseraq.InvalidArgumentError, match="elements"):
        ckpt.gemv(0, np.zeros(t.in_features + 1, dtype=np.float32))
    with pytest.raises(tesseraq.InvalidArgumentError, match="shape"):
        ckpt.gemm(0, np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(tesseraq.InvalidArgumentError, match="contiguous slice"):
        ckpt.dequantize(0, rows=slice(0, 4, 2))
    ckpt.close()
    with pytest.raises(tesseraq.InvalidArgumentError, match="closed"):
        len(ckpt)


def test_quantize_bad_config_is_typed(stories, tmp_path):
    with pytest.raises(tesseraq.InvalidArgumentError, match="bits"):
        tesseraq.quantize(stories, tmp_path / "a", bits=5, progress=False)
    with pytest.raises(tesseraq.InvalidArgumentError, match="colour"):
        tesseraq.quantize(stories, tmp_path / "b", colour="red", progress=False)
    with pytest.raises(tesseraq.InvalidArgumentError, match="calib"):
        tesseraq.quantize(stories, tmp_path / "c", method="tesseraq", progress=False)
    assert not any((tmp_path / n).exists() for n in "abc")


def test_quantize_ctrl_c_cancels_and_resumes(stories, fixtures, tmp_path, monkeypatch):
    calib = fixtures.tokens("valid")
    out = tmp_path / "tq"
    cfg = dict(method="tesseraq", bits=2, group_size=32, preset="ci", iters=3, n_samples=8, calib_tokens=calib)
    # A real SIGINT to the process once block 3 trains (not after a fixed delay: the whole run can
    # take under a second), sent from the progress bar the quantize call feeds.
    module = sys.modules["tesseraq.quantize"]
    real_bar = module.bar

    def interrupting_bar(*args, **kwargs):
        b = real_bar(*args, **kwargs)
        post, sent = b.set_postfix_str, []

        def set_postfix_str(text, refresh=True):
            if not sent and text.startswith("block 3/") and " round " in text:
                sent.append(True)
                os.kill(os.getpid(), signal.SIGINT)
            return post(text, refresh=refresh)

        b.set_postfix_str = set_postfix_str
        return b

    monkeypatch.setattr(module, "bar", interrupting_bar)
    with pytest.raises(KeyboardInterrupt):
        tesseraq.quantize(stories, out, **cfg)
    monkeypatch.undo()
    assert not out.exists()
    assert (tmp_path / "tq.partial" / "blocks" / "0001" / "block.sum").exists()
    report = tesseraq.quantize(stories, out, **cfg)
    assert len(report["blocks"]) == 5
    assert all(b["final_loss"] < b["rtn_loss"] for b in report["blocks"])
    with tesseraq.Model(out) as m:
        assert m.info.num_layers == 5


def test_tokenizer_round_trip_and_errors(stories, tmp_path):
    with tesseraq.Tokenizer(stories) as tok:
        assert tok.vocab_size == 512
        ids = tok.encode("Once upon a time, there was a little girl.")
        assert ids.dtype == np.uint32 and ids[0] == 1  # BOS added as the post-processor says
        assert tok.decode(ids) == "Once upon a time, there was a little girl."
        assert tok.decode(list(ids)) == tok.decode(ids)
        assert tok.token_id("<s>") == 1
        with pytest.raises(tesseraq.InvalidArgumentError):
            tok.token_id("no such token")
        with pytest.raises(tesseraq.InvalidArgumentError, match="uint32"):
            tok.decode(np.array([1, 2], dtype=np.int32))
    (tmp_path / "tokenizer.json").write_text('{"model": {"type": "WordPiece", "vocab": {}}}')
    with pytest.raises((tesseraq.UnsupportedError, tesseraq.FormatError)):
        tesseraq.Tokenizer(tmp_path)
    with pytest.raises(tesseraq.TesseraQIOError):
        tesseraq.Tokenizer(tmp_path / "missing")


def test_quantize_with_a_token_array(stories, fixtures, tmp_path):
    calib = tesseraq.read_tokens(fixtures.tokens("valid"))[:20000]
    cfg = dict(method="tesseraq", bits=3, group_size=32, preset="ci", iters=2, n_samples=4, batch=2, init="rtn")
    report = tesseraq.quantize(stories, tmp_path / "a", calib_tokens=calib, progress=False, **cfg)
    assert len(report["blocks"]) == 5 and all(b["final_loss"] < b["rtn_loss"] for b in report["blocks"])
    with pytest.raises(tesseraq.InvalidArgumentError, match="uint32"):
        tesseraq.quantize(stories, tmp_path / "b", calib_tokens=calib.astype(np.int64), progress=False, **cfg)
    with pytest.raises(tesseraq.InvalidArgumentError, match="vocabulary"):
        tesseraq.quantize(stories, tmp_path / "c", calib_tokens=[600] * 1000, progress=False, **cfg)
