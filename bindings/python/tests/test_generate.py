"""Session, Sampler, Model.generate and Model.stream: decoding equals the full forward, the
sampler equals a plain re-implementation here (SplitMix64 and the filters in float64), streaming
emits whole characters, and bad input raises typed errors."""
import ctypes
import json
import math
import os

import numpy as np
import pytest

import tesseraq
from tesseraq.generate import chat_prompt, stop_tokens


@pytest.fixture(scope="module")
def stories(fixtures):
    with tesseraq.Model(fixtures.model("stories260K")) as m:
        yield m


@pytest.fixture(scope="module")
def golden(fixtures):
    with open(os.path.join(fixtures.model("stories260K"), "golden.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def packed_w4(fixtures, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("w4") / "ckpt")
    tesseraq.quantize(fixtures.model("stories260K"), out, method="rtn", bits=4, group_size=32, progress=False)
    with tesseraq.Model(out) as m:
        yield m


def relative_error(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("which", ["stories", "packed_w4"])
def test_decode_equals_full_forward(which, request, golden):
    model = request.getfixturevalue(which)
    tokens = np.asarray(([1] + golden["greedy_ids"])[:40], dtype=np.uint32)
    full = model.logits(tokens)
    with tesseraq.Session(model, 64) as s:
        rows = [*s.prefill(tokens[:7], all_logits=True)]
        rows += [s.decode(int(t)) for t in tokens[7:]]
        assert s.position == tokens.size and s.capacity == 64
        mem = s.memory
        assert mem["kv_cache"] == 2 * 5 * 64 * 32 * 4 and mem["weights"] > 0
    for t, row in enumerate(rows):
        assert relative_error(row, full[t]) <= 1e-4, t


def test_rewind_reset_and_errors(stories):
    with tesseraq.Session(stories, 8) as s:
        last = s.prefill([1, 403, 407])
        assert last.shape == (512,)
        a = s.decode(5)
        s.rewind(3)
        assert s.position == 3
        np.testing.assert_array_equal(s.decode(5), a)
        with pytest.raises(tesseraq.InvalidArgumentError, match="outside the vocabulary"):
            s.decode(512)
        with pytest.raises(tesseraq.InvalidArgumentError, match="5 tokens do not fit"):
            s.prefill([1, 2, 3, 4, 5])
        with pytest.raises(tesseraq.InvalidArgumentError, match="n_keep must be in"):
            s.rewind(9)
        with pytest.raises(tesseraq.InvalidArgumentError, match="dtype uint32"):
            s.prefill(np.array([1, 2], dtype=np.int64))
        assert s.position == 4
        s.reset()
        assert s.position == 0
        np.testing.assert_array_equal(s.prefill([1, 403, 407]), last)
    with pytest.raises(tesseraq.InvalidArgumentError, match="max_tokens must be in"):
        tesseraq.Session(stories, 0)
    with pytest.raises(tesseraq.InvalidArgumentError, match="is closed"):
        s.decode(1)


def test_session_outlives_its_model(fixtures):
    model = tesseraq.Model(fixtures.model("stories260K"))
    s = tesseraq.Session(model, 4)
    model.close()
    assert s.prefill([1]).shape == (512,)
    s.close()


class SplitMix64:
    def __init__(self, seed):
        self.state = seed

    def next(self):
        m = (1 << 64) - 1
        self.state = (self.state + 0x9E3779B97F4A7C15) & m
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
        return z ^ (z >> 31)


class ReferenceSampler:
    """The sampler's documented rule, step by step."""

    def __init__(self, temperature, top_k, top_p, penalty, seed):
        self.t, self.k, self.p, self.penalty = np.float32(temperature), top_k, np.float32(top_p), np.float32(penalty)
        self.rng, self.history = SplitMix64(seed), set()

    def support(self, logits):
        """Token ids kept by top-k and top-p, most likely first, and their probabilities."""
        l = logits.astype(np.float32).copy()
        for t in self.history:
            l[t] = l[t] / self.penalty if l[t] > 0 else l[t] * self.penalty
        if self.t <= 0:
            return [int(np.argmax(l))], [1.0], l
        order = list(np.lexsort((np.arange(l.size), -l)))
        if 0 < self.k < len(order):
            order = order[: self.k]
        t = float(self.t)
        mx = float(l[order[0]]) / t
        p = [math.exp(float(l[i]) / t - mx) for i in order]
        total = sum(p)
        p = [x / total for x in p]
        if self.p < 1:
            cumulative, keep = 0.0, 0
            while keep < len(p) and cumulative < float(self.p):
                cumulative += p[keep]
                keep += 1
            order, p = order[:keep], p[:keep]
        return [int(i) for i in order], p, l

    def sample(self, logits):
        order, p, _ = self.support(logits)
        if self.t <= 0:
            token = order[0]
        else:
            u = (self.rng.next() >> 11) * 2.0 ** -53 * sum(p)
            cumulative, token = 0.0, order[-1]
            for i, x in zip(order, p):
                cumulative += x
                if u < cumulative:
                    token = i
                    break
        self.history.add(token)
        return token


@pytest.mark.parametrize("settings", [(0.0, 0, 1.0, 1.0), (1.0, 0, 1.0, 1.0), (0.8, 10, 1.0, 1.3), (1.2, 0, 0.7, 1.0),
                                      (0.6, 5, 0.9, 1.5), (1.0, 1, 1.0, 1.0)])
def test_sampler_equals_reference(settings):
    rng = np.random.default_rng(4)
    ours, ref = tesseraq.Sampler(*settings, seed=11), ReferenceSampler(*settings, seed=11)
    for step in range(300):
        logits = (rng.standard_normal(64) * 3).astype(np.float32)
        kept, _, _ = ref.support(logits)
        token = ours.sample(logits)
        assert token in kept, step
        assert token == ref.sample(logits), step
    # reset: the history cleared and the generator back at the seed.
    ours.reset()
    rows = (np.random.default_rng(9).standard_normal((20, 64)) * 3).astype(np.float32)
    ref = ReferenceSampler(*settings, seed=11)
    assert [ours.sample(r) for r in rows] == [ref.sample(r) for r in rows]


def test_sampler_seeded_and_errors():
    logits = np.linspace(-2, 2, 50, dtype=np.float32)

    def draw(seed):
        s = tesseraq.Sampler(1.0, seed=seed)
        return [s.sample(logits) for _ in range(30)]

    assert draw(7) == draw(7) and draw(7) != draw(8)
    with pytest.raises(tesseraq.InvalidArgumentError, match="top_p"):
        tesseraq.Sampler(1.0, top_p=0.0)
    with pytest.raises(tesseraq.InvalidArgumentError, match="dtype float32"):
        tesseraq.Sampler().sample(logits.astype(np.float64))
    with pytest.raises(tesseraq.NumericError):
        tesseraq.Sampler().sample(np.array([1, np.nan], dtype=np.float32))


def test_generate_reproduces_the_golden_greedy_text(stories, golden):
    assert stories.generate("", max_tokens=200) == golden["expected_text"]


def test_stream_pieces_join_to_generate(stories):
    kw = dict(max_tokens=60, temperature=0.9, top_k=40, top_p=0.95, repetition_penalty=1.1, seed=5)
    pieces = list(stories.stream("Once upon a time", **kw))
    assert len(pieces) > 10 and "".join(pieces) == stories.generate("Once upon a time", **kw)


def test_streaming_emits_whole_characters(fixtures):
    """stories260K spells characters outside its vocabulary as UTF-8 byte tokens: fed one token at a
    time, the pieces never hold a partial character and join to the whole text, also over a long
    text (each step decodes from the previous piece's tokens)."""
    with tesseraq.Tokenizer(fixtures.model("stories260K")) as tok:
        text = "Lily saw a café, a naïve dragon ✓ and 🙂!"
        ids = [int(i) for i in tok.encode(text)[1:]]
        with tesseraq.TextStream(tok) as ts:
            pieces = [ts.push(i) for i in ids]
            pieces.append(ts.finish())
        assert pieces.count("") > 0 and all("\ufffd" not in p for p in pieces)
        assert "".join(pieces) == tok.decode(ids)
        with open(fixtures.text("valid")) as f:
            long_ids = [int(i) for i in tok.encode(f.read()[:5000] + " 🙂")]
        with tesseraq.TextStream(tok) as ts:
            joined = "".join(ts.push(i) for i in long_ids) + ts.finish()
        assert len(long_ids) > 1000 and joined == tok.decode(long_ids)
        # an incomplete character at the very end comes out of finish as U+FFFD, as decode gives it
        with tesseraq.TextStream(tok) as ts:
            head = [ts.push(i) for i in ids[:-1]]
            tail = ts.finish()
        assert "".join(head) + tail == tok.decode(ids[:-1])


def test_stop_tokens_and_stream_errors(fixtures, tmp_path):
    model = fixtures.model("stories260K")
    with tesseraq.Tokenizer(model) as tok:
        assert stop_tokens(model, tok, chat=False) == [2] and stop_tokens(model, tok, chat=True) == [2]  # no <|im_end|>
        lib = tesseraq._lib.lib()
        piece, n, handle = ctypes.c_void_p(), ctypes.c_int64(), ctypes.c_void_p()
        assert lib.tq_text_stream_open(tok.handle, None) == -1
        assert lib.tq_text_stream_push(None, 1, ctypes.byref(piece), ctypes.byref(n)) == -1
        assert b"stream is NULL" in lib.tq_last_error()
        assert lib.tq_text_stream_open(tok.handle, ctypes.byref(handle)) == 0
        assert lib.tq_text_stream_push(handle, 1, None, ctypes.byref(n)) == -1
        assert lib.tq_text_stream_push(tok.handle, 1, ctypes.byref(piece), ctypes.byref(n)) == -1
        assert b"tq_text_stream" in lib.tq_last_error()
        lib.tq_text_stream_free(handle)
        ids = (ctypes.c_uint32 * 1)()
        assert lib.tq_stop_tokens(model.encode(), tok.handle, 0, ids, 0, ctypes.byref(n)) == -1 and n.value == 1
        assert lib.tq_stop_tokens(str(tmp_path / "missing").encode(), tok.handle, 0, None, 0, ctypes.byref(n)) == -2


def test_chat_template(tmp_path, stories):
    smol = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
            "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
            "{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": smol}))
    assert chat_prompt(str(tmp_path), "Hi") == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "[INST] {{ messages }} [/INST]"}))
    with pytest.raises(tesseraq.UnsupportedError, match="not ChatML-shaped"):
        chat_prompt(str(tmp_path), "Hi")
    with pytest.raises(tesseraq.UnsupportedError, match="not ChatML-shaped"):
        stories.generate("Hi", chat=True)
    with pytest.raises(tesseraq.InvalidArgumentError, match="max_tokens must be positive"):
        stories.generate("Hi", max_tokens=0)
