"""Time per TesseraQ optimisation step on a SmolLM2-135M-shaped block (hidden 576, 9 heads,
3 KV heads, FFN 1536, batch 4 x 512 tokens, synthetic weights), ours with compute_dtype f32 and
bf16, with a breakdown, beside numpy (OpenBLAS) GEMM GFLOP/s on the block's forward shapes and the
same step in PyTorch (fp32, and under bf16 autocast), measured in the same run
(bench/torch_step.py; skipped with a note when torch is not installed: `pip install torch`, a CPU
wheel). Issue 12's target: our bf16 step at most 0.6x PyTorch's bf16-autocast step and at most
0.35x its fp32 step.

    swift build -c release --product tesseraq-bench
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 bench/step_bench.py [--steps 5] [--no-torch]
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def numpy_block_gflops(rows, hidden, ffn, q, kv, reps=3):
    """GFLOP/s of numpy on the seven forward GEMMs of the block (X W^T), best of `reps`."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, hidden), dtype=np.float32)
    a = rng.standard_normal((rows, ffn), dtype=np.float32)
    ws = [(x, rng.standard_normal((n, hidden), dtype=np.float32)) for n in (q, kv, kv, hidden, ffn, ffn)]
    ws.append((a, rng.standard_normal((hidden, ffn), dtype=np.float32)))
    flops = sum(2.0 * m.shape[0] * w.shape[0] * w.shape[1] for m, w in ws)
    best = float("inf")
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        for m, w in ws:
            m @ w.T
        best = min(best, time.perf_counter() - t0)
    return flops / best / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--bin", default=os.path.join(ROOT, ".build", "release", "tesseraq-bench"))
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    args = ap.parse_args()
    ours = {}
    for dtype in ("f32", "bf16"):
        cmd = [args.bin, "--steps", str(args.steps), "--threads", str(args.threads)] + (["--bf16"] if dtype == "bf16" else [])
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        ours[dtype] = json.loads(out.strip().splitlines()[-1])
    r = ours["f32"]
    s = r["shape"]
    ref = numpy_block_gflops(s["batch"] * s["seq"], s["hidden"], s["ffn"], 64 * s["heads"], 64 * s["kv_heads"])
    print(f"block: hidden {s['hidden']}, {s['heads']} heads / {s['kv_heads']} KV, FFN {s['ffn']}, "
          f"batch {s['batch']} x {s['seq']} tokens, W{s['bits']} g{s['group']}, {r['threads']} threads, "
          f"bf16 GEMM kernel: {r['bf16_gemm']} (TESSERAQ_NO_AMX=1: no AMX; TESSERAQ_DPBF16=1/0: vdpbf16ps on/off)")
    print(f"  {'ms':<10} {'f32':>8} {'bf16':>8}")
    for k in ("fakequant", "forward", "loss", "backward", "update", "total"):
        print(f"  {k:<10} {ours['f32'][k]:8.1f} {ours['bf16'][k]:8.1f}")
    print(f"{r['gflops_per_step']:.1f} GFLOP per step; achieved {r['gflop_per_s']:.1f} (f32), "
          f"{ours['bf16']['gflop_per_s']:.1f} (bf16) GFLOP/s; numpy GEMM on the block's shapes {ref:.1f} GFLOP/s "
          f"(f32 ratio {r['gflop_per_s'] / ref:.2f})")
    if args.no_torch:
        return
    try:
        import torch
        import torch_step
    except ImportError as e:
        print(f"PyTorch reference skipped: {e}")
        return
    shape = (s["hidden"], s["heads"], s["kv_heads"], s["ffn"], s["batch"], s["seq"], s["bits"], s["group"])
    for name, bf16, target in (("fp32", False, 0.35), ("bf16 autocast", True, 0.6)):
        ms = torch_step.step_ms(*shape, threads=r["threads"], steps=args.steps, bf16=bf16)
        print(f"PyTorch {torch.__version__} {name}: {ms:.1f} ms per step; ours / PyTorch {name}: "
              f"f32 {r['total'] / ms:.2f}, bf16 {ours['bf16']['total'] / ms:.2f} (target for bf16 <= {target})")


if __name__ == "__main__":
    main()
