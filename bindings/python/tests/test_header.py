"""The C ABI as a contract: the committed header is current and compiles cleanly as C and C++,
handles are typed (at compile time and at run time), only tq_* is exported under a versioned
SONAME, tq_last_error is "" after a success, and every other copy of the contract (README's
status table, the Python exceptions and signatures) agrees with the header."""
import ctypes
import os
import re
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

import tesseraq
from tesseraq import _lib, errors
from conftest import ROOT, library_path

HEADER = os.path.join(ROOT, "include", "tesseraq.h")


def header_text():
    with open(HEADER) as f:
        return f.read()


def declarations():
    """name -> (return type, [parameter C types]) of every function the header declares."""
    out = {}
    for m in re.finditer(r"^([\w ]+?\s*\**)(tq_\w+)\(([^;]*)\);", header_text(), re.M):
        params = [" ".join(p.split()) for p in m.group(3).split(",")]
        types = [] if params == ["void"] else [re.sub(r"\s*\b\w+$", "", p).strip() for p in params]
        out[m.group(2)] = (m.group(1).strip(), types)
    return out


def header_statuses():
    return {n: int(v) for n, v in re.findall(r"^\s+(TQ_\w+) = (-?\d+),", header_text(), re.M)}


def macro(name):
    return re.search(rf"#define {name} (\S+)", header_text()).group(1).strip('"')


def test_committed_header_is_current():
    build = os.path.dirname(library_path())
    p = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "gen_header.py"), "--build", build, "--check"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_header_is_plain_ascii_c():
    text = header_text()
    assert text.isascii()
    assert "<code>" not in text and "SWIFT_" not in text and "_Nullable" not in text
    assert re.search(r"\bout_\b", text) is None
    for handle in ("tq_model", "tq_packed", "tq_tokenizer"):
        assert f"typedef struct {handle} {handle};" in text
    assert "void *model" not in text and "void *ckpt" not in text and "void *tok" not in text


USES_EVERY_TYPE = r"""
#include "tesseraq.h"
#include <stdio.h>
static int32_t on_quant(int64_t b, int64_t n, int64_t r, int64_t s, double loss, void *user) {
    (void)b; (void)n; (void)r; (void)s; (void)loss; (void)user; return 0;
}
int main(void) {
    tq_model *m = NULL; tq_packed *p = NULL; tq_tokenizer *t = NULL;
    tq_quant_progress_fn q = on_quant;
    int64_t v = 0;
    tq_status s = TQ_OK;
    if (tq_model_open("x", &m) == TQ_OK) (void)tq_model_info(m, &v, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
    if (tq_packed_open("x", &p) == TQ_OK) (void)tq_packed_count(p, &v);
    if (tq_tokenizer_open("x", &t) == TQ_OK) (void)tq_tokenizer_vocab_size(t, &v);
    (void)q; (void)s;
    printf("%s %d %s\n", tq_version(), TQ_VERSION_NUMBER, tq_status_name(TQ_ERR_IO));
    tq_model_free(m); tq_packed_free(p); tq_tokenizer_free(t);
    return 0;
}
"""

WRONG_HANDLE = r"""
#include "tesseraq.h"
int main(void) {
    tq_tokenizer *t = 0;
    int64_t v = 0;
    return tq_model_info(t, &v, 0, 0, 0, 0, 0, 0, 0);
}
"""

COMPILERS = [("gcc", "c", ["-std=c99"]), ("gcc", "c", ["-std=c11"]), ("clang", "c", ["-std=c11"]),
             ("g++", "c++", ["-std=c++17"]), ("clang++", "c++", ["-std=c++17"])]


@pytest.mark.parametrize("cc,lang,std", COMPILERS, ids=[f"{c[0]}{c[2][0]}" for c in COMPILERS])
def test_header_compiles_warning_free(cc, lang, std, tmp_path):
    if shutil.which(cc) is None:
        pytest.fail(f"{cc} is not installed")
    flags = ["-x", lang, *std, "-I", os.path.join(ROOT, "include"), "-Wall", "-Wextra", "-pedantic", "-Werror"]
    src = tmp_path / "uses.c"
    src.write_text(USES_EVERY_TYPE)
    p = subprocess.run([cc, *flags, "-c", str(src), "-o", str(tmp_path / "uses.o")], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    # A tokenizer handle where a model is expected does not compile.
    src.write_text(WRONG_HANDLE)
    p = subprocess.run([cc, *flags, "-c", str(src), "-o", str(tmp_path / "wrong.o")], capture_output=True, text=True)
    assert p.returncode != 0 and "tq_tokenizer" in p.stderr


def test_only_tq_symbols_exported_under_a_versioned_soname():
    nm = subprocess.run(["nm", "-D", "--defined-only", library_path()], capture_output=True, text=True, check=True)
    names = [line.split()[-1] for line in nm.stdout.splitlines()]
    assert names and all(n.startswith("tq_") for n in names), [n for n in names if not n.startswith("tq_")][:10]
    assert set(names) == set(declarations())
    dyn = subprocess.run(["readelf", "-d", library_path()], capture_output=True, text=True, check=True).stdout
    assert f"Library soname: [libtesseraq.so.{macro('TQ_VERSION_MAJOR')}]" in dyn


def test_version_macros_match_the_library():
    lib = _lib.lib()
    assert lib.tq_version().decode() == macro("TQ_VERSION")
    major, minor, patch = (int(macro(f"TQ_VERSION_{k}")) for k in ("MAJOR", "MINOR", "PATCH"))
    assert lib.tq_version_number() == int(macro("TQ_VERSION_NUMBER")) == major * 1_000_000 + minor * 1_000 + patch


def test_status_codes_agree_everywhere():
    statuses = header_statuses()
    assert statuses["TQ_OK"] == 0 and len(statuses) == 10
    lib = _lib.lib()
    for name, value in statuses.items():
        assert lib.tq_status_name(value).decode() == name
    assert lib.tq_status_name(-100) == b"TQ_ERR_UNKNOWN"
    # README's table: | value | name | meaning |
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = {n: int(v) for v, n in re.findall(r"^\| (-?\d+) \| (TQ_\w+) \|", f.read(), re.M)}
    assert readme == statuses
    # Python: one exception class per error status.
    assert {v: k for k, v in statuses.items() if v} .keys() == errors._BY_STATUS.keys()
    assert all(cls.status == v for v, cls in errors._BY_STATUS.items())


# What each ctypes type may stand for in a C signature.
CTYPES = {
    ctypes.c_int32: {"int32_t"}, ctypes.c_int64: {"int64_t"}, ctypes.c_double: {"double"}, ctypes.c_float: {"float"},
    ctypes.c_uint32: {"uint32_t"}, ctypes.c_uint64: {"uint64_t"},
    ctypes.c_char_p: {"const char *", "char *"},
    ctypes.c_void_p: {"tq_model *", "tq_packed *", "tq_tokenizer *", "tq_session *", "tq_sampler *", "tq_text_stream *", "float *", "const float *", "const uint32_t *",
                      "uint32_t *", "uint8_t *", "char *", "void *", "const int64_t *"},
    ctypes.POINTER(ctypes.c_void_p): {"tq_model **", "tq_packed **", "tq_tokenizer **", "tq_session **", "tq_sampler **",
                                      "tq_text_stream **", "float *const *", "const char **"},
    ctypes.POINTER(ctypes.c_int64): {"int64_t *", "const int64_t *"},
    ctypes.POINTER(ctypes.c_int32): {"int32_t *"}, ctypes.POINTER(ctypes.c_double): {"double *"},
    ctypes.POINTER(ctypes.c_uint32): {"uint32_t *"}, ctypes.POINTER(ctypes.c_char_p): {"const char **"},
    _lib.PROGRESS_FN: {"tq_progress_fn"}, _lib.QUANT_PROGRESS_FN: {"tq_quant_progress_fn"},
}


def test_python_signatures_match_the_header():
    decls = declarations()
    assert set(_lib._SIGNATURES) == set(decls), set(decls) ^ set(_lib._SIGNATURES)
    for name, (args, res) in _lib._SIGNATURES.items():
        ret, params = decls[name]
        assert len(args) == len(params), name
        for k, (a, c) in enumerate(zip(args, params)):
            assert c in CTYPES[a], f"{name} argument {k}: {a.__name__} cannot be {c}"
        assert (res is None and ret == "void") or (res is not None and ret in CTYPES[res]), f"{name} returns {ret}"


def test_typed_handles_are_checked_at_run_time(fixtures):
    lib = _lib.lib()
    stories = fixtures.model("stories260K")
    tok, model, v = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_int64()
    assert lib.tq_tokenizer_open(stories.encode(), ctypes.byref(tok)) == 0
    assert lib.tq_last_error() == b""
    nones = [None] * 7
    assert lib.tq_model_info(tok, ctypes.byref(v), *nones) == -1
    assert b"tq_tokenizer handle where a tq_model handle is expected" in lib.tq_last_error()
    assert lib.tq_packed_count(tok, ctypes.byref(v)) == -1 and b"tq_packed" in lib.tq_last_error()
    # A success clears the message.
    assert lib.tq_tokenizer_vocab_size(tok, ctypes.byref(v)) == 0 and v.value == 512
    assert lib.tq_last_error() == b""
    # A stray pointer and a freed handle are refused, not dereferenced; a second free does nothing.
    buf = ctypes.create_string_buffer(64)
    assert lib.tq_tokenizer_vocab_size(ctypes.cast(buf, ctypes.c_void_p), ctypes.byref(v)) == -1
    assert b"not a live tq_tokenizer handle" in lib.tq_last_error()
    lib.tq_tokenizer_free(tok)
    assert lib.tq_tokenizer_vocab_size(tok, ctypes.byref(v)) == -1
    lib.tq_tokenizer_free(tok)
    lib.tq_model_free(tok)  # the wrong free function on a dead handle: ignored
    assert lib.tq_model_open(stories.encode(), ctypes.byref(model)) == 0
    lib.tq_tokenizer_free(model)  # the wrong free function: ignored, the model stays usable
    assert lib.tq_model_info(model, ctypes.byref(v), *nones) == 0 and v.value == 512
    lib.tq_model_free(model)
    # The message survives the free functions, which never set it.
    assert lib.tq_model_info(model, ctypes.byref(v), *nones) == -1
    lib.tq_model_free(None)
    assert b"not a live tq_model handle" in lib.tq_last_error()


def test_free_racing_with_calls_is_safe(fixtures, tmp_path):
    """Threads run GEMVs on one packed checkpoint while it is freed: calls finish or fail cleanly."""
    out = tmp_path / "w4"
    tesseraq.quantize(fixtures.model("stories260K"), out, bits=4, group_size=32, progress=False)
    with tesseraq.PackedCheckpoint(out) as ckpt:
        tensor = next(iter(ckpt))
    lib = _lib.lib()
    h = ctypes.c_void_p()
    assert lib.tq_packed_open(str(out).encode(), ctypes.byref(h)) == 0
    x = np.ones(tensor.in_features, dtype=np.float32)
    results, start = [], threading.Barrier(5)

    def worker():
        y = np.zeros(tensor.out_features, dtype=np.float32)
        start.wait(timeout=60)
        codes = [lib.tq_packed_gemv(h, tensor.index, x.ctypes.data, y.ctypes.data) for _ in range(300)]
        results.append(codes)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    start.wait(timeout=60)
    lib.tq_packed_free(h)
    for t in threads:
        t.join()
    assert len(results) == 4
    for codes in results:
        assert set(codes) <= {0, -1}
        # once refused, always refused: the handle never comes back to life
        assert -1 not in codes or all(c == -1 for c in codes[codes.index(-1):])
