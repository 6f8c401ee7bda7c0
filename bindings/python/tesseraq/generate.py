"""Token-level decoding (Session, Sampler) and the text generation behind Model.generate / Model.stream."""
from __future__ import annotations

import ctypes
import json
import os
import re
from typing import Iterator, List, Sequence

import numpy as np

from . import _lib
from ._arrays import Tokens, require, tokens_array
from .errors import InvalidArgumentError, UnsupportedError
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


def _json(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def chat_prompt(directory: str, prompt: str) -> str:
    """`prompt` as one user turn of the model's ChatML template (with the system message the
    template hard-codes, if any); other templates are refused."""
    template = _json(os.path.join(directory, "tokenizer_config.json")).get("chat_template") or ""
    if "<|im_start|>" not in template:
        raise UnsupportedError(f"{directory}: the chat template is not ChatML-shaped (no <|im_start|>); "
                               "only ChatML templates are supported (no general Jinja engine)")
    m = re.search(r"<\|im_start\|>system(?:\\n|\n)(.*?)<\|im_end\|>", template, re.S)
    system = f"<|im_start|>system\n{m.group(1)}<|im_end|>\n" if m else ""
    return f"{system}<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"


def eos_ids(directory: str, tokenizer: Tokenizer, chat: bool) -> List[int]:
    """config.json's eos_token_id (one id or a list), and <|im_end|> in chat mode."""
    eos = _json(os.path.join(directory, "config.json")).get("eos_token_id")
    ids = [] if eos is None else list(eos) if isinstance(eos, list) else [eos]
    if chat:
        ids.append(tokenizer.token_id("<|im_end|>"))
    return ids


def incremental_text(tokenizer: Tokenizer, ids: Sequence[int], emitted: int, final: bool) -> str:
    """The text of `ids` beyond its first `emitted` characters, or "" while it ends in an incomplete
    UTF-8 character (decoded as U+FFFD until its remaining bytes arrive), unless `final`."""
    text = tokenizer.decode(ids)
    if text.endswith("\ufffd") and not final:
        return ""
    return text[emitted:]


def stream(model: Model, prompt: str, max_tokens: int, temperature: float, top_k: int, top_p: float,
           repetition_penalty: float, seed: int, chat: bool) -> Iterator[str]:
    if max_tokens <= 0:
        raise InvalidArgumentError(f"max_tokens must be positive (got {max_tokens})")
    with Tokenizer(model.path) as tok:
        ids = tok.encode(chat_prompt(model.path, prompt) if chat else prompt)
        stop = set(eos_ids(model.path, tok, chat))
        capacity = min(ids.size + max_tokens, model.info.max_positions)
        if ids.size >= capacity:
            raise InvalidArgumentError(f"the prompt's {ids.size} tokens leave no room in the model's "
                                       f"{model.info.max_positions} positions")
        with Session(model, capacity) as session, Sampler(temperature, top_k, top_p, repetition_penalty, seed) as sampler:
            for t in ids:
                sampler.accept(int(t))
            logits = session.prefill(ids)
            generated: List[int] = []
            emitted = 0
            while True:
                token = sampler.sample(logits)
                if token in stop:
                    break
                generated.append(token)
                piece = incremental_text(tok, generated, emitted, final=False)
                if piece:
                    emitted += len(piece)
                    yield piece
                if len(generated) == max_tokens or session.position == capacity:
                    break
                logits = session.decode(token)
            rest = incremental_text(tok, generated, emitted, final=True)
            if rest:
                yield rest
