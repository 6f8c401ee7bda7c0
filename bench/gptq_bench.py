"""GPTQ kernel benchmark: libtesseraq's GPTQ kernels (Sources/TQKernels/gptq.c) against numpy
on the shapes of a SmolLM2-135M block (hidden 576, intermediate 1536), same process, same arrays:

  factor   U = upper Cholesky of (H + damp I)^-1   tqk_gptq_inverse_factor (double inside)
           numpy: cholesky, cho-inverse, cholesky in float64 (as the reference, in torch)
  loop     the column loop with lazy batches      tqk_gptq_quantize (rows in parallel + tqk_sgemm)
           numpy: the same algorithm, vectorised over rows, one Python step per column
  hessian  H += X^T X over 2048 tokens            tqk_gptq_accumulate vs X.T @ X

Every result is checked against numpy (factor: max relative error; loop: share of identical codes,
which float summation order may flip in a handful of places), so a wrong kernel cannot pass as a
fast one. Times are the best of --reps runs.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 bench/gptq_bench.py [--threads 2]
"""
import argparse
import ctypes
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kernel_lib import build_kernels  # noqa: E402

SHAPES = [(576, 576), (1536, 576), (576, 1536)]  # (out, in) of q/o, gate/up, down
TOKENS = 2048


def best_time(fn, reps):
    fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def f16(x):
    r = np.float32(np.float16(x))
    return r if r > 0 else np.float32(2.0 ** -24)


def numpy_gptq(W, U, group, bits, block):
    """The column loop of tqk_gptq_quantize in numpy (asymmetric grid, same conventions)."""
    W = W.copy()
    out, n = W.shape
    qmax = np.float32((1 << bits) - 1)
    codes = np.zeros((out, n), np.uint8)
    s = z = None
    i1 = 0
    while i1 < n:
        i2 = min(i1 + block, n)
        last = (i2 - 1) // group * group
        if last > i1 and min(last + group, n) > i2:
            i2 = last
        Err = np.zeros((out, i2 - i1), np.float32)
        for i in range(i1, i2):
            if i % group == 0:
                g = W[:, i:min(i + group, n)]
                mn, mx = g.min(1), g.max(1)
                s = np.array([f16(v) for v in np.maximum(mx - mn, np.float32(1e-5)) / qmax], np.float32)
                z = np.clip(-np.rint(mn / s), 0, qmax).astype(np.float32)
            q = np.clip(np.rint(W[:, i] / s) + z, 0, qmax)
            codes[:, i] = q.astype(np.uint8)
            wq = (q - z) * s
            err = (W[:, i] - wq) / U[i, i]
            W[:, i + 1:i2] -= np.outer(err, U[i, i + 1:i2])
            W[:, i] = wq
            Err[:, i - i1] = err
        W[:, i2:] -= Err @ U[i1:i2, i2:]
        i1 = i2
    return codes


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--group", type=int, default=128)
    args = ap.parse_args()

    lib = build_kernels()
    P, I64, F, D = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_double
    lib.tqk_set_num_threads.argtypes = [ctypes.c_int]
    lib.tqk_set_num_threads(args.threads)
    lib.tqk_gptq_accumulate.argtypes = [P, P, I64, I64]
    lib.tqk_gptq_accumulate.restype = None
    lib.tqk_gptq_inverse_factor.argtypes = [P, I64, D, P, P]
    lib.tqk_gptq_inverse_factor.restype = ctypes.c_int
    lib.tqk_gptq_quantize.argtypes = [P, I64, I64, P, I64, ctypes.c_int, ctypes.c_int, I64, P, P, P]
    lib.tqk_gptq_quantize.restype = D
    ptr = lambda a: a.ctypes.data  # noqa: E731
    print(f"threads={args.threads} tokens={TOKENS} W{args.bits} g{args.group} block 128 reps={args.reps}\n")
    print(f"{'(out, in)':>12} {'kernel':>8} {'ours ms':>9} {'numpy ms':>9} {'speed-up':>9}  check")

    rng = np.random.default_rng(0)
    for out, n in SHAPES:
        mix = rng.standard_normal((16, n)).astype(np.float32)
        X = (rng.standard_normal((TOKENS, 16)).astype(np.float32) @ mix
             + 0.3 * rng.standard_normal((TOKENS, n)).astype(np.float32))
        W = (0.05 * rng.standard_normal((out, n))).astype(np.float32)

        H = np.zeros((n, n), np.float32)
        t_o = best_time(lambda: (H.fill(0), lib.tqk_gptq_accumulate(ptr(H), ptr(X), TOKENS, n)), args.reps)
        ref = X.T @ X
        t_n = best_time(lambda: X.T @ X, args.reps)
        err = float(np.max(np.abs(H - ref)) / np.max(np.abs(ref)))
        print(f"{str((out, n)):>12} {'hessian':>8} {t_o * 1e3:9.1f} {t_n * 1e3:9.1f} {t_n / t_o:9.2f}  rel err {err:.1e}")

        H *= 2.0 / TOKENS
        damp = 0.01 * float(np.mean(np.diag(H)))
        U = np.zeros((n, n), np.float32)
        t_o = best_time(lambda: lib.tqk_gptq_inverse_factor(ptr(H), n, damp, None, ptr(U)), args.reps)

        def np_factor():
            Hd = H.astype(np.float64) + damp * np.eye(n)
            L = np.linalg.cholesky(Hd)
            Li = np.linalg.inv(L)
            return np.linalg.cholesky(Li.T @ Li).T
        Uref = np_factor()
        t_n = best_time(np_factor, args.reps)
        err = float(np.max(np.abs(U - Uref)) / np.max(np.abs(Uref)))
        print(f"{'':>12} {'factor':>8} {t_o * 1e3:9.1f} {t_n * 1e3:9.1f} {t_n / t_o:9.2f}  rel err {err:.1e}")

        ng = (n + args.group - 1) // args.group
        codes = np.zeros((out, n), np.uint8)
        scales = np.zeros((ng, out), np.float32)
        zeros = np.zeros((ng, out), np.uint8)
        Wc = W.copy()

        def ours():
            Wc[:] = W
            lib.tqk_gptq_quantize(ptr(Wc), out, n, ptr(U), args.group, args.bits, 0, 128, ptr(codes), ptr(scales),
                                  ptr(zeros))
        t_o = best_time(ours, args.reps)
        t0 = time.perf_counter()
        ref_codes = numpy_gptq(W, U, args.group, args.bits, 128)
        t_n = time.perf_counter() - t0
        same = float(np.mean(codes == ref_codes))
        print(f"{'':>12} {'loop':>8} {t_o * 1e3:9.1f} {t_n * 1e3:9.1f} {t_n / t_o:9.2f}  identical codes {same:.5f}")


if __name__ == "__main__":
    main()
