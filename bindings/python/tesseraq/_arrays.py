"""numpy arrays handed to C without copies: dtype and layout are checked, never converted."""
from __future__ import annotations

from typing import Sequence, Union

import numpy as np

from .errors import InvalidArgumentError

Tokens = Union[np.ndarray, Sequence[int]]


def require(array: np.ndarray, dtype, name: str, ndim: int) -> np.ndarray:
    """Returns `array` unchanged if it is a C-contiguous `dtype` array of `ndim` dims; else raises."""
    if not isinstance(array, np.ndarray):
        raise InvalidArgumentError(f"{name} must be a numpy array, got {type(array).__name__}")
    if array.dtype != np.dtype(dtype):
        raise InvalidArgumentError(f"{name} must have dtype {np.dtype(dtype).name}, got {array.dtype.name} (convert it with .astype)")
    if array.ndim != ndim:
        raise InvalidArgumentError(f"{name} must be {ndim}-D, got shape {array.shape}")
    if not array.flags.c_contiguous:
        raise InvalidArgumentError(f"{name} must be C-contiguous (use np.ascontiguousarray)")
    return array


def tokens_array(tokens: Tokens) -> np.ndarray:
    """Token ids as a contiguous uint32 array: lists are converted, arrays must already be uint32."""
    if isinstance(tokens, np.ndarray):
        return require(tokens, np.uint32, "tokens", 1)
    values = list(tokens)
    if any((not isinstance(t, (int, np.integer))) or t < 0 or t > 0xFFFFFFFF for t in values):
        raise InvalidArgumentError("tokens must be integers in [0, 2^32)")
    return np.asarray(values, dtype=np.uint32)
