"""Tensor-parallel TesseraQ under `mpirun -np 2` (one thread per rank) against the single-process run
with the same seed: per-block losses, perplexity, the exported checkpoint (byte for byte where every
quantization group lies on one rank), the refusals, and a resume
after the whole job is killed. Needs Open MPI (`bash scripts/setup.sh --mpi`); without it every test
here is skipped with a warning that says so."""
import json
import os
import shutil
import signal
import subprocess
import time
import warnings

import numpy as np
import pytest

from test_cli import cli, run  # noqa: F401  (the fixture and its runner)

MPIRUN = shutil.which("mpirun")

if MPIRUN is None:
    warnings.warn("MPI IS NOT INSTALLED: the tensor-parallel tests are SKIPPED (bash scripts/setup.sh --mpi installs it)")
pytestmark = pytest.mark.skipif(MPIRUN is None, reason="MPI IS NOT INSTALLED: tensor-parallel tests SKIPPED "
                                                       "(bash scripts/setup.sh --mpi installs Open MPI)")


def mpi_command(cli, args, ranks=2):
    root = ["--allow-run-as-root"] if os.geteuid() == 0 else []
    return [MPIRUN, *root, "--oversubscribe", "-np", str(ranks), "-x", "OMP_NUM_THREADS=1", cli, *args]


def mpi_env():
    # Container-safe shared-memory transport (no cross-process memory attach).
    return dict(os.environ, OMP_NUM_THREADS="1", OMPI_MCA_btl_vader_single_copy_mechanism="none")


def run_mpi(cli, args, ranks=2, ok=True):
    p = subprocess.run(mpi_command(cli, args, ranks), capture_output=True, text=True, timeout=900, env=mpi_env())
    if ok:
        assert p.returncode == 0, p.stderr
    return p


def quantize_args(fixtures, out, group=-1, init="rtn", method="tesseraq"):
    start = ["--set", f"init={init}"] if method == "tesseraq" else []
    return ["quantize", "--model", fixtures.model("stories260K"), "--out", out, "--method", method, "--bits", "2",
            "--group-size", str(group), "--preset", "ci", *start, "--set", "seq_len=256",
            "--calib-text", fixtures.text("valid"), "--threads", "1", "--json"]


def perplexity(cli, model, fixtures):
    p = run(cli, ["eval", "--model", model, "--text", fixtures.text("test.raw"), "--seq-len", "256",
                  "--max-windows", "16", "--threads", "1", "--json"])
    return json.loads(p.stdout)["perplexity"]


@pytest.fixture(scope="module")
def runs(cli, fixtures, tmp_path_factory):
    """The same W2 runs, one process and two ranks, per-channel (o/down's groups span the ranks)
    and grouped by 4 (every group on one rank; AWQ start)."""
    base = tmp_path_factory.mktemp("tp")
    out = {}
    for label, group, init in [("channel", -1, "rtn"), ("group4", 4, "awq")]:
        single, ranks = str(base / f"{label}-1"), str(base / f"{label}-2")
        a = json.loads(run(cli, quantize_args(fixtures, single, group, init)).stdout)
        b = json.loads(run_mpi(cli, quantize_args(fixtures, ranks, group, init)).stdout)
        out[label] = (single, ranks, a, b)
    return out


def test_two_ranks_match_one_process_per_channel(cli, fixtures, runs):
    """Per-channel W2: every block's losses within 1e-4 relative and the perplexity within 0.5%
    (measured: the same checkpoint bytes)."""
    single, ranks, a, b = runs["channel"]
    check_reports(a, b)
    for x, y in zip(a["blocks"], b["blocks"]):
        for key in ("final_loss", "last_step_loss", "rtn_loss"):
            assert y[key] == pytest.approx(x[key], rel=1e-4), (key, x["block"])
    p1, p2 = perplexity(cli, single, fixtures), perplexity(cli, ranks, fixtures)
    assert abs(p2 / p1 - 1) < 0.005, (p1, p2)
    check_checkpoints(single, ranks, max_changed=1e-3, close_layers=range(5))


def test_two_ranks_match_one_process_in_groups(cli, fixtures, runs):
    """Groups of 4 from the AWQ start, every group on one rank: the same bits. One process sums o's
    and down's outputs and n2's gradient in the two halves two ranks hold (README, Tensor
    parallelism); summed the other way, PAR hardening amplified the last-bit differences to 2.6e-4 in
    block 0 and 0.9% in perplexity. So every block's losses are equal and the checkpoint is the
    single process's byte for byte."""
    single, ranks, a, b = runs["group4"]
    check_reports(a, b)
    for x, y in zip(a["blocks"], b["blocks"]):
        for key in ("final_loss", "last_step_loss", "rtn_loss"):
            assert y[key] == x[key], (key, x["block"])
    for name in ("model.safetensors", "config.json"):
        with open(os.path.join(single, name), "rb") as f1, open(os.path.join(ranks, name), "rb") as f2:
            assert f1.read() == f2.read(), name


def check_reports(a, b):
    assert b["memory"]["ranks"] == 2 and a["memory"]["ranks"] == 1
    assert b["memory"]["block_bytes"] < a["memory"]["block_bytes"]   # the training state is split
    assert len(a["blocks"]) == len(b["blocks"]) == 5


def check_checkpoints(single, ranks, max_changed, close_layers):
    """Both load; same tensors, shapes and quantization config; in `close_layers` codes mostly equal
    and weights close."""
    import tesseraq
    with tesseraq.PackedCheckpoint(single) as c1, tesseraq.PackedCheckpoint(ranks) as c2:
        names = [t.name for t in c1]
        assert names == [t.name for t in c2] and len(names) == 35
        for name in names:
            q1, q2 = c1.unpack(name), c2.unpack(name)
            assert q1.shape == q2.shape, name
            if int(name.split(".")[2]) not in close_layers:
                continue
            assert np.mean(q1 != q2) <= max_changed, name
            w1, w2 = c1.dequantize(name), c2.dequantize(name)
            assert np.linalg.norm(w1 - w2) <= 0.05 * np.linalg.norm(w1), name
    with open(os.path.join(single, "config.json")) as f1, open(os.path.join(ranks, "config.json")) as f2:
        assert json.load(f1)["quantization_config"] == json.load(f2)["quantization_config"]


def test_under_mpirun_refusals_name_the_reason(cli, fixtures, tmp_path):
    """Every rank refuses before any work, with the reason; nothing is written."""
    cases = [
        (dict(group=16), [], "does not split"),             # 172 channels are not whole groups of 16
        (dict(method="gptq"), [], "only method tesseraq"),
        (dict(), ["--a-bits", "4"], "activations"),
        (dict(), ["--rotate", "hadamard"], "does not rotate"),
    ]
    for k, (kwargs, extra, message) in enumerate(cases):
        out = tmp_path / f"r{k}"
        p = run_mpi(cli, quantize_args(fixtures, str(out), **kwargs) + extra, ok=False)
        assert p.returncode != 0 and message in p.stderr, p.stderr
        assert not out.exists() and not (tmp_path / f"r{k}.partial").exists()
    p = run_mpi(cli, quantize_args(fixtures, str(tmp_path / "r9")), ranks=5, ok=False)
    assert p.returncode != 0 and "KV heads" in p.stderr, p.stderr


def test_killed_job_resumes_to_the_same_bytes(cli, fixtures, runs, tmp_path):
    """SIGKILL the whole job (mpirun and both ranks) once two blocks are persisted; the rerun under
    mpirun reuses them and writes the checkpoint the uninterrupted two-rank run wrote."""
    _, reference, _, _ = runs["channel"]
    out = str(tmp_path / "killed")
    proc = subprocess.Popen(mpi_command(cli, quantize_args(fixtures, out)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=mpi_env(), start_new_session=True)
    done = os.path.join(out + ".partial", "blocks", "0001", "block.sum")
    deadline = time.time() + 600
    while not os.path.exists(done) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the job ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(out)
    report = json.loads(run_mpi(cli, quantize_args(fixtures, out)).stdout)
    assert len(report["blocks"]) == 5
    for name in ("model.safetensors", "config.json"):
        with open(os.path.join(out, name), "rb") as f1, open(os.path.join(reference, name), "rb") as f2:
            assert f1.read() == f2.read(), name
