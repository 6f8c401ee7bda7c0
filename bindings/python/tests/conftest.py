"""Shared fixtures: the library under test and the committed test data (Tests/Fixtures, data/)."""
import ctypes
import os

import numpy as np
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def library_path() -> str:
    path = os.environ.get("TESSERAQ_LIBRARY") or os.path.join(ROOT, ".build", "debug", "libtesseraq.so")
    if not os.path.exists(path):
        pytest.exit(f"libtesseraq.so not found at {path}: run `swift build` or set TESSERAQ_LIBRARY", returncode=1)
    return path


@pytest.fixture(scope="session")
def lib():
    return ctypes.CDLL(library_path())


class Fixtures:
    """Paths of the committed models and texts; WikiText-2 token files made on demand."""

    def __init__(self, workdir):
        self.workdir = workdir

    @staticmethod
    def model(name: str) -> str:
        return os.path.join(ROOT, "Tests", "Fixtures", "models", name)

    @staticmethod
    def tokenizer(name: str) -> str:
        return os.path.join(ROOT, "Tests", "Fixtures", "tokenizers", name, "tokenizer.json")

    @staticmethod
    def text(split: str) -> str:
        """"test.raw" (evaluation) or "valid" (calibration)."""
        return os.path.join(ROOT, "data", "wikitext2", f"{split}.txt")

    def tokens(self, split: str) -> str:
        """A uint32 token file: WikiText-2 `split` encoded by stories260K's tokenizer without BOS."""
        path = os.path.join(self.workdir, f"stories260K-{split}.bin")
        if not os.path.exists(path):
            import tesseraq
            with open(self.text(split), encoding="utf-8") as f, tesseraq.Tokenizer(self.model("stories260K")) as tok:
                ids = tok.encode(f.read())
            np.asarray(ids[1:], dtype="<u4").tofile(path)  # drop the BOS the post-processor adds
        return path


@pytest.fixture(scope="session")
def fixtures(tmp_path_factory):
    return Fixtures(str(tmp_path_factory.mktemp("fixtures")))
