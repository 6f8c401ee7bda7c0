#!/usr/bin/env python3
"""Build the tiny per-architecture fixtures under Tests/Fixtures/models/tiny-<arch>/ with transformers.

Run by developers when a fixture changes, never by CI (CI has no torch). Requirements, pinned
because the reference numbers depend on them (scripts/tiny-models-requirements.txt):

    torch==2.13.0  transformers==5.24.0  safetensors==0.8.0  numpy

For every architecture this builds a randomly initialised model (seeded) in float32 with shapes
that exercise what differs between architectures (GQA or not, head_dim independent of
hidden / heads, q/k/v biases, per-head q/k norms, llama3 RoPE scaling, tied embeddings, a
sliding window shorter than the long test sequence, Phi-3's fused qkv_proj and gate_up_proj, Gemma's
(1 + w) norms, soft-capping, alternating windows and two RoPE bases), saves it with ``save_pretrained``
(config.json in transformers 5's form, with ``rope_parameters``; model.safetensors), and writes
``reference.json``:

  * ``sequences``: token lists (a long one and one no longer than any sliding window);
  * ``logits``: per sequence, the eager-attention float32 logits [T x vocab], as base64 of
    little-endian float32 (exact and compact);
  * ``block``: for decoder layer ``layer`` on the long sequence's hidden states at that layer
    (``input``, [T x hidden]) and a ``target`` [T x hidden]: ``loss`` = sum((y - target)^2) / T
    (libtesseraq's block loss), and for every linear of the block the Frobenius norm of dL/dW
    (``grad_norms``) and its first entries in row-major order (``grad_head``); a fused linear's
    gradient is given per part (its rows of q, k, v or gate, up), by the part's name.

Weights are drawn wider than transformers' default init (std 0.02 makes every logit nearly
equal, which would test little), norms and biases are randomised too.

Usage:
    python3 scripts/make_tiny_models.py [--only ARCH ...]
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
import transformers

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "Tests" / "Fixtures" / "models"
PINNED = {"torch": "2.13.0", "transformers": "5.24.0"}
VOCAB = 256
LONG, SHORT = 24, 7
HEAD_ENTRIES = 8
LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
FUSED = {"self_attn.qkv_proj": ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
         "mlp.gate_up_proj": ["mlp.gate_proj", "mlp.up_proj"]}

COMMON = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
              num_attention_heads=4, max_position_embeddings=64, rms_norm_eps=1e-5)


def configs() -> dict[str, transformers.PretrainedConfig]:
    """The fixtures, by directory suffix."""
    return {
        # Llama 3.x style: GQA, head_dim 16 (4 heads x 16 = 64 != hidden 32), llama3 RoPE scaling
        # whose original context (16) is shorter than the long sequence, tied embeddings.
        "llama": transformers.LlamaConfig(
            **COMMON, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True,
            rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 4.0, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
        # Qwen2 without GQA (AWQ folds v into o, biases included), untied head.
        "qwen2": transformers.Qwen2Config(**COMMON, num_key_value_heads=4, tie_word_embeddings=False,
                                          rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
        # Qwen2 with GQA, tied.
        "qwen2-gqa": transformers.Qwen2Config(**COMMON, num_key_value_heads=2, tie_word_embeddings=True),
        # Qwen3: per-head q/k RMSNorm, head_dim independent of hidden / heads, no biases.
        "qwen3": transformers.Qwen3Config(**COMMON, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True),
        # Mistral: a sliding window (8) shorter than the long sequence (24).
        "mistral": transformers.MistralConfig(**COMMON, num_key_value_heads=2, head_dim=16, sliding_window=8,
                                              tie_word_embeddings=False),
        # Phi-3: fused qkv_proj and gate_up_proj, GQA, a window (16) shorter than the long sequence.
        "phi3": transformers.Phi3Config(**COMMON, num_key_value_heads=2, sliding_window=16, tie_word_embeddings=False,
                                        bos_token_id=1, eos_token_id=2, pad_token_id=None),
        # Gemma 2: GQA, head_dim 16, layer 0 sliding (window 8 < 24), layer 1 global; soft-caps small
        # enough to bind (scores and logits reach several units); query_pre_attn_scalar != head_dim.
        "gemma2": transformers.Gemma2Config(**COMMON, num_key_value_heads=2, head_dim=16, sliding_window=8,
                                            query_pre_attn_scalar=24, attn_logit_softcapping=3.0,
                                            final_logit_softcapping=4.0, tie_word_embeddings=True,
                                            pad_token_id=0, bos_token_id=2, eos_token_id=1),
        # Gemma 3 text: (1 + w) q/k norms, layers 0 and 1 sliding (window 8) and layer 2 global
        # (sliding_window_pattern 3), local RoPE base 10000 and a global base with linear scaling;
        # an untied head; soft-caps off as in the released models.
        "gemma3": transformers.Gemma3TextConfig(
            **{**COMMON, "num_hidden_layers": 3}, num_key_value_heads=2, head_dim=16, sliding_window=8,
            sliding_window_pattern=3, query_pre_attn_scalar=32, tie_word_embeddings=False,
            rope_parameters={"full_attention": {"rope_type": "linear", "rope_theta": 1000000.0, "factor": 2.0},
                             "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
            pad_token_id=0, bos_token_id=2, eos_token_id=1),
    }


def b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.detach().to(torch.float32).contiguous().numpy().astype("<f4").tobytes()).decode()


def randomise(model: torch.nn.Module, gen: torch.Generator) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                # Gemma stores norm weights as offsets from 1: draw the same multipliers.
                offset = 0 if model.config.model_type.startswith("gemma") else 1
                p.copy_(offset + 0.2 * (torch.rand(p.shape, generator=gen) * 2 - 1))
            elif name.endswith(".bias"):
                p.copy_(0.5 * (torch.rand(p.shape, generator=gen) * 2 - 1))
            elif name.endswith("embed_tokens.weight"):
                p.copy_(torch.randn(p.shape, generator=gen))
            else:
                # uniform +-sqrt(3 / in): unit-variance outputs for unit-variance inputs
                bound = (3.0 / p.shape[1]) ** 0.5
                p.copy_(bound * (torch.rand(p.shape, generator=gen) * 2 - 1))


def block_reference(model, layer: int, tokens: torch.Tensor, gen: torch.Generator) -> dict:
    """Loss and weight gradients of one decoder layer, run exactly as inside the model."""
    captured = {}

    def hook(_module, args, kwargs):
        captured["args"], captured["kwargs"] = args, kwargs

    block = model.model.layers[layer]
    handle = block.register_forward_pre_hook(hook, with_kwargs=True)
    with torch.no_grad():
        model(tokens[None], use_cache=False)
    handle.remove()
    args, kwargs = captured["args"], dict(captured["kwargs"])
    x = (args[0] if args else kwargs.pop("hidden_states")).detach().clone()
    kwargs.pop("hidden_states", None)
    with torch.no_grad():
        y0 = block(x, *args[1:], **kwargs)
        y0 = y0[0] if isinstance(y0, tuple) else y0
    target = y0 + 0.5 * torch.randn(y0.shape, generator=gen)
    model.zero_grad()
    y = block(x, *args[1:], **kwargs)
    y = y[0] if isinstance(y, tuple) else y
    rows = y.shape[0] * y.shape[1]
    loss = ((y - target) ** 2).sum() / rows
    loss.backward()
    grads = {}
    for name, _ in block.named_modules():
        if name in LINEARS:
            grads[name] = block.get_submodule(name).weight.grad
        elif name in FUSED:
            # A fused linear's gradient, split into the rows of its parts (q, k, v / gate, up).
            g, cfg = block.get_submodule(name).weight.grad, model.config
            hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
            sizes = ([cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd, cfg.num_key_value_heads * hd]
                     if name.endswith("qkv_proj") else [cfg.intermediate_size] * 2)
            grads.update(zip(FUSED[name], torch.split(g, sizes, dim=0)))
    assert sorted(grads) == sorted(LINEARS), sorted(grads)
    return {
        "layer": layer, "sequence": 0, "input": b64(x[0]), "target": b64(target[0]), "loss": loss.item(),
        "grad_norms": {n: g.norm().item() for n, g in grads.items()},
        "grad_head": {n: g.flatten()[:HEAD_ENTRIES].tolist() for n, g in grads.items()},
    }


def build(arch: str, config, seed: int) -> None:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    config._attn_implementation = "eager"
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    randomise(model, gen)
    if config.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    out = OUT / f"tiny-{arch}"
    if out.exists():
        shutil.rmtree(out)
    model.save_pretrained(out, safe_serialization=True)
    (out / "generation_config.json").unlink(missing_ok=True)
    sequences = [torch.randint(0, VOCAB, (n,), generator=gen) for n in (LONG, SHORT)]
    with torch.no_grad():
        logits = [b64(model(s[None], use_cache=False).logits[0]) for s in sequences]
    reference = {
        "generator": "scripts/make_tiny_models.py",
        "torch": torch.__version__, "transformers": transformers.__version__,
        "attention": "eager", "dtype": "float32",
        "sequences": [s.tolist() for s in sequences], "logits": logits,
        "block": block_reference(model, 1, sequences[0], gen),
    }
    (out / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"{out.relative_to(ROOT)}: {size / 1024:.0f} KB")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", help="architectures to build (default: all)")
    args = ap.parse_args()
    for pkg, want in PINNED.items():
        have = (torch.__version__ if pkg == "torch" else transformers.__version__).split("+")[0]
        if have != want:
            print(f"warning: {pkg} {have} is not the pinned {want}; references will differ", file=sys.stderr)
    torch.set_num_threads(1)
    for i, (arch, config) in enumerate(configs().items()):
        if not args.only or arch in args.only:
            build(arch, config, seed=1000 + i)
    return 0


if __name__ == "__main__":
    sys.exit(main())
