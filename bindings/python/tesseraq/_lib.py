"""Finding and loading libtesseraq.so, and declaring the C signatures once."""
from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import List, Optional

from .errors import LibraryNotFoundError, check

c_void_p, c_char_p, c_int32, c_int64, c_double = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32, ctypes.c_int64, ctypes.c_double
P = ctypes.POINTER

PROGRESS_FN = ctypes.CFUNCTYPE(c_int32, c_int64, c_int64, c_void_p)
QUANT_PROGRESS_FN = ctypes.CFUNCTYPE(c_int32, c_int64, c_int64, c_int64, c_int64, c_double, c_void_p)

# Every function of include/tesseraq.h with its C types (tests/test_header.py checks this table
# against the header: names, argument counts and types, return types).
_SIGNATURES = {
    "tq_version": ([], c_char_p),
    "tq_version_number": ([], c_int32),
    "tq_last_error": ([], c_char_p),
    "tq_status_name": ([c_int32], c_char_p),
    "tq_set_num_threads": ([c_int32], c_int32),
    "tq_get_num_threads": ([], c_int32),
    "tq_model_open": ([c_char_p, P(c_void_p)], c_int32),
    "tq_model_open_with": ([c_char_p, c_char_p, P(c_void_p)], c_int32),
    "tq_model_free": ([c_void_p], None),
    "tq_model_info": ([c_void_p] + [P(c_int64)] * 8, c_int32),
    "tq_model_logits": ([c_void_p, c_void_p, c_int64, c_void_p], c_int32),
    "tq_eval_perplexity": ([c_void_p, c_void_p, c_int64, c_int64, c_int64, PROGRESS_FN, c_void_p, P(c_double)], c_int32),
    "tq_quantize": ([c_void_p, c_char_p, c_char_p, QUANT_PROGRESS_FN, c_void_p], c_int32),
    "tq_quantize_tokens": ([c_void_p, c_char_p, c_void_p, c_int64, c_char_p, QUANT_PROGRESS_FN, c_void_p], c_int32),
    "tq_packed_open": ([c_char_p, P(c_void_p)], c_int32),
    "tq_packed_free": ([c_void_p], None),
    "tq_packed_count": ([c_void_p, P(c_int64)], c_int32),
    "tq_packed_info": ([c_void_p, c_int64, P(c_char_p), P(c_int64), P(c_int64), P(c_int32), P(c_int64), P(c_int32)], c_int32),
    "tq_packed_unpack": ([c_void_p, c_int64, c_void_p], c_int32),
    "tq_packed_dequantize": ([c_void_p, c_int64, c_int64, c_int64, c_void_p], c_int32),
    "tq_packed_gemv": ([c_void_p, c_int64, c_void_p, c_void_p], c_int32),
    "tq_packed_gemm": ([c_void_p, c_int64, c_void_p, c_int64, c_void_p], c_int32),
    "tq_packed_gemv_many": ([c_void_p, P(c_int64), c_int64, c_void_p, P(c_void_p)], c_int32),
    "tq_tokenizer_open": ([c_char_p, P(c_void_p)], c_int32),
    "tq_tokenizer_free": ([c_void_p], None),
    "tq_tokenizer_vocab_size": ([c_void_p, P(c_int64)], c_int32),
    "tq_tokenizer_token_id": ([c_void_p, c_char_p, P(ctypes.c_uint32)], c_int32),
    "tq_tokenize": ([c_void_p, c_char_p, c_int64, c_void_p, c_int64, P(c_int64)], c_int32),
    "tq_detokenize": ([c_void_p, c_void_p, c_int64, c_void_p, c_int64, P(c_int64)], c_int32),
    "tq_session_open": ([c_void_p, c_int64, P(c_void_p)], c_int32),
    "tq_session_free": ([c_void_p], None),
    "tq_session_prefill": ([c_void_p, c_void_p, c_int64, c_void_p], c_int32),
    "tq_session_prefill_all": ([c_void_p, c_void_p, c_int64, c_void_p], c_int32),
    "tq_session_decode": ([c_void_p, ctypes.c_uint32, c_void_p], c_int32),
    "tq_session_rewind": ([c_void_p, c_int64], c_int32),
    "tq_session_reset": ([c_void_p], c_int32),
    "tq_session_position": ([c_void_p, P(c_int64)], c_int32),
    "tq_session_capacity": ([c_void_p, P(c_int64)], c_int32),
    "tq_session_memory": ([c_void_p, P(c_int64), P(c_int64)], c_int32),
    "tq_sampler_open": ([ctypes.c_float, c_int32, ctypes.c_float, ctypes.c_float, ctypes.c_uint64, P(c_void_p)], c_int32),
    "tq_sampler_free": ([c_void_p], None),
    "tq_sampler_accept": ([c_void_p, ctypes.c_uint32], c_int32),
    "tq_sampler_sample": ([c_void_p, c_void_p, c_int64, P(ctypes.c_uint32)], c_int32),
    "tq_sampler_reset": ([c_void_p], c_int32),
    "tq_text_stream_open": ([c_void_p, P(c_void_p)], c_int32),
    "tq_text_stream_free": ([c_void_p], None),
    "tq_text_stream_push": ([c_void_p, ctypes.c_uint32, P(c_void_p), P(c_int64)], c_int32),
    "tq_text_stream_finish": ([c_void_p, P(c_void_p), P(c_int64)], c_int32),
    "tq_chat_prompt": ([c_char_p, c_char_p, c_void_p, c_int64, P(c_int64)], c_int32),
    "tq_stop_tokens": ([c_char_p, c_void_p, c_int32, c_void_p, c_int64, P(c_int64)], c_int32),
}


def candidate_paths() -> List[Path]:
    """Where the library is looked for, in order."""
    paths: List[Path] = []
    env = os.environ.get("TESSERAQ_LIBRARY")
    if env:
        paths.append(Path(env))
    here = Path(__file__).resolve().parent
    paths.append(here / "libtesseraq.so")
    # A checkout: bindings/python/tesseraq -> repository root.
    for root in (here.parent.parent.parent, Path.cwd()):
        for config in ("release", "debug"):
            paths.append(root / ".build" / config / "libtesseraq.so")
    return paths


_lib: Optional[ctypes.CDLL] = None


def lib() -> ctypes.CDLL:
    """The loaded library with its signatures declared (loaded once)."""
    global _lib
    if _lib is not None:
        return _lib
    tried = candidate_paths()
    for path in tried:
        if path.is_file():
            handle = ctypes.CDLL(str(path))
            missing = [name for name in _SIGNATURES if not hasattr(handle, name)]
            if missing:
                raise LibraryNotFoundError(f"{path} lacks {', '.join(missing)}: it is older than these bindings")
            for name, (args, res) in _SIGNATURES.items():
                fn = getattr(handle, name)
                fn.argtypes, fn.restype = args, res
            _lib = handle
            return handle
    raise LibraryNotFoundError(
        "libtesseraq.so not found; looked in:\n  " + "\n  ".join(str(p) for p in tried)
        + "\nBuild it with `swift build -c release` or set TESSERAQ_LIBRARY to its path.")


def call(name: str, *args) -> None:
    """Calls a status-returning function and raises the typed error it reports."""
    l = lib()
    check(getattr(l, name)(*args), l)
