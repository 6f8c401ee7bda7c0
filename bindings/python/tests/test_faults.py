"""Faults a long quantization meets: a full disk (a small tmpfs the test mounts, as root) fails
with TQ_ERR_IO naming the path, leaves no checkpoint, and the rerun after space is freed resumes
and finishes with the uninterrupted result; an address-space limit (ulimit -v) below the run's
estimate is refused up front with TQ_ERR_OUT_OF_MEMORY, before anything is written."""
import os
import re
import subprocess

import pytest

from test_cli import cli, run  # noqa: F401  (the CLI fixture and runner)

ARGS = ["--method", "tesseraq", "--bits", "2", "--group-size", "32", "--preset", "ci", "--set", "iters=4",
        "--set", "n_samples=8", "--set", "init=rtn", "--threads", "1"]


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs; the test fills it with a filler file to leave the room it wants."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.parametrize("free_kb", [24, 160], ids=["while persisting blocks", "while writing the checkpoint"])
def test_full_disk_fails_cleanly_and_resumes(cli, fixtures, tmp_path, small_disk, free_kb):
    model, calib = fixtures.model("stories260K"), ["--calib-text", fixtures.text("valid")]
    run(cli, ["quantize", "--model", model, "--out", str(tmp_path / "full"), *ARGS, *calib])
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (1024 * 1024 - free_kb * 1024))
    out = small_disk / "ckpt"
    p = run(cli, ["quantize", "--model", model, "--out", str(out), *ARGS, *calib], ok=False)
    assert p.returncode == 2, p.stderr  # TQ_ERR_IO
    assert str(small_disk) in p.stderr and ("space" in p.stderr or "cannot write" in p.stderr), p.stderr
    assert not out.exists()
    filler.unlink()
    p = run(cli, ["quantize", "--model", model, "--out", str(out), *ARGS, *calib])
    assert (out / "model.safetensors").read_bytes() == (tmp_path / "full" / "model.safetensors").read_bytes()


def test_address_space_limit_is_refused_up_front(cli, fixtures, tmp_path):
    # 11,000 windows of 512 tokens: about 2.9 GB of activation caches, under a 2 GB address space.
    out = tmp_path / "big"
    cmd = [cli, "quantize", "--model", fixtures.model("stories260K"), "--out", str(out), "--method", "tesseraq",
           "--preset", "ci", "--set", "n_samples=11000", "--set", "seq_len=512", "--set", "init=rtn",
           "--calib-text", fixtures.text("valid")]
    p = subprocess.run(["bash", "-c", 'ulimit -v 2000000 && exec "$@"', "limit", *cmd], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 3, p.stderr  # TQ_ERR_OUT_OF_MEMORY (a crash would be 134)
    # The refusal names the estimate: the caches alone are 2884 MB; the block and its scratch add a few.
    need = re.search(r"the run needs peak memory about (\d+) MB", p.stderr)
    assert need and 2884 < int(need.group(1)) < 2950 and "ulimit -v" in p.stderr, p.stderr
    assert not out.exists() and not (tmp_path / "big.partial").exists()


def test_sigkill_at_random_moments_then_resume_is_byte_identical(cli, fixtures, tmp_path):
    """SIGKILL at 10 seeded random moments of a TesseraQ run (each restart resumes, so later kills
    land in later blocks, the final write or the rename); then the same command to the end."""
    import random
    import signal
    import time
    model, calib = fixtures.model("stories260K"), ["--calib-text", fixtures.text("valid")]
    t0 = time.time()
    run(cli, ["quantize", "--model", model, "--out", str(tmp_path / "full"), *ARGS, *calib])
    duration = time.time() - t0
    out, rng, kills = tmp_path / "killed", random.Random(7), 0
    for _ in range(10):
        if out.exists():
            break
        p = subprocess.Popen([cli, "quantize", "--model", model, "--out", str(out), *ARGS, *calib],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, 0.6) * duration)
        p.send_signal(signal.SIGKILL)
        kills += p.wait() == -signal.SIGKILL
    assert kills >= 5
    if not out.exists():
        run(cli, ["quantize", "--model", model, "--out", str(out), *ARGS, *calib])
    assert (out / "model.safetensors").read_bytes() == (tmp_path / "full" / "model.safetensors").read_bytes()
    assert not (tmp_path / "killed.partial").exists()


@pytest.mark.parametrize("point", ["checkpoint-write", "checkpoint-rename"])
def test_sigkill_during_the_final_write_then_resume_is_byte_identical(cli, fixtures, tmp_path, point):
    """The moments a random kill rarely hits, made certain with TESSERAQ_CRASH_AT (the process
    SIGKILLs itself there): model.safetensors half written, and the complete staging directory
    about to be renamed. No checkpoint may appear, and the same command then finishes with the
    uninterrupted result and leaves no resume files anywhere."""
    model, calib = fixtures.model("stories260K"), ["--calib-text", fixtures.text("valid")]
    run(cli, ["quantize", "--model", model, "--out", str(tmp_path / "full"), *ARGS, *calib])
    out = tmp_path / "killed"
    cmd = [cli, "quantize", "--model", model, "--out", str(out), *ARGS, *calib]
    p = subprocess.run(cmd, env=dict(os.environ, TESSERAQ_CRASH_AT=point), capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == -9, p.stderr  # SIGKILL
    assert not out.exists()
    staged = out.parent / (out.name + ".partial")
    assert (staged / "model.safetensors").exists()  # the kill did land inside the final write
    assert (staged / "blocks").exists() == (point == "checkpoint-write")
    run(cli, cmd[1:])
    assert (out / "model.safetensors").read_bytes() == (tmp_path / "full" / "model.safetensors").read_bytes()
    assert sorted(os.listdir(out)) == sorted(os.listdir(tmp_path / "full"))
    assert not staged.exists()
