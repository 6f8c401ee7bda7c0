"""Peak memory of a calibrated run with the activation caches in memory and out of core
(README, Out-of-core activation caches): the same TesseraQ run twice, without a budget and with
`cache_budget_mb`, the checkpoints compared byte for byte, each process's peak RSS (wait4's
ru_maxrss) set beside the budget plus the block's own memory as the run's report estimates it
(`memory.block_bytes` + `memory.activation_bytes` + `memory.scratch_bytes`) and the process's own base (the peak RSS of
`tesseraq inspect` on the model: the runtime, the library and the opened checkpoint). The RSS is
also sampled every 50 ms, so the phase that peaks shows in the timeline written to the JSON.

    swift build -c release --product tesseraq-cli
    python3 bench/ooc_memory.py [--model models/SmolLM2-135M-Instruct] [--budget 16] [--samples 128]
"""
import argparse
import filecmp
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def run(cli, args, out, budget):
    cmd = [cli, "quantize", *args, "--out", out, "--overwrite"]
    if budget:
        cmd += ["--set", f"cache_budget_mb={budget}"]
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    samples = []

    def sample():
        while proc.poll() is None:
            kb = rss_kb(proc.pid)
            if kb is not None:
                samples.append((round(time.time() - t0, 2), round(kb * 1024 / 1e6, 1)))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stderr[-2000:]}")
    with open(os.path.join(out, "quantize_report.json")) as f:
        memory = json.load(f)["memory"]
    peak_at = max(samples, key=lambda s: s[1]) if samples else None
    return dict(peak_rss_mb=usage.ru_maxrss * 1024 / 1e6, seconds=round(time.time() - t0, 1), memory=memory,
                peak_sampled_at_s=peak_at[0] if peak_at else None,
                timeline_mb=samples[:: max(1, len(samples) // 400)])


def base_rss_mb(cli, model):
    proc = subprocess.Popen([cli, "inspect", model], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, _, usage = os.wait4(proc.pid, 0)
    return usage.ru_maxrss * 1024 / 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", default=os.path.join(ROOT, ".build/release/tesseraq-cli"))
    ap.add_argument("--model", default=os.path.join(ROOT, "models/SmolLM2-135M-Instruct"))
    ap.add_argument("--text", default=os.path.join(ROOT, "data/wikitext2/valid.txt"))
    ap.add_argument("--budget", type=int, default=16, help="cache_budget_mb of the out-of-core run")
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--iters", type=int, default=2, help="steps per round (fast: 8)")
    ap.add_argument("--init", default="awq")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=os.path.join(ROOT, "bench/results/ooc_memory.json"))
    a = ap.parse_args()
    args = ["--model", a.model, "--method", "tesseraq", "--bits", "2", "--group-size", "64", "--preset", "fast",
            "--calib-text", a.text, "--set", f"n_samples={a.samples}", "--set", "seq_len=512",
            "--set", f"iters={a.iters}", "--set", f"init={a.init}", "--threads", str(a.threads)]
    work = tempfile.mkdtemp(prefix="ooc_memory.")
    try:
        runs = {name: run(a.cli, args, os.path.join(work, name), budget)
                for name, budget in (("in_memory", 0), ("out_of_core", a.budget))}
        same = filecmp.cmp(os.path.join(work, "in_memory/model.safetensors"),
                           os.path.join(work, "out_of_core/model.safetensors"), shallow=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    m = runs["out_of_core"]["memory"]
    block_mb = (m["block_bytes"] + m["activation_bytes"] + m["scratch_bytes"]) / 1e6
    base = base_rss_mb(a.cli, a.model)
    result = dict(model=os.path.basename(a.model), samples=a.samples, seq_len=512, iters=a.iters, init=a.init,
                  threads=a.threads, budget_mb=a.budget, block_mb=round(block_mb, 1), process_base_mb=round(base, 1),
                  cache_mb=m["cache_file_bytes"] / 1e6, identical_checkpoints=same, runs=runs)
    os.makedirs(os.path.dirname(a.json), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump(result, f, indent=1)
    print(f"{result['model']} {a.samples} x 512, caches {result['cache_mb']:.0f} MB, block {block_mb:.0f} MB, "
          f"process base {base:.0f} MB, checkpoints identical: {same}")
    for name, r in runs.items():
        print(f"  {name:12s} peak RSS {r['peak_rss_mb']:7.1f} MB  {r['seconds']:7.1f} s"
              + (f"  budget + block + base = {a.budget + block_mb + base:.0f} MB" if name == "out_of_core" else ""))


if __name__ == "__main__":
    main()
