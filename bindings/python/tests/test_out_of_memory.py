"""A failed allocation makes the call return TQ_ERR_OUT_OF_MEMORY with a message, never a crash,
never TQ_OK with an unwritten or NaN output, and a quantization writes no checkpoint.

TESSERAQ_FAIL_ALLOCATION=n makes the process's n-th allocation through the library's allocator
fail: every kernel work buffer and every Swift FloatBuffer (weights, activations, caches). Each
case sweeps n (SQLite's malloc-failure tests, sampled) from the first allocation of the opens to
past the last one of the call, one process per n, and every run must end in TQ_OK or
TQ_ERR_OUT_OF_MEMORY at the first failing call."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, library_path

CASES = {
    "logits": "status = lib.tq_model_logits(m, ids.ctypes.data, len(ids), out.ctypes.data)",
    "perplexity": "status = lib.tq_eval_perplexity(m, ids.ctypes.data, len(ids), 16, 0, _lib.PROGRESS_FN(), None, "
                  "ctypes.byref(ppl))",
    "quantize_gptq": "status = lib.tq_quantize_tokens(m, b'{\"method\": \"gptq\", \"preset\": \"ci\", \"group_size\": 32}', "
                     "calib.ctypes.data, len(calib), out_dir, _lib.QUANT_PROGRESS_FN(), None)",
    "quantize_tokens_tesseraq": "status = lib.tq_quantize_tokens(m, b'{\"method\": \"tesseraq\", \"preset\": \"ci\", "
                                "\"iters\": 1, \"n_samples\": 4, \"init\": \"rtn\", \"group_size\": 32}', "
                                "calib.ctypes.data, len(calib), out_dir, _lib.QUANT_PROGRESS_FN(), None)",
    "packed_gemm": "status = lib.tq_packed_gemm(p, 0, X.ctypes.data, 4, Y.ctypes.data)",
    "packed_gemv_avx2": "status = lib.tq_packed_gemv(p, 0, X.ctypes.data, Y.ctypes.data)",
}

# Prints the first failing call's status and message ("stage": open or call), or status 0.
SCRIPT = """
import ctypes, json, os, sys
import numpy as np
from tesseraq import _lib
lib = _lib.lib()
def report(stage, status):
    print(json.dumps({{"stage": stage, "status": status, "message": lib.tq_last_error().decode()}}))
    sys.exit(0)
m, p = ctypes.c_void_p(), ctypes.c_void_p()
status = lib.tq_model_open(sys.argv[1].encode(), ctypes.byref(m))
if status == 0:
    status = lib.tq_packed_open(sys.argv[2].encode(), ctypes.byref(p))
if status != 0:
    report("open", status)
ids = np.arange(1, 33, dtype=np.uint32)
calib = np.tile(ids, 200)
out = np.zeros((len(ids), 512), dtype=np.float32)
ppl = ctypes.c_double()
X, Y = np.ones((4, 172), dtype=np.float32), np.zeros((4, 64), dtype=np.float32)
out_dir = sys.argv[3].encode()
{case}
assert status != 0 or (np.isfinite(out).all() and np.isfinite(Y).all() and np.isfinite(ppl.value))
report("call", status)
"""


@pytest.fixture(scope="module")
def packed(tmp_path_factory, fixtures):
    import tesseraq
    out = tmp_path_factory.mktemp("oom") / "w4"
    tesseraq.quantize(fixtures.model("stories260K"), out, bits=4, group_size=32, progress=False)
    with tesseraq.PackedCheckpoint(out) as ckpt:
        t = ckpt.info(0)
    assert (t.out_features, t.in_features) == (64, 172)  # the shapes SCRIPT's X and Y assume
    return out


def run_case(case, packed, fixtures, out_dir, fail):
    env = dict(os.environ, TESSERAQ_LIBRARY=library_path(), PYTHONPATH=os.path.join(ROOT, "bindings", "python"))
    env.pop("TESSERAQ_FAIL_ALLOCATION", None)
    if fail:
        env["TESSERAQ_FAIL_ALLOCATION"] = str(fail)
    if case.endswith("avx2"):
        env["TESSERAQ_NO_AVX512"] = "1"  # the AVX-512 GEMV works on the stack and allocates nothing
    p = subprocess.run([sys.executable, "-c", SCRIPT.format(case=CASES[case]), fixtures.model("stories260K"),
                        str(packed), str(out_dir)], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, (fail, p.stderr)
    return json.loads(p.stdout.strip().splitlines()[-1])


def failure_points():
    """1 to 8, then about 25% apart: dense where the opens allocate, sampled in the long calls."""
    n = 1
    while True:
        yield n
        n = n + 1 if n < 8 else int(n * 1.25)


@pytest.mark.parametrize("case", sorted(CASES))
def test_allocation_failure_is_reported(case, packed, fixtures, tmp_path):
    r = run_case(case, packed, fixtures, tmp_path / "ok", fail=0)
    assert r == {"stage": "call", "status": 0, "message": ""}  # the same call succeeds without a failure
    failed_in_call = 0
    for n in failure_points():
        out_dir = tmp_path / f"q{n}"
        r = run_case(case, packed, fixtures, out_dir, fail=n)
        if r["status"] == 0:
            break  # n is past the last allocation: nothing failed
        assert r["status"] == -5, (n, r)
        assert "could not allocate" in r["message"] or "no memory" in r["message"], (n, r)
        assert not out_dir.exists(), n  # no checkpoint (finished blocks may stay staged for a resume)
        failed_in_call += r["stage"] == "call"
        assert n < 100_000, "the sweep never reached the end of the call"
    assert failed_in_call > 0  # some failures hit the call itself, not only the opens
