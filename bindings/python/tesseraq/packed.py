"""tesseraq.PackedCheckpoint: the packed linears of a GPTQ checkpoint, read back."""
from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence

import numpy as np

from . import _lib
from ._arrays import require
from .errors import InvalidArgumentError
from .model import _Handle


@dataclass(frozen=True)
class PackedTensor:
    index: int
    name: str
    out_features: int
    in_features: int
    bits: int
    group_size: int
    sym: bool


def _require_input(x: np.ndarray, t: PackedTensor) -> None:
    """x must be a float32 vector of t's in_features."""
    require(x, np.float32, "x", 1)
    if x.shape[0] != t.in_features:
        raise InvalidArgumentError(f"x has {x.shape[0]} elements, {t.name} takes {t.in_features}")


class PackedCheckpoint(_Handle):
    """The packed tensors of a GPTQ (v1 or v2) checkpoint directory.

    Iterating yields `PackedTensor` descriptions; `unpack`, `dequantize`, `gemv` and `gemm` take a
    tensor index (or name). Input arrays are used in place (float32, C-contiguous), never copied."""

    _free_name = "tq_packed_free"

    def __init__(self, path: "os.PathLike[str] | str") -> None:
        super().__init__(path, "tq_packed_open")

    def __len__(self) -> int:
        n = ctypes.c_int64()
        _lib.call("tq_packed_count", self.handle, ctypes.byref(n))
        return n.value

    def info(self, index: "int | str") -> PackedTensor:
        i = self._index(index)
        name = ctypes.c_char_p()
        o, n, g = ctypes.c_int64(), ctypes.c_int64(), ctypes.c_int64()
        b, s = ctypes.c_int32(), ctypes.c_int32()
        _lib.call("tq_packed_info", self.handle, i, ctypes.byref(name), ctypes.byref(o), ctypes.byref(n), ctypes.byref(b),
                  ctypes.byref(g), ctypes.byref(s))
        return PackedTensor(i, name.value.decode(), o.value, n.value, b.value, g.value, bool(s.value))

    def __iter__(self) -> Iterator[PackedTensor]:
        for i in range(len(self)):
            yield self.info(i)

    def _index(self, index: "int | str") -> int:
        if isinstance(index, str):
            for t in self:
                if t.name == index:
                    return t.index
            raise InvalidArgumentError(f"no packed tensor named {index!r}")
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise InvalidArgumentError(f"tensor index must be an int or a name, got {type(index).__name__}")
        return int(index)

    def unpack(self, index: "int | str") -> np.ndarray:
        """Integer codes, uint8 [out_features, in_features]."""
        t = self.info(index)
        codes = np.empty((t.out_features, t.in_features), dtype=np.uint8)
        _lib.call("tq_packed_unpack", self.handle, t.index, codes.ctypes.data)
        return codes

    def dequantize(self, index: "int | str", rows: Optional[slice] = None) -> np.ndarray:
        """The dequantised weight, float32 [out_features, in_features] (or rows[start:stop])."""
        t = self.info(index)
        start, stop, step = (rows or slice(None)).indices(t.out_features)
        if step != 1:
            raise InvalidArgumentError("rows must be a contiguous slice")
        w = np.empty((max(stop - start, 0), t.in_features), dtype=np.float32)
        _lib.call("tq_packed_dequantize", self.handle, t.index, start, max(stop, start), w.ctypes.data)
        return w

    def gemv(self, index: "int | str", x: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        """y = W x on the packed words. x: float32 [in_features]."""
        t = self.info(index)
        _require_input(x, t)
        y = np.empty(t.out_features, dtype=np.float32) if out is None else require(out, np.float32, "out", 1)
        if y.shape[0] != t.out_features:
            raise InvalidArgumentError(f"out has {y.shape[0]} elements, {t.name} gives {t.out_features}")
        _lib.call("tq_packed_gemv", self.handle, t.index, x.ctypes.data, y.ctypes.data)
        return y

    def gemv_many(self, indices: "Sequence[int | str]", x: np.ndarray) -> List[np.ndarray]:
        """[W x for each tensor of `indices`], tensors sharing in_features (a block's q/k/v or
        gate/up), in one call: small tensors do not each pay for starting the threads."""
        ts = [self.info(i) for i in indices]
        if not ts:
            raise InvalidArgumentError("indices is empty")
        for t in ts:
            _require_input(x, t)
        ys = [np.empty(t.out_features, dtype=np.float32) for t in ts]
        idx = (ctypes.c_int64 * len(ts))(*(t.index for t in ts))
        ptrs = (ctypes.c_void_p * len(ts))(*(y.ctypes.data for y in ys))
        _lib.call("tq_packed_gemv_many", self.handle, idx, len(ts), x.ctypes.data, ptrs)
        return ys

    def gemm(self, index: "int | str", X: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Y = X W^T on the packed words. X: float32 [batch, in_features]."""
        t = self.info(index)
        require(X, np.float32, "X", 2)
        if X.shape[1] != t.in_features or X.shape[0] == 0:
            raise InvalidArgumentError(f"X has shape {X.shape}, {t.name} takes [batch >= 1, {t.in_features}]")
        Y = np.empty((X.shape[0], t.out_features), dtype=np.float32) if out is None else require(out, np.float32, "out", 2)
        if Y.shape != (X.shape[0], t.out_features):
            raise InvalidArgumentError(f"out has shape {Y.shape}, expected {(X.shape[0], t.out_features)}")
        _lib.call("tq_packed_gemm", self.handle, t.index, X.ctypes.data, X.shape[0], Y.ctypes.data)
        return Y
