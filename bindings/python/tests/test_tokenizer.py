"""tq_tokenize / tq_detokenize against the `tokenizers` package (pip: tokenizers) with its
defaults: Tokenizer.from_file(path).encode(text).ids and .decode(ids), on the whole WikiText-2
test text encoded as one string, and on tricky strings."""
import ctypes
import os
import random

import numpy as np
import pytest

tokenizers = pytest.importorskip(
    "tokenizers", reason="the `tokenizers` package (pip install tokenizers) is the reference; not installed")


TRICKY = [
    "", " ", "  hi  ", "\n", "Hello  world   ", "a\t\tb", "12345 abc123", "don't DON'T", "I'll we've they're 'S",
    " \n\n x", "x = 3.14159; y=[1,2]\n\n\n  z", "\u00a0\u2003x\u3000y\u0085z\x0bw", "é漢字😀 e\u0301 ß Ω я",
    "a<unk>b", "<s>hello</s>", "<|im_start|>hi<|im_end|>", "<unk", "▁▁x ĠĊ", "\x00\x01\x7f", "a\U00010EC5b ٣٤ Ⅻ ½",
]


@pytest.fixture(scope="module")
def tq(lib):
    lib.tq_tokenizer_open.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
    lib.tq_tokenizer_free.argtypes = [ctypes.c_void_p]
    lib.tq_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
                                ctypes.POINTER(ctypes.c_int64)]
    lib.tq_detokenize.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
                                  ctypes.POINTER(ctypes.c_int64)]
    lib.tq_tokenizer_vocab_size.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int64)]
    lib.tq_last_error.restype = ctypes.c_char_p
    lib.tq_status_name.restype = ctypes.c_char_p
    return lib


class Tok:
    """A libtesseraq tokenizer through the C ABI (count, then fill)."""

    def __init__(self, lib, path):
        self.lib, self.h = lib, ctypes.c_void_p()
        rc = lib.tq_tokenizer_open(path.encode(), ctypes.byref(self.h))
        assert rc == 0, lib.tq_last_error()

    def encode(self, text):
        b, n = text.encode("utf-8"), ctypes.c_int64()
        assert self.lib.tq_tokenize(self.h, b, len(b), None, 0, ctypes.byref(n)) == 0, self.lib.tq_last_error()
        out = np.zeros(max(n.value, 1), dtype=np.uint32)
        rc = self.lib.tq_tokenize(self.h, b, len(b), out.ctypes.data, len(out), ctypes.byref(n))
        assert rc == 0, self.lib.tq_last_error()
        return out[: n.value].tolist()

    def decode(self, ids):
        a, n = np.asarray(ids, dtype=np.uint32), ctypes.c_int64()
        assert self.lib.tq_detokenize(self.h, a.ctypes.data, len(a), None, 0, ctypes.byref(n)) == 0
        buf = ctypes.create_string_buffer(n.value + 1)
        rc = self.lib.tq_detokenize(self.h, a.ctypes.data, len(a), buf, n.value + 1, ctypes.byref(n))
        assert rc == 0, self.lib.tq_last_error()
        return buf.raw[: n.value].decode("utf-8")

    def vocab_size(self):
        n = ctypes.c_int64()
        assert self.lib.tq_tokenizer_vocab_size(self.h, ctypes.byref(n)) == 0
        return n.value

    def close(self):
        self.lib.tq_tokenizer_free(self.h)


@pytest.fixture(scope="module", params=["stories260K", "aidreams260K", "SmolLM2-135M-Instruct"])
def pair(request, tq, fixtures):
    name = request.param
    path = fixtures.tokenizer(name) if name.startswith("SmolLM2") else os.path.join(fixtures.model(name), "tokenizer.json")
    ref = tokenizers.Tokenizer.from_file(path)
    ours = Tok(tq, path)
    yield name, ref, ours
    ours.close()


def test_whole_wikitext2_test_text(pair, fixtures):
    name, ref, ours = pair
    text = open(fixtures.text("test.raw"), encoding="utf-8").read()
    expected = ref.encode(text).ids
    got = ours.encode(text)
    assert len(got) == len(expected)
    if got != expected:
        i = next(k for k in range(len(got)) if got[k] != expected[k])
        pytest.fail(f"{name}: first difference at id {i}: {got[max(0, i - 3):i + 5]} vs {expected[max(0, i - 3):i + 5]}")
    decoded = ours.decode(got)
    assert decoded == ref.decode(expected)
    if name == "SmolLM2-135M-Instruct":
        assert decoded == text  # byte-level BPE round-trips exactly


def test_tricky_strings_and_random_text(pair, fixtures):
    name, ref, ours = pair
    rng = random.Random(1234)
    words = open(fixtures.text("valid"), encoding="utf-8").read().split(" ")[:20000]
    atoms = [" ", "  ", "\t", "\n", "\u00a0", "'s", "'LL", "<unk>", "<s>", "</s>", "<|endoftext|>", "1", "42", "é", "😀",
             "漢", "▁", "Ġ", "<0x41>", "..", "\u0300", "\u2028"]
    cases = list(TRICKY)
    for _ in range(300):
        parts = [rng.choice(atoms) if rng.random() < 0.4 else rng.choice(words) for _ in range(rng.randint(0, 25))]
        parts += [chr(rng.randint(0x20, 0x2FFF)) for _ in range(rng.randint(0, 3))]
        rng.shuffle(parts)
        cases.append("".join(parts))
    for text in cases:
        expected = ref.encode(text).ids
        assert ours.encode(text) == expected, f"{name}: {text!r}"
        assert ours.decode(expected) == ref.decode(expected), f"{name}: {text!r}"
        noisy = [rng.randrange(ref.get_vocab_size() + 5) for _ in range(rng.randint(0, 12))]
        assert ours.decode(noisy) == ref.decode(noisy), f"{name}: decode {noisy}"
    assert ours.vocab_size() == ref.get_vocab_size()


def test_capacity_convention_and_errors(tq, fixtures, tmp_path):
    ours = Tok(tq, fixtures.model("stories260K"))  # a directory holding tokenizer.json
    try:
        text, n = b"hello world", ctypes.c_int64()
        assert tq.tq_tokenize(ours.h, text, -1, None, 0, ctypes.byref(n)) == 0  # NUL-terminated, count only
        need = n.value
        small = np.zeros(need - 1, dtype=np.uint32)
        rc = tq.tq_tokenize(ours.h, text, len(text), small.ctypes.data, len(small), ctypes.byref(n))
        assert tq.tq_status_name(rc) == b"TQ_ERR_INVALID_ARGUMENT" and n.value == need
        assert str(need).encode() in tq.tq_last_error()
        rc = tq.tq_tokenize(ours.h, b"\xc3(", 2, None, 0, ctypes.byref(n))
        assert rc == -1 and b"UTF-8" in tq.tq_last_error()
        ids = np.array(ours.encode("hello world"), dtype=np.uint32)
        buf = ctypes.create_string_buffer(4)
        rc = tq.tq_detokenize(ours.h, ids.ctypes.data, len(ids), buf, 4, ctypes.byref(n))
        assert rc == -1 and n.value == len("hello world")
    finally:
        ours.close()

    h = ctypes.c_void_p()
    bad = tmp_path / "tokenizer.json"
    bad.write_text('{"model": {"type": "Unigram", "vocab": []}}')
    rc = tq.tq_tokenizer_open(str(bad).encode(), ctypes.byref(h))
    assert tq.tq_status_name(rc) == b"TQ_ERR_UNSUPPORTED" and b"Unigram" in tq.tq_last_error() and h.value is None
    bad.write_text('{"model": ')
    assert tq.tq_status_name(tq.tq_tokenizer_open(str(bad).encode(), ctypes.byref(h))) == b"TQ_ERR_FORMAT"
    assert tq.tq_tokenizer_open(str(tmp_path / "none").encode(), ctypes.byref(h)) == -2
    tq.tq_tokenizer_free(None)
