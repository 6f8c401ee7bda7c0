"""OmniQuant's learnable weight clipping kernels (Sources/TQKernels/lwc.c) against a numpy
re-implementation written from tq_kernels.h: the forward bit for bit, and the gradients against
central differences.

The kernels are hidden in libtesseraq.so, so they are rebuilt with visible symbols as the
benchmarks do (bench/kernel_lib.py). The clipped function is piecewise constant in gamma and beta,
so the gradients are checked on its straight-through surrogate: every rounding (of w / s, of the
zero point, of the scale to float16) becomes x + c with c = round(x0) - x0 frozen at the point of
evaluation, and every clamp keeps the decision it takes there. The surrogate equals the function
at that point and its derivative is what the straight-through estimator computes.
(Replacing the roundings by the plain identity would drop the c * ds terms the estimator keeps.)"""
import ctypes
import os
import sys

import numpy as np
import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "bench"))
from kernel_lib import build_kernels  # noqa: E402

F32P = np.ctypeslib.ndpointer(np.float32, flags="C_CONTIGUOUS")
U8P = np.ctypeslib.ndpointer(np.uint8, flags="C_CONTIGUOUS")
I64, I32 = ctypes.c_int64, ctypes.c_int

CASES = [  # (out, in, group, bits, sym): partial last groups, per-channel, symmetric
    (6, 40, 16, 2, False),
    (5, 48, 16, 3, False),
    (4, 37, 37, 4, False),
    (6, 40, 16, 4, True),
    (3, 33, 8, 2, True),
]


@pytest.fixture(scope="module")
def k():
    lib = build_kernels()
    lib.tqk_lwc_weights.argtypes = [F32P, F32P, F32P, I64, I64, I64, I32, I32, F32P]
    lib.tqk_lwc_grid.argtypes = [F32P, F32P, F32P, I64, I64, I64, I32, I32, F32P, U8P]
    lib.tqk_lwc_backward.argtypes = [F32P, F32P, F32P, F32P, I64, I64, I64, I32, I32, F32P, F32P]
    lib.tqk_set_num_threads(2)
    return lib


def f32(x):
    return np.asarray(x, np.float32)


def sigmoid32(x):
    """1.0f / (1.0f + expf(-x)) with a correctly rounded expf."""
    e = f32(np.exp(-np.asarray(x, np.float64)))
    return f32(1) / (f32(1) + e)


def groups(n_in, group):
    return [(i0, min(i0 + group, n_in)) for i0 in range(0, n_in, group)]


def reference(W, gamma, beta, group, bits, sym):
    """float32 forward as tq_kernels.h states it: (w_hat, s, z, codes before clamping) per group."""
    out, n_in = W.shape
    qmax = f32((1 << bits) - 1)
    w_hat = np.zeros_like(W)
    s = np.zeros(gamma.shape, np.float32)
    z = np.zeros(gamma.shape, np.float32)
    u = np.zeros_like(W)
    for g, (i0, i1) in enumerate(groups(n_in, group)):
        w = W[:, i0:i1]
        xmn = sigmoid32(beta[:, g]) * w.min(1)
        xmx = sigmoid32(gamma[:, g]) * w.max(1)
        if sym:
            raw = np.maximum(np.maximum(np.abs(xmn), np.abs(xmx)), f32(1e-5)) / f32((1 << (bits - 1)) - 1)
        else:
            raw = np.maximum(xmx - xmn, f32(1e-5)) / qmax
        sg = f32(np.float16(raw))
        sg = np.where(sg > 0, sg, f32(2.0 ** -24))
        zg = np.full_like(sg, f32(1 << (bits - 1))) if sym else np.clip(-np.rint(xmn / sg), 0, qmax)
        ug = np.rint(w / sg[:, None]) + zg[:, None]
        w_hat[:, i0:i1] = (np.clip(ug, 0, qmax) - zg[:, None]) * sg[:, None]
        s[:, g], z[:, g], u[:, i0:i1] = sg, zg, ug
    return w_hat, s, z, u


def surrogate_loss(W, G, gamma, beta, group, bits, sym, base):
    """sum(G * w_hat) of the straight-through surrogate frozen at `base` = (gamma0, beta0), in float64."""
    s0, z0, u0 = (np.asarray(a, np.float64) for a in reference(W, *base, group, bits, sym)[1:])
    W64 = W.astype(np.float64)
    qmax = (1 << bits) - 1
    qdiv = (1 << (bits - 1)) - 1 if sym else qmax
    loss = 0.0
    for g, (i0, i1) in enumerate(groups(W.shape[1], group)):
        w = W64[:, i0:i1]

        def raw_and_zpre(ga, be):
            xmn = w.min(1) / (1 + np.exp(-be))
            xmx = w.max(1) / (1 + np.exp(-ga))
            raw = np.maximum(np.abs(xmn), np.abs(xmx)) / qdiv if sym else (xmx - xmn) / qmax
            return raw, xmn

        raw0, xmn0 = raw_and_zpre(np.float64(base[0][:, g]), np.float64(base[1][:, g]))
        raw, xmn = raw_and_zpre(gamma[:, g], beta[:, g])
        s = raw + (s0[:, g] - raw0)  # the float16 rounding, frozen
        if sym:
            z = z0[:, g]
        else:
            zpre0 = -xmn0 / s0[:, g]
            live = (np.rint(zpre0) >= 0) & (np.rint(zpre0) <= qmax)  # the zero point's clamp
            z = np.where(live, -xmn / s + (z0[:, g] - zpre0), z0[:, g])
        t0 = w / s0[:, g, None]
        u = w / s[:, None] + (u0[:, i0:i1] - z0[:, g, None] - t0) + z[:, None]
        inside = (u0[:, i0:i1] >= 0) & (u0[:, i0:i1] <= qmax)
        q = np.where(inside, u, np.clip(u0[:, i0:i1], 0, qmax))
        loss += np.sum(G[:, i0:i1] * (q - z[:, None]) * s[:, None])
    return loss


def problem(out, n_in, group, seed):
    rng = np.random.default_rng(seed)
    W = f32(rng.standard_normal((out, n_in)))
    W[0] += 3.0  # all-positive groups: the zero point clamps at 0
    ng = len(groups(n_in, group))
    gamma = f32(rng.uniform(0.3, 3.0, (out, ng)))
    beta = f32(rng.uniform(0.3, 3.0, (out, ng)))
    return W, gamma, beta


@pytest.mark.parametrize("out,n_in,group,bits,sym", CASES)
def test_lwc_forward_and_grid_equal_numpy_exactly(k, out, n_in, group, bits, sym):
    W, gamma, beta = problem(out, n_in, group, 1)
    w_hat = np.zeros_like(W)
    k.tqk_lwc_weights(W, gamma, beta, out, n_in, group, bits, int(sym), w_hat)
    ref, s, z, _ = reference(W, gamma, beta, group, bits, sym)
    np.testing.assert_array_equal(w_hat, ref)
    scales = np.zeros((gamma.shape[1], out), np.float32)
    zeros = np.zeros((gamma.shape[1], out), np.uint8)
    k.tqk_lwc_grid(W, gamma, beta, out, n_in, group, bits, int(sym), scales, zeros)
    np.testing.assert_array_equal(scales, s.T)
    np.testing.assert_array_equal(zeros, z.T.astype(np.uint8))


@pytest.mark.parametrize("out,n_in,group,bits,sym", CASES)
def test_lwc_gradients_match_central_differences(k, out, n_in, group, bits, sym):
    W, gamma, beta = problem(out, n_in, group, 2)
    G = f32(np.random.default_rng(3).standard_normal(W.shape))
    dgamma, dbeta = np.zeros_like(gamma), np.zeros_like(beta)
    k.tqk_lwc_backward(W, gamma, beta, G, out, n_in, group, bits, int(sym), dgamma, dbeta)
    base = (gamma, beta)
    h = 1e-5
    fd_gamma, fd_beta = np.zeros(gamma.shape), np.zeros(beta.shape)
    for fd, which in ((fd_gamma, 0), (fd_beta, 1)):
        for idx in np.ndindex(gamma.shape):
            plus = [gamma.astype(np.float64), beta.astype(np.float64)]
            minus = [gamma.astype(np.float64), beta.astype(np.float64)]
            plus[which][idx] += h
            minus[which][idx] -= h
            fd[idx] = (surrogate_loss(W, G, *plus, group, bits, sym, base)
                       - surrogate_loss(W, G, *minus, group, bits, sym, base)) / (2 * h)
    assert np.abs(fd_gamma).max() > 1e-3 and np.abs(fd_beta).max() > 1e-3  # the check has something to check
    np.testing.assert_allclose(dgamma, fd_gamma, rtol=2e-3, atol=2e-5)
    np.testing.assert_allclose(dbeta, fd_beta, rtol=2e-3, atol=2e-5)
