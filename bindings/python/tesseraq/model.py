"""tesseraq.Model: a float or packed checkpoint opened for inference."""
from __future__ import annotations

import ctypes
import json
import os
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np

from . import _lib
from ._arrays import Tokens, tokens_array
from ._progress import bar, interruptible
from .errors import CancelledError, InvalidArgumentError


@dataclass(frozen=True)
class ModelInfo:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_positions: int


class _Handle:
    """An owned C handle: closed once, then every use raises."""

    _free_name = ""

    def __init__(self, path: "os.PathLike[str] | str", open_name: str) -> None:
        self.path = os.fspath(path)
        self._open(open_name, self.path.encode())

    def _open(self, open_name: str, *args) -> None:
        """Calls open_name(*args, &handle) and owns the handle."""
        self._handle: Optional[ctypes.c_void_p] = None
        handle = ctypes.c_void_p()
        _lib.call(open_name, *args, ctypes.byref(handle))
        self._handle = handle

    @property
    def handle(self) -> ctypes.c_void_p:
        if self._handle is None:
            raise InvalidArgumentError(f"{type(self).__name__} is closed")
        return self._handle

    def close(self) -> None:
        """Frees the handle (idempotent)."""
        if self._handle is not None:
            getattr(_lib.lib(), self._free_name)(self._handle)
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class Model(_Handle):
    """A Hugging Face checkpoint directory (float, or GPTQ packed) opened through libtesseraq.

    >>> with Model("models/SmolLM2-135M-Instruct") as m:
    ...     m.info.vocab_size

    lm_head="w8" holds the LM head rounded to nearest at 8 bits (groups of 128) and packed: half a
    bf16 head's bytes per decoding step, as llama.cpp's Q4_0 files hold theirs in Q8_0; every use
    of the model (logits, perplexity, sessions) runs that head. "checkpoint" keeps it as stored.
    """

    _free_name = "tq_model_free"

    def __init__(self, path: "os.PathLike[str] | str", lm_head: str = "checkpoint") -> None:
        self.path = os.fspath(path)
        self._open("tq_model_open_with", self.path.encode(), json.dumps({"lm_head": lm_head}).encode())

    @property
    def info(self) -> ModelInfo:
        """The model's dimensions."""
        v = [ctypes.c_int64() for _ in range(8)]
        _lib.call("tq_model_info", self.handle, *[ctypes.byref(x) for x in v])
        return ModelInfo(*[x.value for x in v])

    def logits(self, tokens: Tokens) -> np.ndarray:
        """Logits [len(tokens), vocab] (float32) of one sequence; row t predicts token t+1."""
        ids = tokens_array(tokens)
        if ids.size == 0:
            raise InvalidArgumentError("tokens is empty")
        out = np.empty((ids.size, self.info.vocab_size), dtype=np.float32)
        _lib.call("tq_model_logits", self.handle, ids.ctypes.data, ids.size, out.ctypes.data)
        return out

    def perplexity(self, tokens: Tokens, seq_len: int, max_windows: int = 0, progress: bool = True) -> float:
        """Perplexity over floor(len / seq_len) windows (at most max_windows if > 0), GPTQ style.

        Shows a tqdm bar when `progress`; Ctrl-C cancels cleanly (raises KeyboardInterrupt)."""
        ids = tokens_array(tokens)
        if ids.size == 0:
            raise InvalidArgumentError("tokens is empty")
        total = ids.size // seq_len if seq_len > 0 else 0
        if max_windows > 0:
            total = min(total, max_windows)
        ppl = ctypes.c_double()
        with interruptible() as stop, bar(total, "perplexity", progress) as b:
            def on_progress(done: int, _total: int, _user) -> int:
                b.update(done - b.n)
                return 1 if stop.requested else 0

            cb = _lib.PROGRESS_FN(on_progress)
            try:
                _lib.call("tq_eval_perplexity", self.handle, ids.ctypes.data, ids.size, seq_len, max_windows, cb, None,
                          ctypes.byref(ppl))
            except CancelledError:
                if stop.requested:
                    raise KeyboardInterrupt from None
                raise
        return ppl.value

    def stream(self, prompt: str, max_tokens: int = 128, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
               repetition_penalty: float = 1.0, seed: int = 0, chat: bool = False) -> Iterator[str]:
        """Text pieces as they are generated after `prompt` (at most max_tokens tokens; stops at the
        model's end-of-text tokens). Pieces hold whole characters only. `chat` wraps the prompt in
        the model's ChatML template (refused for other templates)."""
        from .generate import stream
        return stream(self, prompt, max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                      repetition_penalty=repetition_penalty, seed=seed, chat=chat)

    def generate(self, prompt: str, max_tokens: int = 128, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                 repetition_penalty: float = 1.0, seed: int = 0, chat: bool = False) -> str:
        """The text generated after `prompt`: the pieces of `stream` joined."""
        return "".join(self.stream(prompt, max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                                   repetition_penalty=repetition_penalty, seed=seed, chat=chat))
