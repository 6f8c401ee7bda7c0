"""Scaling model of tensor-parallel TesseraQ (README, Tensor parallelism): one synthetic block of
LLaMA-2-7B shape (hidden 4096, 32 heads, 32 KV heads, FFN 11008) and one of LLaMA-2-70B shape
(hidden 8192, 64 heads, 8 KV heads, FFN 28672), random weights, W2 g128, `fast`'s 2 x 256 tokens
per step.

Measured here (tesseraq-bench): the step time, bytes all-reduced per step and peak memory of one
rank's shard at P = 1, 2, 8, 16 (the shard alone, without communicating: what each rank computes),
and the 7B block under a real `mpirun -np 2` (1 thread per rank), whose all-reduces give this
machine's loopback cost. Modelled: a ring all-reduce of B bytes over P machines costs
2 (P - 1) / P * B / bandwidth + 2 (P - 1) * latency, at 10 and 100 Gbit/s (latency 20 us); a step
is the shard's compute plus its all-reduces (three; five with KV heads replicated). The wall time of
quantizing the whole model adds, per block, the three block forwards per calibration sample (the two
trajectories and the losses), dealt over the ranks by batches (a P-th each), and the all-gather of the
two advanced bf16 caches, with `init=rtn`.

    swift build -c release --product tesseraq-bench
    python3 bench/tp_scaling.py [--threads 2] [--steps 2]
"""
import argparse
import json
import os
import shutil
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SHAPES = {
    "LLaMA-2-7B": dict(hidden=4096, heads=32, kv_heads=32, ffn=11008, layers=32),
    "LLaMA-2-70B": dict(hidden=8192, heads=64, kv_heads=8, ffn=28672, layers=80),
}
# Steps per block, calibration tokens, and tokens per step of the presets (TesseraQOptions); both
# keep bf16 caches.
CACHE_BYTES = 2
PRESETS = {"fast": dict(steps=10 * 8, tokens=64 * 256, batch=2, seq=256),
           "paper": dict(steps=20 * 250, tokens=512 * 2048, batch=4, seq=2048)}
LATENCY = 20e-6


def bench(binary, shape, ranks, threads, steps, mpi=False):
    args = [binary, "--hidden", str(shape["hidden"]), "--heads", str(shape["heads"]), "--kv-heads",
            str(shape["kv_heads"]), "--ffn", str(shape["ffn"]), "--batch", "2", "--seq", "256", "--group", "128",
            "--steps", str(steps), "--threads", str(threads)]
    if mpi:
        root = ["--allow-run-as-root"] if os.geteuid() == 0 else []
        env = dict(os.environ, OMP_NUM_THREADS="1", OMPI_MCA_btl_vader_single_copy_mechanism="none")
        cmd = [shutil.which("mpirun"), *root, "--oversubscribe", "-np", str(ranks), *args]
    else:
        env, cmd = os.environ, args + ["--ranks", str(ranks)]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout)


def ring(bytes_, ranks, gbit):
    if ranks == 1:
        return 0.0
    return 2 * (ranks - 1) / ranks * bytes_ / (gbit * 1e9 / 8) + 2 * (ranks - 1) * LATENCY


def flops(shape, batch, seq):
    """Linear and attention FLOPs of one step (forward and backward), the bench's formula."""
    h, f, d = shape["hidden"], shape["ffn"], shape["hidden"] // shape["heads"]
    params = h * h * 2 + 2 * h * shape["kv_heads"] * d + 3 * h * f
    rows = batch * seq
    return 6.0 * rows * params, 6.0 * rows * seq * h


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, ".build", "release", "tesseraq-bench"))
    ap.add_argument("--threads", type=int, default=2, help="threads of the shard runs (the machine's cores)")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "tp_scaling.json"))
    ap.add_argument("--reuse", action="store_true", help="keep the runs already in --out, measure only the missing ones")
    a = ap.parse_args()

    measured = {}
    if a.reuse and os.path.exists(a.out):
        with open(a.out) as f:
            measured = json.load(f)
    for name, shape in SHAPES.items():
        for p in (1, 2, 8, 16):
            if name == "LLaMA-2-70B" and p == 1:
                continue   # 856M weights x 33 bytes of training state: 28 GB, more than this machine has
            if f"{name} P={p}" in measured:
                continue
            # Past the KV heads (70B's 8 on 16 ranks) each KV head is replicated on P / 8 ranks.
            r = bench(a.bin, shape, p, a.threads, a.steps)
            measured[f"{name} P={p}"] = r
            print(f"{name} P={p}: step {r['total'] / 1e3:.2f} s, forward {r['forward'] / 1e3:.2f} s, "
                  f"all-reduce {r['allreduce_bytes_per_step'] / 1e6:.1f} MB/step, peak RSS {r['peak_rss_mb']:.0f} MB",
                  flush=True)
    if shutil.which("mpirun") and "LLaMA-2-7B mpirun P=2" not in measured:
        r = bench(a.bin, SHAPES["LLaMA-2-7B"], 2, 1, a.steps, mpi=True)
        measured["LLaMA-2-7B mpirun P=2"] = r
        per = r["allreduce"] / r["allreduces_per_step"] / 1e3
        size = r["allreduce_bytes_per_step"] / r["allreduces_per_step"]
        print(f"LLaMA-2-7B mpirun -np 2 (1 thread each): step {r['total'] / 1e3:.2f} s, of it all-reduce "
              f"{r['allreduce'] / 1e3:.2f} s ({per * 1e3:.1f} ms per {size / 1e6:.1f} MB on loopback, waits included)",
              flush=True)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(measured, f, indent=1, sort_keys=True)

    print("\n| block | P | step compute (s) | all-reduced / step | peak RSS / rank | step at 10 Gbit/s | step at 100 Gbit/s |")
    print("|---|---|---|---|---|---|---|")
    for key in sorted((k for k in measured if "mpirun" not in k), key=lambda k: (list(SHAPES).index(k.split(" P=")[0]),
                                                                              int(k.split(" P=")[1]))):
        r = measured[key]
        name, p = key.split(" P=")
        p = int(p)
        compute = r["total"] / 1e3
        per = r["allreduce_bytes_per_step"] / max(r["allreduces_per_step"], 1)
        steps = [compute + r["allreduces_per_step"] * ring(per, p, g) for g in (10, 100)]
        print(f"| {name} | {p} | {compute:.2f} | {r['allreduce_bytes_per_step'] / 1e6:.1f} MB | "
              f"{r['peak_rss_mb'] / 1e3:.1f} GB | {steps[0]:.2f} s | {steps[1]:.2f} s |")

    print("\n| model | preset | P | wall time at 10 Gbit/s | at 100 Gbit/s |")
    print("|---|---|---|---|---|")
    for name, shape in SHAPES.items():
        # The whole block's forward: the measured forward of the shard at P=2, times 2.
        whole_forward = measured[f"{name} P=2"]["forward"] / 1e3 * 2
        for preset, cfg in PRESETS.items():
            lin0, att0 = flops(shape, 2, 256)
            lin, att = flops(shape, cfg["batch"], cfg["seq"])
            scale = (lin + att) / (lin0 + att0)   # the preset's step against the measured 2 x 256 one
            forwards = 3 * whole_forward * cfg["tokens"] / 512 * (1 + (cfg["seq"] / 256 - 1) * att0 / (lin0 + att0))
            cache = cfg["tokens"] * shape["hidden"] * CACHE_BYTES
            for p in (8, 16):
                r = measured[f"{name} P={p}"]
                per = r["allreduce_bytes_per_step"] / r["allreduces_per_step"] * (lin / lin0)
                times = []
                for g in (10, 100):
                    step = r["total"] / 1e3 * scale + r["allreduces_per_step"] * ring(per, p, g)
                    gathers = 2 * (p - 1) / p * cache / (g * 1e9 / 8)
                    times.append(shape["layers"] * (cfg["steps"] * step + forwards / p + gathers))
                print(f"| {name} | {preset} | {p} | {times[0] / 3600:.1f} h | {times[1] / 3600:.1f} h |")


if __name__ == "__main__":
    main()
