"""The `tesseraq` command line: the examples its own help text gives, run on stories260K, and
the defaults a script looping over methods relies on."""
import json
import os
import re
import shlex
import signal
import subprocess
import time

import numpy as np
import pytest

from conftest import ROOT


@pytest.fixture(scope="module")
def cli():
    path = os.environ.get("TESSERAQ_CLI") or os.path.join(ROOT, ".build", "debug", "tesseraq-cli")
    if not os.path.exists(path):
        pytest.exit(f"tesseraq-cli not found at {path}: run `swift build` or set TESSERAQ_CLI", returncode=1)
    return path


def run(cli, args, ok=True):
    p = subprocess.run([cli, *args], capture_output=True, text=True, timeout=600)
    if ok:
        assert p.returncode == 0, f"{shlex.join(args)}\n{p.stderr}"
    return p


def help_examples(cli, command):
    """The command lines under "Examples:" in `tesseraq COMMAND --help`, continuations joined."""
    text = run(cli, [command, "--help"]).stdout
    block = text.split("Examples:\n", 1)[1].split("\n\n", 1)[0]
    lines = re.sub(r"\\\n\s*", "", block).splitlines()
    examples = [shlex.split(line)[1:] for line in lines if line.strip().startswith("tesseraq ")]
    assert examples and all(e[0] == command for e in examples)
    return examples


def substitute(args, fixtures, out):
    paths = {"DIR": fixtures.model("stories260K"), "OUT": out, "valid.txt": fixtures.text("valid"),
             "test.raw.txt": fixtures.text("test.raw")}
    return [paths.get(a, a) for a in args]


def test_quantize_help_examples_run(cli, fixtures, tmp_path):
    examples = help_examples(cli, "quantize")
    assert any(e[e.index("--group-size") + 1] == "-1" for e in examples)
    for k, example in enumerate(examples):
        out = str(tmp_path / f"q{k}")
        p = run(cli, substitute(example, fixtures, out) + ["--json"])
        report = json.loads(p.stdout)
        method = example[example.index("--method") + 1]
        assert report["method"] == method
        with open(os.path.join(out, "config.json")) as f:
            q = json.load(f)["quantization_config"]
        assert q["group_size"] == int(example[example.index("--group-size") + 1])
        if method == "rtn" and "--calib-text" in example:
            assert "rtn does not calibrate: --calib-text ignored" in p.stderr
        if method == "gptq":  # the paper preset's 2048-token windows, cut to stories260K's context
            assert report["options"]["seq_len"] == 512
            assert "exceeds the model's context" in report["notices"][0] and "max_position_embeddings 512" in p.stderr
        if method == "tesseraq":
            assert all(b["final_loss"] < b["rtn_loss"] for b in report["blocks"])


def test_eval_help_examples_run(cli, fixtures):
    for example in help_examples(cli, "eval"):
        p = run(cli, substitute(example, fixtures, ""))
        if "--json" in example:
            r = json.loads(p.stdout)
            assert r["windows"] == 2 and r["tokens"] == 2 * 255 and 50 < r["perplexity"] < 1000
        else:
            assert re.match(r"perplexity \d+\.\d+ over 4 windows of 512", p.stdout)


def test_per_channel_rtn_matches_numpy(cli, fixtures, tmp_path):
    """--group-size -1: one grid per output row; the dequantized weight equals numpy's RTN of the
    float weight (ALGORITHM.md section 2: min/max grid, fp16 scale, round half to even)."""
    import tesseraq
    from test_packed_format import read_safetensors
    out = tmp_path / "pc"
    model = fixtures.model("stories260K")
    run(cli, ["quantize", "--model", model, "--out", str(out), "--bits", "4", "--group-size", "-1"])
    w = read_safetensors(os.path.join(model, "model.safetensors"))["model.layers.0.mlp.down_proj.weight"]
    w = w.astype(np.float32)
    lo, hi = w.min(1), w.max(1)
    s = (np.maximum(hi - lo, 1e-5) / 15).astype(np.float16).astype(np.float32)[:, None]
    z = np.clip(-np.round(lo[:, None] / s), 0, 15)
    expected = (np.clip(np.round(w / s) + z, 0, 15) - z) * s
    with tesseraq.PackedCheckpoint(out) as ckpt:
        got = ckpt.dequantize("model.layers.0.mlp.down_proj")
    assert got.shape == w.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_explicit_seq_len_beyond_context_is_refused(cli, fixtures, tmp_path):
    p = run(cli, ["quantize", "--model", fixtures.model("stories260K"), "--out", str(tmp_path / "x"), "--method", "gptq",
                  "--calib-text", fixtures.text("valid"), "--set", "seq_len=1024"], ok=False)
    assert p.returncode == 2 and "seq_len" in p.stderr and "1024" in p.stderr
    assert not (tmp_path / "x").exists()


def test_negative_numbers_are_values(cli, fixtures, tmp_path):
    """Every numeric option that may be negative takes "-N" as its value, as well as "=-N"."""
    model = fixtures.model("stories260K")
    for form in (["--group-size", "-1"], ["--group-size=-1"]):
        out = tmp_path / f"g{len(form)}"
        run(cli, ["quantize", "--model", model, "--out", str(out), *form, "--threads", "-1"])
        assert json.load(open(out / "config.json"))["quantization_config"]["group_size"] == -1
    p = run(cli, ["eval", "--model", model, "--text", fixtures.text("test.raw"), "--seq-len", "64", "--max-windows", "1",
                  "--threads", "-2", "--json"])
    assert json.loads(p.stdout)["windows"] == 1
    p = run(cli, ["quantize", "--model", model, "--out", str(tmp_path / "bad"), "--group-size", "-3"], ok=False)
    assert p.returncode == 2 and "group_size" in p.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signals_cancel_cleanly_and_the_run_resumes(cli, fixtures, tmp_path, sig):
    """A quantization stopped by SIGINT or SIGTERM exits with status 4, leaves no checkpoint and a
    resumable .partial; running the same command again finishes with the uninterrupted result."""
    model = fixtures.model("stories260K")
    args = ["quantize", "--model", model, "--method", "tesseraq", "--bits", "2", "--group-size", "32", "--preset", "ci",
            "--set", "iters=4", "--set", "n_samples=8", "--set", "init=rtn", "--calib-text", fixtures.text("valid"),
            "--threads", "1"]
    run(cli, args + ["--out", str(tmp_path / "full")])
    out = tmp_path / "stopped"
    p = subprocess.Popen([cli, *args, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    partial = tmp_path / "stopped.partial" / "blocks" / "0000" / "block.sum"
    deadline = time.time() + 120
    while not partial.exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 4, err
    assert "cancelled" in err and not out.exists() and partial.exists()
    assert not list((tmp_path / "stopped.partial").rglob("*.tmp"))
    run(cli, args + ["--out", str(out)])
    assert (out / "model.safetensors").read_bytes() == (tmp_path / "full" / "model.safetensors").read_bytes()


def test_sigterm_cancels_eval(cli, fixtures):
    p = subprocess.Popen([cli, "eval", "--model", fixtures.model("stories260K"), "--text", fixtures.text("test.raw"),
                          "--seq-len", "512", "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 4 and "cancelled" in err


def test_generate_help_examples_run(cli, fixtures):
    for example in help_examples(cli, "generate"):
        p = run(cli, substitute(example, fixtures, ""))
        if "--json" in example:
            r = json.loads(p.stdout)
            assert r["generated_tokens"] == int(example[example.index("--max-tokens") + 1]) and r["stop_reason"] == "max_tokens"
            assert r["text"] and r["peak_rss_bytes"] >= r["baseline_rss_bytes"] > 0
            assert r["budget_bytes"] == r["weight_bytes"] + r["kv_cache_bytes"] + r["activation_bytes"]
        else:
            assert p.stdout.strip()
            assert re.match(r"prompt: \d+ tokens, [\d.]+ tok/s · generated: \d+ tokens, [\d.]+ tok/s · peak memory: [\d.]+ MiB",
                            p.stderr.splitlines()[-1])


def test_generate_golden_greedy_text_and_refusals(cli, fixtures, tmp_path):
    model = fixtures.model("stories260K")
    with open(os.path.join(model, "golden.json")) as f:
        golden = json.load(f)
    (tmp_path / "prompt.txt").write_text("")
    p = run(cli, ["generate", "--model", model, "--prompt-file", str(tmp_path / "prompt.txt"), "--max-tokens", "200"])
    assert p.stdout == golden["expected_text"] + "\n"
    p = run(cli, ["generate", "--model", model, "--prompt", "Hi", "--chat"], ok=False)
    assert p.returncode == 2 and "not ChatML-shaped" in p.stderr
    p = run(cli, ["generate", "--model", model], ok=False)
    assert p.returncode == 2 and "exactly one of --prompt or --prompt-file" in p.stderr
    p = run(cli, ["generate", "--model", model, "--prompt", "Hi", "--top-p", "0"], ok=False)
    assert p.returncode == 2 and "top_p" in p.stderr


def test_lm_head_w8(cli, fixtures):
    """--lm-head w8 runs the 8-bit head: a slightly different perplexity, a larger session (the
    packed head beside the tied embedding), and other values refused as usage errors."""
    model = fixtures.model("stories260K")
    ev = ["eval", "--model", model, "--text", fixtures.text("test.raw"), "--seq-len", "128", "--max-windows", "2", "--json"]
    base, w8 = json.loads(run(cli, ev).stdout)["perplexity"], json.loads(run(cli, ev + ["--lm-head", "w8"]).stdout)["perplexity"]
    assert base != w8 and abs(w8 / base - 1) <= 0.02
    gen = ["generate", "--model", model, "--prompt", "Once", "--max-tokens", "4", "--json"]
    a, b = json.loads(run(cli, gen).stdout), json.loads(run(cli, gen + ["--lm-head", "w8"]).stdout)
    assert b["weight_bytes"] > a["weight_bytes"]
    p = run(cli, gen + ["--lm-head", "w4"], ok=False)
    assert p.returncode == 64 and "lm-head" in p.stderr


def test_sigint_cancels_generate(cli, fixtures):
    """Ctrl-C while text streams: exit status 4 and "cancelled", the text so far on stdout."""
    p = subprocess.Popen([cli, "generate", "--model", fixtures.model("stories260K"), "--prompt", "Once", "--max-tokens", "500",
                          "--temperature", "1", "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = p.stdout.read(1)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 4 and b"cancelled" in err and first
