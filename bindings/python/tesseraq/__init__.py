"""libtesseraq from Python: ultra-low-bit (2/3/4-bit) TesseraQ quantization of LLaMA-family models.

    import tesseraq
    with tesseraq.Model("models/SmolLM2-135M-Instruct") as m:
        print(m.perplexity(tokens, seq_len=2048, max_windows=16))
    tesseraq.quantize("models/SmolLM2-135M-Instruct", "out/w2", method="tesseraq", bits=2, group_size=64,
                      preset="fast", calib_tokens="valid.bin")
    with tesseraq.PackedCheckpoint("out/w2") as ckpt:
        for t in ckpt: ...
    with tesseraq.Model("out/w2") as m:
        for piece in m.stream("Once upon a time", max_tokens=64):
            print(piece, end="", flush=True)
"""
from . import _lib
from .errors import (CancelledError, CPUError, FormatError, InternalError, InvalidArgumentError, LibraryNotFoundError,
                     NumericError, OutOfMemoryError, TesseraQError, TesseraQIOError, UnsupportedError)
from .model import Model, ModelInfo
from .generate import Sampler, Session, TextStream
from .packed import PackedCheckpoint, PackedTensor
from .quantize import quantize
from .tokenizer import Tokenizer


def version() -> str:
    """The library's version string."""
    return _lib.lib().tq_version().decode()


def set_num_threads(n: int) -> None:
    """Threads the kernels use (n <= 0: one per core)."""
    _lib.call("tq_set_num_threads", n)


def read_tokens(path: str):
    """A little-endian uint32 token file as a numpy array."""
    import numpy as np
    return np.fromfile(path, dtype="<u4").astype(np.uint32, copy=False)


__all__ = ["Tokenizer", "Model", "ModelInfo", "Session", "Sampler", "TextStream", "PackedCheckpoint", "PackedTensor", "quantize", "version", "set_num_threads", "read_tokens",
           "TesseraQError", "InvalidArgumentError", "TesseraQIOError", "FormatError", "UnsupportedError", "OutOfMemoryError",
           "CancelledError", "NumericError", "CPUError", "InternalError", "LibraryNotFoundError"]
