"""Token-level decoding (Session, Sampler) and the text generation behind Model.generate / Model.stream."""
from __future__ import annotations

import ctypes
import os
from typing import Iterator, List

import numpy as np

from . import _lib
from ._arrays import Tokens, require, tokens_array
from .errors import InvalidArgumentError
from .model import Model, _Handle
from .tokenizer import Tokenizer


class Session(_Handle):
    """A KV-cached decoding session over `model` for at most `max_tokens` positions.

    One session per thread; sessions over one model may run concurrently. The session keeps the
    model alive, so the model may be closed first.

    >>> with tesseraq.Session(model, 256) as s:
    ...     logits = s.prefill(prompt_ids)
    ...     logits = s.decode(int(logits.argmax()))
    """

    _free_name = "tq_session_free"

    def __init__(self, model: Model, max_tokens: int) -> None:
        self.path = model.path
        self.vocab_size = model.info.vocab_size
        self._open("tq_session_open", model.handle, max_tokens)

    def prefill(self, tokens: Tokens, all_logits: bool = False) -> np.ndarray:
        """Runs `tokens` at the next positions: the last position's logits (vocab,), or every
        position's (n, vocab) when `all_logits`."""
        ids = tokens_array(tokens)
        if ids.size == 0:
            raise InvalidArgumentError("tokens is empty")
        out = np.empty((ids.size, self.vocab_size) if all_logits else (self.vocab_size,), dtype=np.float32)
        name = "tq_session_prefill_all" if all_logits else "tq_session_prefill"
        _lib.call(name, self.handle, ids.ctypes.data, ids.size, out.ctypes.data)
        return out

    def decode(self, token: int) -> np.ndarray:
        """Runs one token at the next position: its logits (vocab,)."""
        if not 0 <= int(token) <= 0xFFFFFFFF:
            raise InvalidArgumentError(f"token {token} is not in [0, 2^32)")
        out = np.empty(self.vocab_size, dtype=np.float32)
        _lib.call("tq_session_decode", self.handle, int(token), out.ctypes.data)
        return out

    def rewind(self, n_keep: int) -> None:
        """Keeps the first n_keep positions."""
        _lib.call("tq_session_rewind", self.handle, n_keep)

    def reset(self) -> None:
        _lib.call("tq_session_reset", self.handle)

    def _int(self, name: str) -> int:
        v = ctypes.c_int64()
        _lib.call(name, self.handle, ctypes.byref(v))
        return v.value

    @property
    def position(self) -> int:
        """Positions filled so far."""
        return self._int("tq_session_position")

    @property
    def capacity(self) -> int:
        """Positions the KV cache holds."""
        return self._int("tq_session_capacity")

    @property
    def memory(self) -> dict:
        """Resident bytes: {"kv_cache": ..., "weights": ...}."""
        kv, w = ctypes.c_int64(), ctypes.c_int64()
        _lib.call("tq_session_memory", self.handle, ctypes.byref(kv), ctypes.byref(w))
        return {"kv_cache": kv.value, "weights": w.value}


class Sampler(_Handle):
    """Picks tokens from logits: repetition penalty over the accepted tokens, then greedy when
    temperature <= 0, else temperature, top-k (0: off), top-p (1: off) and a seeded draw. The same
    seed and logits give the same tokens. One sampler per thread."""

    _free_name = "tq_sampler_free"

    def __init__(self, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, repetition_penalty: float = 1.0,
                 seed: int = 0) -> None:
        self.path = ""
        self._open("tq_sampler_open", temperature, top_k, top_p, repetition_penalty, seed)

    def accept(self, token: int) -> None:
        """Adds a token (of the prompt, say) to the history the repetition penalty reads."""
        _lib.call("tq_sampler_accept", self.handle, int(token))

    def sample(self, logits: np.ndarray) -> int:
        """A token from a float32 logits row; the token is accepted."""
        row = require(logits, np.float32, "logits", 1)
        token = ctypes.c_uint32()
        _lib.call("tq_sampler_sample", self.handle, row.ctypes.data, row.size, ctypes.byref(token))
        return token.value

    def reset(self) -> None:
        """Clears the history and restarts the generator from the seed."""
        _lib.call("tq_sampler_reset", self.handle)


class TextStream(_Handle):
    """Generated ids to text pieces that hold only whole UTF-8 characters and join to the text of
    all the ids (tq_text_stream: each step decodes from the previous piece's tokens, not all ids).

    >>> with TextStream(tok) as ts:
    ...     pieces = [ts.push(i) for i in ids] + [ts.finish()]
    """

    _free_name = "tq_text_stream_free"

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._open("tq_text_stream_open", tokenizer.handle)

    def push(self, token: int) -> str:
        """The text `token` completes ("" while it ends in an incomplete character)."""
        return self._piece("tq_text_stream_push", int(token))

    def finish(self) -> str:
        """Whatever is held back (an incomplete character at the end, as U+FFFD)."""
        return self._piece("tq_text_stream_finish")

    def _piece(self, name: str, *args) -> str:
        piece, n = ctypes.c_void_p(), ctypes.c_int64()
        _lib.call(name, self.handle, *args, ctypes.byref(piece), ctypes.byref(n))
        return ctypes.string_at(piece.value, n.value).decode("utf-8") if n.value else ""


def chat_prompt(directory: str, prompt: str) -> str:
    """`prompt` as one user turn of the model's ChatML template (with the system message the
    template hard-codes, if any); other templates raise UnsupportedError (tq_chat_prompt)."""
    args = (os.fspath(directory).encode(), prompt.encode())
    n = ctypes.c_int64()
    _lib.call("tq_chat_prompt", *args, None, 0, ctypes.byref(n))
    buf = ctypes.create_string_buffer(n.value + 1)
    _lib.call("tq_chat_prompt", *args, buf, n.value + 1, ctypes.byref(n))
    return buf.raw[:n.value].decode("utf-8")


def stop_tokens(directory: str, tokenizer: Tokenizer, chat: bool) -> List[int]:
    """config.json's eos_token_id (one id or a list), and <|im_end|> in chat mode (tq_stop_tokens)."""
    args = (os.fspath(directory).encode(), tokenizer.handle, int(chat))
    n = ctypes.c_int64()
    _lib.call("tq_stop_tokens", *args, None, 0, ctypes.byref(n))
    ids = np.zeros(n.value, dtype=np.uint32)
    _lib.call("tq_stop_tokens", *args, ids.ctypes.data, ids.size, ctypes.byref(n))
    return [int(i) for i in ids]


def stream(model: Model, prompt: str, max_tokens: int, temperature: float, top_k: int, top_p: float,
           repetition_penalty: float, seed: int, chat: bool) -> Iterator[str]:
    if max_tokens <= 0:
        raise InvalidArgumentError(f"max_tokens must be positive (got {max_tokens})")
    with Tokenizer(model.path) as tok:
        ids = tok.encode(chat_prompt(model.path, prompt) if chat else prompt)
        stop = set(stop_tokens(model.path, tok, chat))
        capacity = min(ids.size + max_tokens, model.info.max_positions)
        if ids.size >= capacity:
            raise InvalidArgumentError(f"the prompt's {ids.size} tokens leave no room in the model's "
                                       f"{model.info.max_positions} positions")
        with Session(model, capacity) as session, Sampler(temperature, top_k, top_p, repetition_penalty, seed) as sampler:
            for t in ids:
                sampler.accept(int(t))
            logits = session.prefill(ids)
            with TextStream(tok) as text:
                generated = 0
                while True:
                    token = sampler.sample(logits)
                    if token in stop:
                        break
                    generated += 1
                    piece = text.push(token)
                    if piece:
                        yield piece
                    if generated == max_tokens or session.position == capacity:
                        break
                    logits = session.decode(token)
                rest = text.finish()
                if rest:
                    yield rest
