"""GEMM benchmark: libtesseraq's tqk_sgemm against numpy's matmul (OpenBLAS) on the shapes of a
SmolLM2-135M block (M = 2048 tokens), in the three forms a training step needs:

  NT  forward       Y  = X  W^T   tqk_sgemm(0, 1, M, N, K)   numpy: X @ W.T
  NN  input grad    dX = dY W     tqk_sgemm(0, 0, M, K, N)   numpy: dY @ W
  TN  weight grad   dW = dY^T X   tqk_sgemm(1, 0, N, K, M)   numpy: dY.T @ X

Both libraries run in the same process on the same arrays. The machine is shared, so each
case alternates ours/numpy for --rounds rounds (with a pause so the other library's idle
threads stop spinning) and keeps the best of --reps timed runs after a warm-up. Every result
is checked against numpy (max relative error); a wrong result is flagged and the script exits
with status 1, so a broken kernel cannot pass as a fast one.

Our kernels are AVX2/FMA. On a CPU with AVX-512, OpenBLAS runs its SkylakeX (AVX-512)
kernels, which have twice the FMA width: expect a ratio near 0.5 there even at our AVX2 peak.

With --bf16 ours is tqk_gemm_bf16 (bf16 operands, float32 sums: AMX, else vdpbf16ps on AMD's
AVX512_BF16, else the float32 kernel on rounded operands) and the
reference is PyTorch's bfloat16 matmul (oneDNN) in the same process; results are checked against
numpy on the bf16-rounded operands.

Run it with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (the machine environment may set
them, which makes OpenBLAS pick a slower kernel and flatters us):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 bench/gemm_bench.py [--threads 2]

`pip install threadpoolctl` lets the script pin OpenBLAS's thread count and print which
OpenBLAS core (kernel family) numpy is using.
"""
import argparse
import ctypes
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kernel_lib import build_kernels  # noqa: E402

SHAPES = [(576, 576), (192, 576), (1536, 576), (576, 1536)]  # (N, K) of the weight W[N, K]
TOKENS = 2048


def bf16_rounded(a):
    """float32 values rounded to bfloat16 (to nearest, ties to even), as float32."""
    b = a.view(np.uint32).astype(np.uint64)
    return ((b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF0000).astype(np.uint32).view(np.float32)


def best_time(fn, reps):
    fn()  # warm-up: page faults, thread pool start-up
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def settle():
    """Let the other library's idle threads stop spinning (OpenBLAS yields for ~0.1 s after a
    call, libomp spins for KMP_BLOCKTIME = 0.2 s) so they do not steal a core from the next run."""
    time.sleep(0.3)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for both libraries (default: all cores)")
    ap.add_argument("--reps", type=int, default=10, help="timed repetitions per round; the best is kept")
    ap.add_argument("--rounds", type=int, default=3,
                    help="alternating ours/numpy rounds per case (the machine is shared: best of all)")
    ap.add_argument("--tokens", type=int, default=TOKENS, help="M, the number of tokens")
    ap.add_argument("--bf16", action="store_true", help="tqk_gemm_bf16 against PyTorch's bf16 matmul")
    args = ap.parse_args()

    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if var in os.environ:
            print(f"warning: {var}={os.environ[var]} is set; numpy may be running a slower kernel "
                  f"(run with: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE ...)", file=sys.stderr)

    lib = build_kernels()
    for fn in (lib.tqk_sgemm, lib.tqk_gemm_bf16):
        fn.restype = None
        fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                       ctypes.c_float, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
                       ctypes.c_float, ctypes.c_void_p, ctypes.c_int64]
    lib.tqk_set_num_threads.argtypes = [ctypes.c_int]
    lib.tqk_set_num_threads(args.threads)
    print(f"ours: {'AVX-512' if lib.tqk_use_avx512() else 'AVX2'} micro-kernel (TESSERAQ_NO_AVX512=1 forces AVX2, "
          "TESSERAQ_NO_AMX=1 no AMX, TESSERAQ_DPBF16=1/0 vdpbf16ps on/off)"
          + (f", bf16 {'AMX tiles' if lib.tqk_use_amx() else 'vdpbf16ps' if lib.tqk_use_dpbf16() else 'float32 kernel on rounded operands'}"
             if args.bf16 else ""))
    gemm = lib.tqk_gemm_bf16 if args.bf16 else lib.tqk_sgemm
    torch = None
    if args.bf16:
        import torch
        torch.set_num_threads(args.threads)
        print(f"reference: PyTorch {torch.__version__} bfloat16 matmul")

    limiter = None
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
        limiter = threadpool_limits(limits=args.threads, user_api="blas")
        for info in threadpool_info():
            if info.get("user_api") == "blas":
                print(f"numpy BLAS: {info.get('internal_api')} {info.get('version')} "
                      f"core={info.get('architecture')} threads={info.get('num_threads')}")
    except ImportError:
        print("threadpoolctl not installed: numpy's BLAS thread count and core are not known "
              "(pip install threadpoolctl)")
    print(f"threads={args.threads} M={args.tokens} reps={args.reps} rounds={args.rounds}\n")

    rng = np.random.default_rng(0)
    M = args.tokens
    ptr = lambda a: a.ctypes.data  # noqa: E731
    refname = "torch GF/s" if args.bf16 else "numpy GF/s"
    print(f"{'shape (M,N,K)':>20} {'form':>4} {'ours GF/s':>10} {refname:>11} {'ratio':>6} {'max rel err':>12}")
    worst, wrong = float("inf"), 0
    for N, K in SHAPES:
        X = rng.standard_normal((M, K), dtype=np.float32)
        W = rng.standard_normal((N, K), dtype=np.float32)
        dY = rng.standard_normal((M, N), dtype=np.float32)
        # The expected results are numpy's on what the GEMM multiplies (bf16-rounded under --bf16).
        x, w, dy = (bf16_rounded(a) for a in (X, W, dY)) if args.bf16 else (X, W, dY)
        if args.bf16:
            tX, tW, tdY = (torch.from_numpy(a).to(torch.bfloat16) for a in (X, W, dY))
        cases = [
            # form, output shape, our call, reference timed, expected result
            ("NT", (M, N), lambda C: gemm(0, 1, M, N, K, 1.0, ptr(X), K, ptr(W), K, 0.0, ptr(C), N),
             (lambda: tX @ tW.T) if args.bf16 else (lambda: X @ W.T), lambda: x @ w.T),
            ("NN", (M, K), lambda C: gemm(0, 0, M, K, N, 1.0, ptr(dY), N, ptr(W), K, 0.0, ptr(C), K),
             (lambda: tdY @ tW) if args.bf16 else (lambda: dY @ W), lambda: dy @ w),
            ("TN", (N, K), lambda C: gemm(1, 0, N, K, M, 1.0, ptr(dY), N, ptr(X), K, 0.0, ptr(C), K),
             (lambda: tdY.T @ tX) if args.bf16 else (lambda: dY.T @ X), lambda: dy.T @ x),
        ]
        for form, oshape, ours, ref, expected in cases:
            C = np.empty(oshape, dtype=np.float32)
            ours(C)
            expect = expected()
            err = float(np.max(np.abs(C - expect)) / max(float(np.max(np.abs(expect))), 1e-30))
            flops = 2.0 * M * N * K
            t_ours = t_np = float("inf")
            for _ in range(args.rounds):  # alternate so both see the same machine load
                settle()
                t_ours = min(t_ours, best_time(lambda: ours(C), args.reps))
                settle()
                t_np = min(t_np, best_time(ref, args.reps))
            g_ours, g_np = flops / t_ours / 1e9, flops / t_np / 1e9
            worst = min(worst, g_ours / g_np)
            shape = {"NT": (M, N, K), "NN": (M, K, N), "TN": (N, K, M)}[form]
            flag = "  WRONG" if not err <= 1e-4 else ""
            wrong += bool(flag)
            print(f"{str(shape):>20} {form:>4} {g_ours:10.1f} {g_np:11.1f} {g_ours / g_np:6.2f} {err:12.2e}{flag}")
    print(f"\nworst ratio ours/{'torch' if args.bf16 else 'numpy'}: {worst:.2f}")
    if limiter is not None:
        limiter.restore_original_limits()
    if wrong:
        sys.exit(f"{wrong} result(s) differ from the expected result")


if __name__ == "__main__":
    main()
