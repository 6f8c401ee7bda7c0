"""Shared fixtures: the library under test and ../shared (skipped loudly when absent)."""
import ctypes
import os
import warnings

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
SHARED = os.path.abspath(os.path.join(ROOT, "..", "shared"))


def library_path() -> str:
    path = os.environ.get("TESSERAQ_LIBRARY") or os.path.join(ROOT, ".build", "debug", "libtesseraq.so")
    if not os.path.exists(path):
        pytest.exit(f"libtesseraq.so not found at {path}: run `swift build` or set TESSERAQ_LIBRARY", returncode=1)
    return path


@pytest.fixture(scope="session")
def lib():
    return ctypes.CDLL(library_path())


@pytest.fixture(scope="session")
def shared():
    if not os.path.exists(os.path.join(SHARED, "models", "stories260K", "config.json")):
        warnings.warn(f"{SHARED} is absent: tests that need the shared models are SKIPPED")
        pytest.skip(f"{SHARED} is absent (shared models and data)")
    return SHARED
