"""tesseraq.Tokenizer: Hugging Face tokenizer.json BPE (byte-level and SentencePiece style)."""
from __future__ import annotations

import ctypes
import os
from typing import Sequence

import numpy as np

from . import _lib
from ._arrays import tokens_array
from .model import _Handle


class Tokenizer(_Handle):
    """A tokenizer.json (or a model directory holding one), encoding exactly as the `tokenizers`
    package with its defaults (special tokens such as BOS added where its post-processor adds them)."""

    _free_name = "tq_tokenizer_free"

    def __init__(self, path: "os.PathLike[str] | str") -> None:
        super().__init__(path, "tq_tokenizer_open")

    @property
    def vocab_size(self) -> int:
        n = ctypes.c_int64()
        _lib.call("tq_tokenizer_vocab_size", self.handle, ctypes.byref(n))
        return n.value

    def token_id(self, token: str) -> int:
        v = ctypes.c_uint32()
        _lib.call("tq_tokenizer_token_id", self.handle, token.encode(), ctypes.byref(v))
        return v.value

    def encode(self, text: str) -> np.ndarray:
        """Token ids (uint32) of `text` encoded as one string."""
        data = text.encode("utf-8")
        n = ctypes.c_int64()
        _lib.call("tq_tokenize", self.handle, data, len(data), None, 0, ctypes.byref(n))
        ids = np.empty(n.value, dtype=np.uint32)
        _lib.call("tq_tokenize", self.handle, data, len(data), ids.ctypes.data, ids.size, ctypes.byref(n))
        return ids

    def decode(self, ids: "np.ndarray | Sequence[int]") -> str:
        """Text of `ids` (special tokens skipped)."""
        arr = tokens_array(ids)
        n = ctypes.c_int64()
        _lib.call("tq_detokenize", self.handle, arr.ctypes.data, arr.size, None, 0, ctypes.byref(n))
        buf = ctypes.create_string_buffer(n.value + 1)
        _lib.call("tq_detokenize", self.handle, arr.ctypes.data, arr.size, buf, n.value + 1, ctypes.byref(n))
        return buf.raw[: n.value].decode("utf-8")
