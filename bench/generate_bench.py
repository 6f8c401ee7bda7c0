"""Decoding speed of SmolLM2-135M-Instruct: libtesseraq sessions (FP, W4 g128, W3 g64, W2 g64) beside
llama.cpp (F32, Q8_0, Q4_0, Q2_K of the same weights), prompt (512 tokens) and decode (128 tokens)
tokens/second at the same thread count.

    python3 bench/generate_bench.py [--threads 2] [--repeats 3] [--models-dir /work/cache]
        [--cache ~/.cache/tesseraq/llama.cpp] [--lib .build/release/libtesseraq.so]
        [--skip-llama] [--skip-ours] [--json out.json]

Ours: through the Python bindings (bindings/python, imported from the checkout, not installed):
`tesseraq.Model(dir)`, `tesseraq.Session(model, 640)`, and W4 and W2 again as
`tesseraq.Model(dir, lm_head="w8")` (the LM head rounded to 8 bits and packed: llama.cpp's Q4_0 and
Q2_K files hold their head in Q8_0, so these are the like-for-like rows); prompt = one `prefill` of 512 token ids into an
empty session; decode = `decode` 128 times from an empty session, each step feeding the argmax of the
previous logits (the session is reset between measurements). One warm-up of each before timing.
The library is libtesseraq.so found as the bindings find it (TESSERAQ_LIBRARY, or .build/release of
this checkout: `swift build -c release`), or --lib.

llama.cpp: `llama-bench -m F.gguf -p 512 -n 128 -t N -r 1 -o json`, its pp512 and tg128 rows (the
same two measurements: pp512 is one batch of 512 random tokens into an empty context, tg128 is 128
single-token decodes from an empty context; llama-bench does its own warm-up run). llama.cpp is built
by bench/llama_cpp_build.py from the `llama-cpp-python` sdist on PyPI (vendor/llama.cpp), once,
cached outside the repository (default ~/.cache/tesseraq/llama.cpp); the GGUF files are made there
too (gguf/), from ours FP checkpoint: convert_hf_to_gguf.py --outtype f32, then llama-quantize.

Rounds: --repeats rounds, each measuring every model once (llama.cpp and ours interleaved, so a
burst of load from other jobs on a shared machine does not land on one engine only). The table
shows the best and the median over rounds; the ratios and targets use --stat (default best: on a
shared machine, load from other jobs only ever slows a run down, and decode loops of spinning
threads collapse when the cores are oversubscribed, so the best round is the one closest to the
machine's own speed); --json keeps every sample.

Model directories under --models-dir (override each with --fp/--w4/--w3/--w2):
    smollm2-bf16     python3 scripts/convert_smollm2.py --out DIR
    smollm2-w4g128   tesseraq quantize --model FP --out DIR --method tesseraq --bits 4 --group-size 128 \
                         --preset fast --set init=rtn --calib-text data/wikitext2/valid.txt
    smollm2-w3g64    ... --bits 3 --group-size 64
    smollm2-w2g64    ... --bits 2 --group-size 64
(the speed does not depend on the quantization method, only on bits and group size: --method rtn
makes the same layout in seconds).

llama.cpp's Q2_K of this model is mostly Q4_0: k-quants need rows that are a multiple of 256 values,
SmolLM2's hidden size is 576, and llama-quantize falls back (the script prints the tensor types of
every GGUF and a note when a k-quant file is mostly other types).

This is a benchmark, not a test: it reports the ratios against the issue's targets (our W4 and W2
decode at least as fast as llama.cpp's Q4_0 and Q2_K, our W2 decode faster than our W4) and exits 0
whatever they are. It exits non-zero only when nothing could be measured.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

import llama_cpp_build  # noqa: E402

OURS = [  # (key, label, default directory name, bits, group)
    ("fp", "ours FP", "smollm2-bf16", 16, None),
    ("w4", "ours W4 g128", "smollm2-w4g128", 4, 128),
    ("w3", "ours W3 g64", "smollm2-w3g64", 3, 64),
    ("w2", "ours W2 g64", "smollm2-w2g64", 2, 64),
]
# The same checkpoints opened with lm_head "w8" (the LM head rounded to 8 bits and packed, as
# llama.cpp's Q4_0 and Q2_K files hold theirs in Q8_0): (key, label, key of the directory above)
OURS_W8_HEAD = [
    ("w4h8", "ours W4 g128 + w8 head", "w4"),
    ("w2h8", "ours W2 g64 + w8 head", "w2"),
]
LLAMA_TYPES = ["F32", "Q8_0", "Q4_0", "Q2_K"]
GGUF_NAME = "SmolLM2-135M-Instruct"


def log(msg: str) -> None:
    print(f"[generate_bench] {msg}", file=sys.stderr, flush=True)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="threads for both engines (default 2)")
    ap.add_argument("--repeats", type=int, default=3, help="rounds (default 3)")
    ap.add_argument("--stat", choices=("best", "median"), default="best", help="statistic of the ratios (default best)")
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--models-dir", type=Path, default=Path(os.environ.get("TESSERAQ_MODELS_DIR", ROOT / "models")),
                    help="folder holding smollm2-bf16, smollm2-w4g128, smollm2-w3g64, smollm2-w2g64 (default ./models)")
    for key, label, name, _, _ in OURS:
        ap.add_argument(f"--{key}", type=Path, default=None, help=f"{label} directory (default MODELS_DIR/{name})")
    ap.add_argument("--cache", type=Path, default=None,
                    help="llama.cpp cache: sdist, source, build, gguf/ (default $TESSERAQ_LLAMA_CPP_CACHE or ~/.cache/tesseraq/llama.cpp)")
    ap.add_argument("--gguf-dir", type=Path, default=None, help="GGUF files (default CACHE/gguf)")
    ap.add_argument("--llama-version", default=None, help="llama-cpp-python sdist version (default: newest cached, else newest on PyPI)")
    ap.add_argument("--build-jobs", type=int, default=2, help="make -j for the one-time llama.cpp build (run under nice -n 5)")
    ap.add_argument("--lib", type=Path, default=None, help="libtesseraq.so (sets TESSERAQ_LIBRARY)")
    ap.add_argument("--bindings", type=Path, default=ROOT / "bindings" / "python",
                    help="folder holding the tesseraq Python package (default bindings/python of this checkout)")
    ap.add_argument("--skip-llama", action="store_true", help="only ours")
    ap.add_argument("--skip-ours", action="store_true", help="only llama.cpp")
    ap.add_argument("--json", type=Path, default=None, help="write every sample and the summary here")
    return ap.parse_args(argv)


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).glob("*.safetensors"))


# ---------------------------------------------------------------------------------------------
# ours
# ---------------------------------------------------------------------------------------------

class Ours:
    """The tesseraq bindings of this checkout, or the reason they cannot run."""

    def __init__(self, args):
        self.args = args
        self.tq = None
        self.error: Optional[str] = None
        self.models: Dict[str, object] = {}
        self.sessions: Dict[str, object] = {}
        if args.lib:
            os.environ["TESSERAQ_LIBRARY"] = str(args.lib.resolve())
        sys.path.insert(0, str(args.bindings.resolve()))
        try:
            import numpy as np  # noqa: F401
            import tesseraq
        except ImportError as e:  # numpy missing, or the bindings themselves
            self.error = f"cannot import tesseraq from {args.bindings}: {e}"
            return
        if not hasattr(tesseraq, "Session"):
            self.error = ("tesseraq.Session is missing: the decoding-session bindings (issue 14, "
                          "bindings/python/tesseraq Session/Sampler) are not in this checkout yet")
            return
        try:
            tesseraq.set_num_threads(args.threads)
            self.version = tesseraq.version()
        except Exception as e:  # LibraryNotFoundError, or an older library
            self.error = f"libtesseraq could not be loaded: {e}"
            return
        self.tq = tesseraq

    def open(self, key: str, path: Path, lm_head: str = "checkpoint") -> Optional[str]:
        """Opens model + session once; returns an error message or None."""
        if not (path / "config.json").is_file():
            return f"{path} is not a checkpoint directory (no config.json)"
        try:
            m = self.tq.Model(str(path), lm_head=lm_head)
            s = self.tq.Session(m, self.args.prompt_tokens + self.args.gen_tokens)
        except Exception as e:
            return f"{path}: {type(e).__name__}: {e}"
        # warm-up: a short prefill and a few decodes (page in the weights, start the threads)
        try:
            s.reset()
            s.prefill(self.prompt(m)[:64])
            for _ in range(4):
                s.decode(1)
            s.reset()
        except Exception as e:
            s.close()
            m.close()
            return f"{path}: warm-up failed: {type(e).__name__}: {e}"
        self.models[key], self.sessions[key] = m, s
        return None

    def prompt(self, model):
        import numpy as np
        vocab = model.info.vocab_size
        # random ids, fixed seed, like llama-bench's pp test (the speed does not depend on them)
        return np.random.default_rng(1234).integers(0, vocab, size=self.args.prompt_tokens, dtype=np.uint32)

    def measure(self, key: str) -> Dict[str, float]:
        import numpy as np
        m, s = self.models[key], self.sessions[key]
        ids = self.prompt(m)
        s.reset()
        t0 = time.perf_counter()
        s.prefill(ids)
        t_pp = time.perf_counter() - t0
        s.reset()
        tok = int(ids[0])
        t0 = time.perf_counter()
        for _ in range(self.args.gen_tokens):
            tok = int(np.argmax(s.decode(tok)))
        t_tg = time.perf_counter() - t0
        s.reset()
        return {"pp": self.args.prompt_tokens / t_pp, "tg": self.args.gen_tokens / t_tg}

    def memory(self, key: str) -> Optional[dict]:
        s = self.sessions.get(key)
        try:
            mem = getattr(s, "memory", None)
            return mem() if callable(mem) else mem
        except Exception:
            return None

    def close(self):
        for s in self.sessions.values():
            s.close()
        for m in self.models.values():
            m.close()


# ---------------------------------------------------------------------------------------------
# llama.cpp
# ---------------------------------------------------------------------------------------------

def llama_bench(binary: Path, gguf: Path, args) -> Dict[str, object]:
    """One llama-bench run (-r 1): {"pp": tok/s, "tg": tok/s, "raw": [rows]}."""
    cmd = [str(binary), "-m", str(gguf), "-p", str(args.prompt_tokens), "-n", str(args.gen_tokens),
           "-t", str(args.threads), "-r", "1", "-o", "json"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr.strip()[-2000:]}")
    rows = json.loads(r.stdout)
    out: Dict[str, object] = {"raw": rows}
    for row in rows:
        if row.get("n_prompt", 0) > 0 and row.get("n_gen", 0) == 0:
            out["pp"] = float(row["avg_ts"])
        elif row.get("n_gen", 0) > 0 and row.get("n_prompt", 0) == 0:
            out["tg"] = float(row["avg_ts"])
    return out


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------

def summarize(samples: List[float], stat: str) -> Optional[float]:
    if not samples:
        return None
    return max(samples) if stat == "best" else statistics.median(samples)


def fmt(x: Optional[float], digits: int = 1) -> str:
    return "n/a" if x is None else f"{x:,.{digits}f}"


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a is None or b is None or b == 0 else a / b


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.repeats < 1 or args.threads < 1 or args.prompt_tokens < 1 or args.gen_tokens < 1:
        log("--repeats, --threads, --prompt-tokens and --gen-tokens must be positive")
        return 2
    rows: Dict[str, dict] = {}  # label -> {engine, kind, path, size_bytes, pp: [...], tg: [...]}
    notes: List[str] = []
    meta: Dict[str, object] = {"threads": args.threads, "repeats": args.repeats, "stat": args.stat,
                               "prompt_tokens": args.prompt_tokens, "gen_tokens": args.gen_tokens,
                               "cpu": llama_cpp_build.cpu_model(), "cpu_flags": llama_cpp_build.cpu_flags(),
                               "machine": platform.machine(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    # ---- ours: open what can be opened
    ours = None
    ours_keys: List[str] = []
    if not args.skip_ours:
        ours = Ours(args)
        if ours.error:
            notes.append(f"ours skipped: {ours.error}")
            log(notes[-1])
            ours = None
        else:
            meta["tesseraq_version"] = ours.version
            for key, label, name, bits, group in OURS:
                path = getattr(args, key) or (args.models_dir / name)
                err = ours.open(key, path)
                if err:
                    notes.append(f"{label} skipped: {err}")
                    log(notes[-1])
                    continue
                ours_keys.append(key)
                rows[label] = {"engine": "tesseraq", "key": key, "path": str(path), "bits": bits, "group": group,
                               "lm_head": "checkpoint", "size_bytes": dir_size(path), "pp": [], "tg": []}
            for key, label, base in OURS_W8_HEAD:
                src = next((r for r in rows.values() if r.get("key") == base), None)
                if src is None:
                    continue
                err = ours.open(key, Path(src["path"]), "w8")
                if err:
                    notes.append(f"{label} skipped: {err}")
                    log(notes[-1])
                    continue
                rows[label] = {**src, "key": key, "lm_head": "w8", "pp": [], "tg": []}

    # ---- llama.cpp: build once, make the GGUF files once
    ggufs: Dict[str, Path] = {}
    bench_bin = None
    if not args.skip_llama:
        try:
            llama = llama_cpp_build.ensure_llama_cpp(args.cache, args.llama_version, args.build_jobs)
            bench_bin = llama["bin"]["llama-bench"]
            meta["llama_cpp"] = llama["info"] or {"llama_cpp_python_version": llama["version"]}
            gguf_dir = args.gguf_dir or (Path(llama["src"]).parent / "gguf")
            fp_dir = args.fp or (args.models_dir / OURS[0][2])
            have = {t: gguf_dir / f"{GGUF_NAME}-{t}.gguf" for t in LLAMA_TYPES}
            if all(p.is_file() for p in have.values()):
                ggufs = have
            elif not (fp_dir / "config.json").is_file():
                raise RuntimeError(f"no GGUF files in {gguf_dir} and no FP checkpoint at {fp_dir} to convert "
                                   f"(python3 scripts/convert_smollm2.py --out {fp_dir})")
            else:
                ggufs = llama_cpp_build.ensure_ggufs(llama, fp_dir, gguf_dir, GGUF_NAME, LLAMA_TYPES[1:], args.threads)
        except Exception as e:
            notes.append(f"llama.cpp skipped: {type(e).__name__}: {e}")
            log(notes[-1])
            bench_bin = None
        if bench_bin:
            for t in LLAMA_TYPES:
                types = llama_cpp_build.gguf_tensor_types(Path(llama["src"]), ggufs[t])
                rows[f"llama.cpp {t}"] = {"engine": "llama.cpp", "key": t, "path": str(ggufs[t]), "tensor_types": types,
                                          "size_bytes": ggufs[t].stat().st_size, "pp": [], "tg": []}
                if types and t.endswith("_K") and sum(types.values()) and types.get(t, 0) < sum(types.values()) / 2:
                    notes.append(f"llama.cpp {t} is mostly other types on this model (matrices: "
                                 + ", ".join(f"{k} x{v}" for k, v in types.items())
                                 + "): k-quants need rows that are a multiple of 256 and llama-quantize falls back")

    if not rows:
        log("nothing to measure")
        for n in notes:
            print(f"- {n}")
        return 1

    # ---- rounds, interleaved
    for rnd in range(args.repeats):
        for label, row in rows.items():
            try:
                if row["engine"] == "tesseraq":
                    r = ours.measure(row["key"])
                    time.sleep(0.3)  # libomp's idle threads spin ~200 ms: let them stop before llama-bench
                else:
                    r = llama_bench(bench_bin, Path(row["path"]), args)
                    raw = r.pop("raw")
                    row.setdefault("llama_bench_rows", []).append(raw)
                    if raw and "llama_bench_build" not in meta:
                        meta["llama_bench_build"] = {k: raw[0].get(k) for k in
                                                     ("build_commit", "build_number", "cpu_info", "backends", "n_batch", "n_ubatch")}
            except Exception as e:
                msg = f"{label} round {rnd + 1}: {type(e).__name__}: {e}"
                notes.append(msg)
                log(msg)
                continue
            for k in ("pp", "tg"):
                if k in r:
                    row[k].append(r[k])
            log(f"round {rnd + 1}/{args.repeats} {label}: pp{args.prompt_tokens} {fmt(r.get('pp'))} tok/s, "
                f"tg{args.gen_tokens} {fmt(r.get('tg'))} tok/s")

    if ours is not None:
        for label, row in rows.items():
            if row["engine"] == "tesseraq":
                row["session_memory"] = ours.memory(row["key"])
        ours.close()

    for row in rows.values():
        for k in ("pp", "tg"):
            row[f"{k}_best"] = summarize(row[k], "best")
            row[f"{k}_median"] = summarize(row[k], "median")
            row[f"{k}_stat"] = row[f"{k}_{args.stat}"]

    def get(label, k):
        return rows.get(label, {}).get(k)

    ratios = {
        "ours W4 g128 + w8 head / llama.cpp Q4_0": ("ours W4 g128 + w8 head", "llama.cpp Q4_0"),
        "ours W2 g64 + w8 head / llama.cpp Q2_K": ("ours W2 g64 + w8 head", "llama.cpp Q2_K"),
        "ours W4 g128 / llama.cpp Q4_0": ("ours W4 g128", "llama.cpp Q4_0"),
        "ours W2 g64 / llama.cpp Q2_K": ("ours W2 g64", "llama.cpp Q2_K"),
        "ours W2 g64 / ours W4 g128": ("ours W2 g64", "ours W4 g128"),
        "ours W2 g64 + w8 head / ours W4 g128 + w8 head": ("ours W2 g64 + w8 head", "ours W4 g128 + w8 head"),
        "ours W3 g64 / ours W4 g128": ("ours W3 g64", "ours W4 g128"),
        "ours FP / llama.cpp F32": ("ours FP", "llama.cpp F32"),
    }
    ratio_vals = {name: {k: ratio(get(a, f"{k}_stat"), get(b, f"{k}_stat")) for k in ("pp", "tg")}
                  for name, (a, b) in ratios.items()}

    # ---- markdown
    p, n = args.prompt_tokens, args.gen_tokens
    print(f"\nSmolLM2-135M-Instruct, {args.threads} threads, {args.repeats} rounds ({meta['cpu']})\n")
    print(f"| model | file MB | prompt pp{p} tok/s best | median | decode tg{n} tok/s best | median |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, row in rows.items():
        print(f"| {label} | {row['size_bytes'] / 1e6:.1f} | {fmt(row['pp_best'])} | {fmt(row['pp_median'])} "
              f"| {fmt(row['tg_best'])} | {fmt(row['tg_median'])} |")
    print()
    print(f"| ratio ({args.stat}) | prompt | decode |")
    print("|---|---:|---:|")
    for name, v in ratio_vals.items():
        print(f"| {name} | {fmt(v['pp'], 2)} | {fmt(v['tg'], 2)} |")
    targets = [
        ("our W4 decode >= llama.cpp Q4_0 decode (both with an 8-bit head)",
         ratio_vals["ours W4 g128 + w8 head / llama.cpp Q4_0"]["tg"], 1.0),
        ("our W2 decode >= llama.cpp Q2_K decode (both with an 8-bit head)",
         ratio_vals["ours W2 g64 + w8 head / llama.cpp Q2_K"]["tg"], 1.0),
        ("our W2 decode > our W4 decode", ratio_vals["ours W2 g64 / ours W4 g128"]["tg"], 1.0),
        ("our W4 decode >= llama.cpp Q4_0 decode (ours with the checkpoint's bf16 head)",
         ratio_vals["ours W4 g128 / llama.cpp Q4_0"]["tg"], 1.0),
        ("our W2 decode >= llama.cpp Q2_K decode (ours with the checkpoint's bf16 head)",
         ratio_vals["ours W2 g64 / llama.cpp Q2_K"]["tg"], 1.0),
    ]
    print("\nTargets of issue 14 (reported, not asserted):")
    for name, v, bar in targets:
        verdict = "not measured" if v is None else ("met" if v >= bar else "NOT met")
        print(f"- {name}: {verdict}" + ("" if v is None else f" (ratio {v:.2f})"))
    if "llama_cpp" in meta:
        info = meta["llama_cpp"]
        print(f"\nllama.cpp: llama-cpp-python {info.get('llama_cpp_python_version')} sdist (vendor/llama.cpp"
              + (f", commit {info['llama_cpp_commit']}" if info.get("llama_cpp_commit") else "") + "), "
              + " ".join(info.get("cmake_flags", [])))
        b = meta.get("llama_bench_build")
        if b:
            print(f"llama-bench build {b.get('build_number')} ({b.get('build_commit')}), backends {b.get('backends')}, "
                  f"n_batch {b.get('n_batch')}, n_ubatch {b.get('n_ubatch')}")
    for note in notes:
        print(f"- note: {note}")

    if args.json:
        out = {"meta": meta, "rows": rows, "ratios": ratio_vals,
               "targets": [{"name": t, "ratio": v, "met": None if v is None else v >= b} for t, v, b in targets],
               "notes": notes}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1, default=str) + "\n")
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
