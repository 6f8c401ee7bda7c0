"""A kernel whose allocation fails makes the call return TQ_ERR_OUT_OF_MEMORY with a message,
never TQ_OK with an unwritten or NaN output, and a quantization writes nothing. Each case runs in
its own process with TESSERAQ_FAIL_ALLOCATION=1 (the first kernel allocation fails)."""
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

SCRIPT = """
import ctypes, json, os, sys
import numpy as np
from tesseraq import _lib
lib = _lib.lib()
m, p = ctypes.c_void_p(), ctypes.c_void_p()
assert lib.tq_model_open(sys.argv[1].encode(), ctypes.byref(m)) == 0
assert lib.tq_packed_open(sys.argv[2].encode(), ctypes.byref(p)) == 0
ids = np.arange(1, 33, dtype=np.uint32)
calib = np.tile(ids, 200)
out = np.zeros((len(ids), 512), dtype=np.float32)
ppl = ctypes.c_double()
X, Y = np.ones((4, 172), dtype=np.float32), np.zeros((4, 64), dtype=np.float32)
out_dir = sys.argv[3].encode()
{case}
print(json.dumps({{"status": status, "message": lib.tq_last_error().decode()}}))
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
        env["TESSERAQ_FAIL_ALLOCATION"] = "1"
    if case.endswith("avx2"):
        env["TESSERAQ_NO_AVX512"] = "1"  # the AVX-512 GEMV works on the stack and allocates nothing
    p = subprocess.run([sys.executable, "-c", SCRIPT.format(case=CASES[case]), fixtures.model("stories260K"),
                        str(packed), str(out_dir)], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", sorted(CASES))
def test_allocation_failure_is_reported(case, packed, fixtures, tmp_path):
    r = run_case(case, packed, fixtures, tmp_path / "ok", fail=False)
    assert r == {"status": 0, "message": ""}  # the same call succeeds without the injected failure
    out_dir = tmp_path / "q"
    r = run_case(case, packed, fixtures, out_dir, fail=True)
    assert r["status"] == -5, r
    assert "could not allocate" in r["message"] or "no memory" in r["message"]
    # nothing written: no checkpoint, and no block persisted for a resume to pick up
    assert not out_dir.exists() and not (tmp_path / "q.partial" / "blocks" / "0000").exists()
