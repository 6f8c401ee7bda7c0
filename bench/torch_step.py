"""The TesseraQ optimisation step of bench/swift/StepBench.swift in PyTorch, for bench/step_bench.py:
the same synthetic LLaMA block (RMSNorm, q/k/v/o with RoPE and grouped-query causal attention,
SwiGLU MLP), each linear's weight soft-quantised from its rounding variables a and DST variables v
(ALGORITHM.md section 3: w_hat = (clamp(floor(w/s) + h(a) + z, 0, qmax) - z) * s * 2 h(v), h the
rectified sigmoid clamp(1.2 sigmoid - 0.1, 0, 1), 80% of the weights hardened), the MSE loss against
a target, backward, and Adam on a and v (weight decay on v), as the reference trains it. Run in fp32
and under torch.autocast("cpu", dtype=torch.bfloat16), the reference's own mixed-precision regime
(fp16 autocast on GPUs). Times are per step, best of the measured steps."""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F


def rectified(x):
    return torch.clamp(torch.sigmoid(x) * 1.2 - 0.1, 0, 1)


class SoftLinear:
    """One linear under training: frozen floor(w/s), s, z, hard mask; trainable a and v."""

    def __init__(self, out, inp, bits, group, gen):
        w = (torch.rand(out, inp, generator=gen) * 2 - 1) * 0.05
        g = w.view(out, inp // group, group)
        mn, mx = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
        qmax = 2 ** bits - 1
        self.s = ((mx - mn).clamp(min=1e-5) / qmax)
        self.z = torch.clamp(-torch.round(mn / self.s), 0, qmax)
        self.fl = torch.floor(g / self.s)
        r = (g / self.s - self.fl).clamp(0.01, 0.99)
        self.a = (-torch.log(1.2 / (r + 0.1) - 1)).requires_grad_()
        self.v = torch.zeros(out, inp // group, 1, requires_grad=True)
        self.hard = torch.rand(out, inp // group, group, generator=gen) < 0.8
        self.hard_val = (r > 0.5).float()
        self.qmax, self.shape = qmax, (out, inp)

    def weight(self):
        h = torch.where(self.hard, self.hard_val, rectified(self.a))
        q = torch.clamp(self.fl + h + self.z, 0, self.qmax)
        return ((q - self.z) * self.s * 2 * rectified(self.v)).view(self.shape)


def rope_tables(seq, dim):
    inv = 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim))
    ang = torch.outer(torch.arange(seq).float(), inv)
    return torch.cat([ang.cos(), ang.cos()], -1), torch.cat([ang.sin(), ang.sin()], -1)


def rotate(x, cos, sin):
    x1, x2 = x.chunk(2, -1)
    return x * cos + torch.cat([-x2, x1], -1) * sin


def rms(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w


def step_ms(hidden, heads, kv_heads, ffn, batch, seq, bits, group, threads, steps, bf16):
    """Milliseconds per step (best of `steps` after one warm-up)."""
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(1)
    hd = hidden // heads
    shapes = [(heads * hd, hidden), (kv_heads * hd, hidden), (kv_heads * hd, hidden), (hidden, heads * hd),
              (ffn, hidden), (ffn, hidden), (hidden, ffn)]
    lin = [SoftLinear(o, i, bits, group, gen) for o, i in shapes]
    opt = torch.optim.Adam([{"params": [l.a for l in lin]},
                            {"params": [l.v for l in lin], "weight_decay": 1e-4}], lr=1e-3)
    n1, n2 = torch.ones(hidden), torch.ones(hidden)
    x = torch.rand(batch, seq, hidden, generator=gen) * 2 - 1
    target = torch.rand(batch, seq, hidden, generator=gen) * 2 - 1
    cos, sin = rope_tables(seq, hd)

    def forward():
        wq, wk, wv, wo, wg, wu, wd = (l.weight() for l in lin)
        h = rms(x, n1)
        q = F.linear(h, wq).view(batch, seq, heads, hd).transpose(1, 2)
        k = F.linear(h, wk).view(batch, seq, kv_heads, hd).transpose(1, 2)
        v = F.linear(h, wv).view(batch, seq, kv_heads, hd).transpose(1, 2)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        rep = heads // kv_heads
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(batch, seq, hidden)
        y = x + F.linear(a, wo)
        m = rms(y, n2)
        return y + F.linear(F.silu(F.linear(m, wg)) * F.linear(m, wu), wd)

    best = float("inf")
    for s in range(steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = forward()
        loss = F.mse_loss(out.float(), target)
        loss.backward()
        opt.step()
        if s > 0:
            best = min(best, time.perf_counter() - t0)
    return best * 1000.0
