"""Typed exceptions carrying the library's status code and tq_last_error() message."""
from __future__ import annotations


class TesseraQError(Exception):
    """Base class: `status` is the C status code, the message is tq_last_error()."""

    status = -9

    def __init__(self, message: str, status: int = None):  # type: ignore[assignment]
        super().__init__(message)
        if status is not None:
            self.status = status


class InvalidArgumentError(TesseraQError, ValueError):
    status = -1


class TesseraQIOError(TesseraQError, OSError):
    status = -2


class FormatError(TesseraQError, ValueError):
    status = -3


class UnsupportedError(TesseraQError, NotImplementedError):
    status = -4


class OutOfMemoryError(TesseraQError, MemoryError):
    status = -5


class CancelledError(TesseraQError):
    status = -6


class NumericError(TesseraQError, ArithmeticError):
    status = -7


class CPUError(TesseraQError, RuntimeError):
    status = -8


class InternalError(TesseraQError, RuntimeError):
    status = -9


class LibraryNotFoundError(TesseraQError, ImportError):
    status = -2


_BY_STATUS = {cls.status: cls for cls in (InvalidArgumentError, TesseraQIOError, FormatError, UnsupportedError,
                                          OutOfMemoryError, CancelledError, NumericError, CPUError, InternalError)}


def check(status: int, lib) -> None:
    """Raises the exception class for `status` (0 is success)."""
    if status == 0:
        return
    message = lib.tq_last_error().decode("utf-8", "replace")
    raise _BY_STATUS.get(status, TesseraQError)(message, status)
