"""Benchmark of the GPTQ packed-weight kernels (Sources/TQKernels/qgemv.c): tqk_packed_gemv
(batch 1) and tqk_packed_gemm (batch 8, 64) against a memory-bandwidth reference and fp32.

    python3 bench/packed_bench.py [--quick] [--threads N] [--reps R]

Codes, zeros and scales are random; they are packed here with an independent numpy packer
written from docs/FORMATS.md. Before any timing, every configuration is checked against a
numpy float64 matmul with the dequantised weight (max relative error printed), so a wrong
kernel cannot be benchmarked silently.

Every call is timed in C (bench/c/timing.c): through ctypes, a Python call costs about as much
as a small GEMV. The fp32 reference is numpy's own OpenBLAS (cblas sgemv/sgemm), called the same
way.

Columns:
  t_best      best wall time of one call over all rounds (threads as given, default all cores)
  GB/s        packed weight bytes (qweight + qzeros + scales) / t_best  (GEMV rows only)
  xcopy       GB/s divided by the copy bandwidth measured in this run: numpy.copyto of a
              1 GiB float32 array (much larger than the L3), (bytes read + bytes written)/time
  cold GB/s   same GEMV but cycling through enough distinct weight copies (> 2x the L3) that
              every call streams its weights from DRAM (4096x4096 only)
  vs np32     speed-up over numpy's OpenBLAS fp32 with W float32 of the same shape (sgemv W x, or
              sgemm X W^T: what numpy's W @ x and X @ W.T call)
  vs sgemm    speed-up over our own tqk_sgemm (M = batch, NT) on the fp32 W
Note: small weights (576x576 ...) sit in L2/L3, so their "GB/s" can exceed DRAM bandwidth.
"""
import argparse
import ctypes
import glob
import os
import sys
import time


def _parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer shapes and repetitions")
    ap.add_argument("--threads", type=int, default=0, help="threads for our kernels and numpy's BLAS (0 = all cores)")
    ap.add_argument("--reps", type=int, default=0, help="calls per measurement (best is kept)")
    ap.add_argument("--rounds", type=int, default=0,
                    help="the whole table is measured this many times, interleaved, keeping the best of each "
                         "cell (the machine is shared: contention comes and goes)")
    ap.add_argument("--no-cold", action="store_true", help="skip the DRAM-streaming GEMV measurement")
    return ap.parse_args()


ARGS = _parse_args() if __name__ == "__main__" else None
if ARGS is not None:
    # numpy's OpenBLAS gets the same number of threads as our kernels (set before numpy loads)
    _n = str(ARGS.threads or os.cpu_count())
    for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(_v, _n)
    # libomp's idle threads spin 200 ms after each parallel region by default, stealing the cores
    # from numpy's BLAS threads measured next (and vice versa); numpy and tqk cells are measured
    # in separate phases, and a shorter spin keeps the phases apart.
    os.environ.setdefault("KMP_BLOCKTIME", "20")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kernel_lib import build_kernels  # noqa: E402

P = ctypes.POINTER
u32p, u16p, i32p, f32p = P(ctypes.c_uint32), P(ctypes.c_uint16), P(ctypes.c_int32), P(ctypes.c_float)
i64 = ctypes.c_int64


# ---- independent packer, straight from docs/FORMATS.md --------------------------------------
def packed_len(n, bits):
    if bits == 3:
        return 3 * ((n + 31) // 32)
    f = 32 // bits
    return (n + f - 1) // f


def pack_along_axis0(vals, bits):
    """vals: [n, m] ints in [0, 2^bits). Packs along axis 0 into [packed_len(n), m] uint32."""
    n, m = vals.shape
    rows = packed_len(n, bits)
    v = np.zeros(((rows * 32) // bits if bits != 3 else (rows // 3) * 32, m), dtype=np.uint64)
    v[:n] = vals
    out = np.zeros((rows, m), dtype=np.uint64)
    if bits in (2, 4, 8):
        f = 32 // bits
        for k in range(f):  # value k of each word at bits [k*b, k*b+b), least significant first
            out |= v[k::f] << np.uint64(k * bits)
    else:
        # 32 values in 3 words: value j at bits [3j, 3j+3) of the 96-bit little-endian concatenation
        for j in range(32):
            bitpos = 3 * j
            w, s = divmod(bitpos, 32)
            vj = v[j::32]
            out[w::3] |= (vj << np.uint64(s)) & np.uint64(0xFFFFFFFF)
            if s + 3 > 32:  # straddles into the next word (j = 10, 21)
                out[w + 1::3] |= vj >> np.uint64(32 - s)
    return (out & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def make_layer(out, inn, bits, group, rng, act_order=False):
    """Random layer; act_order: a shuffled g_idx (each group keeps its size), as desc_act checkpoints."""
    ng = (inn + group - 1) // group
    codes = rng.integers(0, 2 ** bits, size=(out, inn), dtype=np.uint8)  # W layout
    zeros = rng.integers(0, 2 ** bits, size=(ng, out), dtype=np.uint8)
    scales = (rng.random((ng, out), dtype=np.float32) * 0.02 + 0.001).astype(np.float16)
    qweight = np.ascontiguousarray(pack_along_axis0(codes.T, bits))  # [rows_q, out]
    qzeros = np.ascontiguousarray(pack_along_axis0(zeros.T, bits).T)  # [ng, cols_z]
    g = np.arange(inn) // group
    if act_order:
        g = rng.permutation(g)
    W = (codes.astype(np.float32) - zeros[g].T.astype(np.float32)) * scales[g].T.astype(np.float32)
    return dict(qweight=qweight, qzeros=qzeros, scales=scales, W=W.astype(np.float32), ng=ng,
                g_idx=np.ascontiguousarray(g.astype(np.int32)) if act_order else None)


def ptr(a, t):
    return a.ctypes.data_as(t)


class PackedTensorC(ctypes.Structure):
    """tqk_packed_tensor (tq_kernels.h)"""
    _fields_ = [("qweight", ctypes.c_void_p), ("qzeros", ctypes.c_void_p), ("scales", ctypes.c_void_p),
                ("g_idx", ctypes.c_void_p), ("out", ctypes.c_int64), ("group_size", ctypes.c_int64),
                ("bits", ctypes.c_int)]


# A SmolLM2-135M block as an engine calls it at batch 1: q/k/v share x, and so do gate/up, so each
# group is one tqk_packed_gemv_many call (one fork and join); (name, [(out, in) of its tensors]).
BLOCK_CALLS = [("q+k+v", [(576, 576), (192, 576), (192, 576)]), ("o", [(576, 576)]),
               ("gate+up", [(1536, 576), (1536, 576)]), ("down", [(576, 1536)])]


def setup_lib():
    lib = build_kernels(extra_sources=["c/timing.c"])
    for name in ("tqk_packed_gemv", "tqk_packed_gemm"):
        getattr(lib, name).restype = None
    lib.tqk_set_num_threads.argtypes = [ctypes.c_int]
    vp = ctypes.c_void_p
    lib.tqb_best_time.restype = ctypes.c_double
    lib.tqb_best_time.argtypes = [ctypes.c_int, vp, vp, vp, vp, i64, i64, ctypes.c_int, i64, vp, i64, vp, vp, i64,
                                  ctypes.c_double]
    lib.tqb_best_time_many.restype = ctypes.c_double
    lib.tqb_best_time_many.argtypes = [ctypes.POINTER(PackedTensorC), i64, i64, vp, ctypes.POINTER(vp), i64,
                                       ctypes.c_double]
    lib.tqb_cold_time.restype = ctypes.c_double
    lib.tqb_cold_time.argtypes = [vp, vp, vp, i64, i64, i64, ctypes.c_int, i64, vp, vp, i64]
    return lib


def numpy_cblas():
    """numpy's own OpenBLAS (the scipy-openblas of pip's wheels): its cblas sgemv and sgemm."""
    libdir = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs")
    for path in glob.glob(os.path.join(libdir, "libscipy_openblas*.so")):
        blas = ctypes.CDLL(path)
        for suffix in ("64_", ""):
            sgemv, sgemm = (getattr(blas, f"scipy_cblas_{f}{suffix}", None) for f in ("sgemv", "sgemm"))
            if sgemv and sgemm:
                return blas, ctypes.cast(sgemv, ctypes.c_void_p), ctypes.cast(sgemm, ctypes.c_void_p)
    sys.exit("packed_bench: numpy's bundled scipy-openblas was not found (pip's numpy wheels have it)")


def call_packed(lib, L, out, inn, bits, group, X, Y, batch):
    """One call of the packed kernel (for the correctness checks)."""
    gi = L.get("g_idx")
    args = (ptr(L["qweight"], u32p), ptr(L["qzeros"], u32p), ptr(L["scales"].view(np.uint16), u16p),
            None if gi is None else ptr(gi, i32p), i64(out), i64(inn), ctypes.c_int(bits), i64(group))
    if batch == 1:
        lib.tqk_packed_gemv(*args, ptr(X, f32p), ptr(Y, f32p))
    else:
        lib.tqk_packed_gemm(*args, ptr(X, f32p), i64(batch), ptr(Y, f32p))


def packed_bytes(L):
    return L["qweight"].nbytes + L["qzeros"].nbytes + L["scales"].nbytes


def timer(lib, kind, out, inn, X, batch, Y, reps, min_time, L=None, bits=0, group=0, W=None, blas=None):
    """A zero-argument function returning the best time of one call (measured in C): kind 0 the
    packed kernel on layer L, 1 our sgemm on the fp32 W, 2 numpy's cblas `blas` on W."""
    if kind == 0:
        gi = L.get("g_idx")
        ws = (L["qweight"].ctypes.data, L["qzeros"].ctypes.data, L["scales"].ctypes.data,
              None if gi is None else gi.ctypes.data)
    else:
        ws = (W.ctypes.data, None, None, None)
    args = (kind, *ws, out, inn, bits, group, X.ctypes.data, batch, Y.ctypes.data, blas, reps, min_time)
    return lambda: lib.tqb_best_time(*args)


_COPY_BUFS = []


def copy_bandwidth(reps):
    if not _COPY_BUFS:
        a = np.ones((1 << 30) // 4, dtype=np.float32)
        _COPY_BUFS.extend([a, np.ones_like(a)])
    a, b = _COPY_BUFS
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t)
    return 2 * a.nbytes / best / 1e9


def main():
    args = ARGS
    reps = args.reps or (50 if args.quick else 200)
    rounds = args.rounds or (2 if args.quick else 3)
    lib = setup_lib()
    lib.tqk_set_num_threads(args.threads)
    threads = lib.tqk_get_num_threads()
    rng = np.random.default_rng(0)

    shapes = [(4096, 4096, 128)]
    smol = [(576, 576), (192, 576), (1536, 576), (576, 1536)]  # (out, in) of SmolLM2-135M linears
    for g in (64, 128):
        shapes += [(o, i, g) for (o, i) in smol]
    if args.quick:
        shapes = [(4096, 4096, 128), (576, 576, 128), (1536, 576, 64)]
    batches = (1, 8, 64)
    all_bits = (2, 3, 4)

    print(f"# threads: {threads} for tqk kernels, OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')} "
          f"for numpy")

    # correctness first: our C packer == this numpy packer, word for word (awkward shapes too)
    for bits in (2, 3, 4, 8):
        for (out, inn) in ((13, 172), (64, 100), (576, 576), (3, 7)):
            codes = rng.integers(0, 2 ** bits, size=(out, inn), dtype=np.uint8)
            want = pack_along_axis0(codes.T, bits)
            got = np.full(want.shape, 0xA5A5A5A5, dtype=np.uint32)
            lib.tqk_pack_qweight(ptr(codes, P(ctypes.c_uint8)), i64(out), i64(inn), ctypes.c_int(bits), ptr(got, u32p))
            if not np.array_equal(got, want):
                print(f"FAIL: tqk_pack_qweight != numpy packer (bits={bits}, {out}x{inn})")
                sys.exit(1)
    print("packing: tqk_pack_qweight == numpy FORMATS.md packer (bits 2,3,4,8; awkward shapes)")

    print("correctness: max |Y - ref| / max |ref|, ref = float64 numpy X @ W.T with the dequantised W")
    worst = 0.0

    def check(layers, shapes, batches, act_order=False):
        """Builds a layer per (bits, shape) into `layers` and checks every batch against float64."""
        nonlocal worst
        for bits in all_bits:
            for (out, inn, g) in shapes:
                L = make_layer(out, inn, bits, g, rng, act_order=act_order)
                layers[(bits, out, inn, g)] = L
                for batch in batches:
                    X = rng.standard_normal((batch, inn), dtype=np.float32)
                    Y = np.full((batch, out), np.nan, dtype=np.float32)
                    call_packed(lib, L, out, inn, bits, g, X, Y, batch)
                    ref = X.astype(np.float64) @ L["W"].astype(np.float64).T
                    err = float(np.abs(Y - ref).max() / np.abs(ref).max())
                    worst = max(worst, err)
                    if not err < 1e-5:
                        print(f"  FAIL{' act-order' if act_order else ''} bits={bits} {out}x{inn} g{g} "
                              f"batch={batch}: rel err {err:.3e}")
                        sys.exit(1)

    layers, ao_layers = {}, {}
    ao_shapes = [(4096, 4096, 128), (576, 576, 64)]
    check(layers, shapes, batches)
    check(ao_layers, ao_shapes, (1, 8), act_order=True)
    n_ok = len(layers) * len(batches) + len(ao_layers) * 2
    print(f"  all {n_ok} configurations OK (incl. act-order g_idx), worst rel err {worst:.2e}\n")

    # cells: name -> zero-argument function returning a best time (measured in C); every round
    # times every cell, the best is kept. `alive` keeps the arrays the C side points into.
    _, np_sgemv, np_sgemm = numpy_cblas()
    cells, nbytes, cold_sets, alive = {}, {}, {}, []
    for (out, inn, g) in shapes:
        Wf = np.ascontiguousarray(rng.standard_normal((out, inn), dtype=np.float32))
        for batch in batches:
            X = rng.standard_normal((batch, inn), dtype=np.float32)
            C = np.empty((batch, out), dtype=np.float32)
            alive += [Wf, X, C]
            blas = np_sgemv if batch == 1 else np_sgemm
            cells[("np32", out, inn, g, batch)] = timer(lib, 2, out, inn, X, batch, C, reps, 0.1, W=Wf, blas=blas)
            cells[("sgemm", out, inn, g, batch)] = timer(lib, 1, out, inn, X, batch, C, reps, 0.1, W=Wf)
            for bits in all_bits:
                L = layers[(bits, out, inn, g)]
                Y = np.empty((batch, out), dtype=np.float32)
                alive.append(Y)
                nbytes[(bits, out, inn, g)] = packed_bytes(L)
                cells[("packed", bits, out, inn, g, batch)] = timer(lib, 0, out, inn, X, batch, Y, reps, 0.1, L=L,
                                                                    bits=bits, group=g)
                if batch == 1 and out * inn >= 4096 * 4096 and not args.no_cold:
                    # enough distinct copies of the packed weights (> 2x the 260 MiB L3) that each
                    # call streams its weights from DRAM
                    nb = nbytes[(bits, out, inn, g)]
                    ncopies = max(2, int(600e6 // nb) + 1)
                    copies = [[L[k].copy() for _ in range(ncopies)] for k in ("qweight", "qzeros", "scales")]
                    alive.append(copies)
                    ptrs = [(ctypes.c_void_p * ncopies)(*(c.ctypes.data for c in cs)) for cs in copies]
                    cold_args = (*ptrs, ncopies, out, inn, bits, g, X.ctypes.data, Y.ctypes.data, 2)
                    cold_sets[(bits, out, inn, g)] = (lambda a=cold_args: lib.tqb_cold_time(*a))

    for bits in all_bits:
        for g in (64, 128):
            for name, tensors in BLOCK_CALLS:
                Ls = [make_layer(out, inn, bits, g, rng) for (out, inn) in tensors]
                x = rng.standard_normal(tensors[0][1], dtype=np.float32)
                ys = [np.empty(out, dtype=np.float32) for (out, _) in tensors]
                desc = (PackedTensorC * len(Ls))(*(PackedTensorC(L["qweight"].ctypes.data, L["qzeros"].ctypes.data,
                                                                 L["scales"].ctypes.data, None, out, g, bits)
                                                   for L, (out, _) in zip(Ls, tensors)))
                yp = (ctypes.c_void_p * len(ys))(*(y.ctypes.data for y in ys))
                alive += [Ls, x, ys, desc, yp]
                key = ("block", bits, g, name)
                nbytes[key] = sum(packed_bytes(L) for L in Ls)
                cells[key] = (lambda a=(desc, len(Ls), tensors[0][1], x.ctypes.data, yp, reps, 0.1):
                              lib.tqb_best_time_many(*a))

    for (out, inn, g) in ao_shapes:
        for batch in (1, 8):
            X = rng.standard_normal((batch, inn), dtype=np.float32)
            for bits in all_bits:
                Y = np.empty((batch, out), dtype=np.float32)
                alive += [X, Y]
                cells[("actorder", bits, out, inn, g, batch)] = timer(lib, 0, out, inn, X, batch, Y, reps, 0.1,
                                                                      L=ao_layers[(bits, out, inn, g)], bits=bits,
                                                                      group=g)

    best = {k: float("inf") for k in cells}
    cold = {k: float("inf") for k in cold_sets}
    bw = 0.0
    for rnd in range(rounds):
        bw = max(bw, copy_bandwidth(3))
        for phase in ("np32", "tqk"):  # numpy's BLAS threads and ours never interleave
            time.sleep(0.3)
            for k, f in cells.items():
                if (k[0] == "np32") == (phase == "np32"):
                    best[k] = min(best[k], f())
        for k, f in cold_sets.items():
            cold[k] = min(cold[k], f())
        print(f"# round {rnd + 1}/{rounds} done", file=sys.stderr)

    print(f"# copy reference: numpy.copyto of a 1 GiB float32 array (4x the L3), (bytes read + bytes written)"
          f" / time = {bw:.1f} GB/s (best of {rounds} rounds)")
    print(f"# times: best of {rounds} rounds x >= {reps} calls, each call timed in C; GB/s = packed bytes"
          " (qweight+qzeros+scales) / time")
    print("# cold = the same GEMV cycling through > 600 MB of distinct weight copies (DRAM-bound)")
    print("# vs np32 / vs sgemm: fp32 time / packed time, numpy's OpenBLAS sgemv (sgemm) resp. tqk_sgemm NT, fp32 W of the"
          " same shape\n")
    hdr = (f"{'bits':>4} {'out x in':>11} {'g':>4} {'batch':>5} {'t_best(us)':>10} {'GB/s':>7} {'xcopy':>6} "
           f"{'coldGB/s':>8} {'xcopy':>6} {'np32(us)':>9} {'vs np32':>7} {'sgemm(us)':>9} {'vs sgemm':>8}")
    print(hdr)
    print("-" * len(hdr))
    for (out, inn, g) in shapes:
        for batch in batches:
            t_np = best[("np32", out, inn, g, batch)]
            t_sg = best[("sgemm", out, inn, g, batch)]
            for bits in all_bits:
                t = best[("packed", bits, out, inn, g, batch)]
                nb = nbytes[(bits, out, inn, g)]
                gb = f"{nb / t / 1e9:7.1f} {nb / t / 1e9 / bw:6.2f}" if batch == 1 else f"{'':7} {'':6}"
                ck = (bits, out, inn, g)
                if batch == 1 and ck in cold:
                    cg = nb / cold[ck] / 1e9
                    cs = f"{cg:8.1f} {cg / bw:6.2f}"
                else:
                    cs = f"{'':8} {'':6}"
                print(f"{bits:>4} {f'{out}x{inn}':>11} {g:>4} {batch:>5} {t * 1e6:10.1f} {gb} {cs} "
                      f"{t_np * 1e6:9.1f} {t_np / t:7.2f} {t_sg * 1e6:9.1f} {t_sg / t:8.2f}")
        print()

    print("SmolLM2-135M block at batch 1 as an engine calls it: q/k/v in one tqk_packed_gemv_many call, gate/up in"
          " another (one fork and join each); o and down alone:")
    hdr = f"{'bits':>4} {'g':>4} " + " ".join(f"{n + ' GB/s':>13} {'xcopy':>5}" for n, _ in BLOCK_CALLS)
    hdr += f" {'block(us)':>9} {'GB/s':>6} {'xcopy':>5}"
    print(hdr)
    print("-" * len(hdr))
    for bits in all_bits:
        for g in (64, 128):
            keys = [("block", bits, g, n) for n, _ in BLOCK_CALLS]
            row = " ".join(f"{nbytes[k] / best[k] / 1e9:13.1f} {nbytes[k] / best[k] / 1e9 / bw:5.2f}" for k in keys)
            t, nb = sum(best[k] for k in keys), sum(nbytes[k] for k in keys)
            print(f"{bits:>4} {g:>4} {row} {t * 1e6:9.1f} {nb / t / 1e9:6.1f} {nb / t / 1e9 / bw:5.2f}")
    print()

    print("act-order g_idx vs g_idx = NULL (fast path). Act-order GEMV: per-group accumulators in L1;"
          " act-order GEMM: exact W tiles, then FMA:")
    hdr = f"{'bits':>4} {'out x in':>11} {'g':>4} {'batch':>5} {'t_actorder(us)':>14} {'t_fast(us)':>10} {'slowdown':>8}"
    print(hdr)
    print("-" * len(hdr))
    for (out, inn, g) in ao_shapes:
        for batch in (1, 8):
            for bits in all_bits:
                ta = best[("actorder", bits, out, inn, g, batch)]
                fk = ("packed", bits, out, inn, g, batch)
                tf = best.get(fk)
                tfs = f"{tf * 1e6:10.1f} {ta / tf:8.2f}" if tf else f"{'-':>10} {'-':>8}"
                print(f"{bits:>4} {f'{out}x{inn}':>11} {g:>4} {batch:>5} {ta * 1e6:14.1f} {tfs}")


if __name__ == "__main__":
    main()
