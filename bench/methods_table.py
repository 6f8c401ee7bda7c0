"""The README's results table: WikiText-2 perplexity and wall time of every method on
stories260K and SmolLM2-135M, produced by one command:

    swift build -c release
    python3 bench/methods_table.py [--models stories260K SmolLM2-135M] [--out bench/results.md] [--windows K]

stories260K uses group size 32 (its widths are 64 and 172), SmolLM2 g64 / g128 as the paper.
Evaluation: data/wikitext2/test.raw.txt tokenized by the model's tokenizer (`eval --text`), seq_len 512
and 8 windows for stories260K, seq_len 2048 and 4 windows for SmolLM2 (--windows changes both).
Calibration: data/wikitext2/valid.txt (`--calib-text`, a different split). TesseraQ/AWQ/GPTQ/LWC
use the "ci" preset on stories260K and "fast" on SmolLM2, where the calibration is cut to fit a
2-core budget: AWQ 16 windows of 256 tokens (as TesseraQ's AWQ init), GPTQ 32 of 512.
Each finished run is recorded in WORK/results.json, so an interrupted table resumes where it stopped.

`--table wa` gives the weight-activation table instead (issue 16): per-channel weights and per-token
activations, W4A4 (and W3A3 on SmolLM2), for RTN without rotation, and RTN, GPTQ and TesseraQ
(from RTN and from AWQ) on the QuaRot-rotated model (`rotate=hadamard`). `--table rotation` gives the weight-only
runs with and without the rotation (W2 g64 and W3 g64 on SmolLM2).
"""
import argparse
import json
import os
import resource
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WIKITEXT = os.path.join(ROOT, "data", "wikitext2")
CLI = os.environ.get("TESSERAQ_CLI", os.path.join(ROOT, ".build", "release", "tesseraq-cli"))

MODELS = {
    "stories260K": dict(path=os.path.join(ROOT, "Tests", "Fixtures", "models", "stories260K"), seq=512, windows=8,
                        preset="ci", settings=[(2, 32), (3, 32), (4, 32)]),
    "SmolLM2-135M": dict(path=os.path.join(ROOT, "models", "SmolLM2-135M-Instruct"), seq=2048,
                         windows=4, preset="fast", settings=[(2, 64), (3, 64), (4, 128)],
                         extra={"AWQ": ["--set", "n_samples=16"], "GPTQ": ["--set", "n_samples=32"],
                                "TesseraQ (init awq)": ["--set", "awq_samples=16"]}),
}
METHODS = [("RTN", ["--method", "rtn"]), ("AWQ", ["--method", "awq"]), ("GPTQ", ["--method", "gptq"]),
           ("LWC", ["--method", "lwc"]),
           ("TesseraQ (init rtn)", ["--method", "tesseraq", "--set", "init=rtn"]),
           ("TesseraQ (init awq)", ["--method", "tesseraq", "--set", "init=awq"]),
           ("TesseraQ (init lwc)", ["--method", "tesseraq", "--set", "init=lwc"])]
ROTATE = ["--set", "rotate=hadamard"]
WA_METHODS = [("RTN", ["--method", "rtn"]), ("RTN + QuaRot", ["--method", "rtn", *ROTATE]),
              ("GPTQ + QuaRot", ["--method", "gptq", *ROTATE]),
              ("TesseraQ (init rtn) + QuaRot", ["--method", "tesseraq", "--set", "init=rtn", *ROTATE]),
              ("TesseraQ (init awq) + QuaRot", ["--method", "tesseraq", "--set", "init=awq", *ROTATE])]
ROTATION_METHODS = [("RTN", ["--method", "rtn"]), ("RTN + QuaRot", ["--method", "rtn", *ROTATE]),
                    ("GPTQ", ["--method", "gptq"]), ("GPTQ + QuaRot", ["--method", "gptq", *ROTATE])]
# (weight bits, activation bits, group size): per-channel weights, as the paper's W4A4 and QuaRot.
WA_SETTINGS = {"stories260K": [(4, 4, -1)], "SmolLM2-135M": [(4, 4, -1), (3, 3, -1)]}
ROTATION_SETTINGS = {"SmolLM2-135M": [(2, 16, 64), (3, 16, 64)]}


def text(split):
    return os.path.join(WIKITEXT, f"{split}.txt")


def evaluate(m, path):
    out = subprocess.run([CLI, "eval", "--model", path, "--text", text("test.raw"), "--seq-len", str(m["seq"]),
                          "--max-windows", str(m["windows"]), "--json"], check=True, capture_output=True, text=True).stdout
    return json.loads(out)["perplexity"]


def quantize(m, label, flags, bits, group, out):
    """Quantizes and evaluates one cell: perplexity, wall and CPU seconds of the quantization."""
    cmd = [CLI, "quantize", "--model", m["path"], "--out", out, "--bits", str(bits), "--group-size", str(group),
           "--overwrite", *flags]
    if "rtn" not in flags[1:2]:
        # "GPTQ + QuaRot" calibrates as "GPTQ".
        extra = m.get("extra", {}).get(label.split(" + ")[0], [])
        cmd += ["--preset", m["preset"], "--calib-text", text("valid"), *extra]
    return dict(timed(cmd), ppl=evaluate(m, out))


def timed(cmd):
    """Runs `cmd`: its wall and CPU seconds (the process's, model loading and writing included),
    and, for `quantize --json`, its report's own `seconds` (the quantization alone)."""
    t0, cpu0 = time.time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}\nfailed (exit {p.returncode}): {p.stderr[-2000:]}")
    secs, cpu1 = time.time() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds too: wall time alone misleads when the machine is shared.
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    r = {"wall": secs, "cpu": cpu}
    if "--json" in cmd:
        r["seconds"] = json.loads(p.stdout)["seconds"]
    return r


def setting_name(bits, abits, group):
    """W4 g128, W4A4 (per-channel), W2 g64 ..."""
    return f"W{bits}" + (f"A{abits}" if abits < 16 else "") + (f" g{group}" if group > 0 else "")


def save_text(text, path):
    """Writes `path` atomically, so an interrupted run never leaves a truncated file."""
    with open(path + ".partial", "w") as f:
        f.write(text)
    os.replace(path + ".partial", path)


def save_json(obj, path):
    save_text(json.dumps(obj, indent=1), path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--methods", nargs="+", default=[name for name, _ in METHODS])
    ap.add_argument("--work", default=os.path.join(ROOT, "out", "methods"))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results.md"))
    ap.add_argument("--windows", type=int, help="evaluation windows (default: 8 for stories260K, 4 for SmolLM2)")
    ap.add_argument("--table", choices=["methods", "wa", "rotation"], default="methods")
    args = ap.parse_args()
    if args.table != "methods":
        methods = WA_METHODS if args.table == "wa" else ROTATION_METHODS
        settings = WA_SETTINGS if args.table == "wa" else ROTATION_SETTINGS
        args.methods = [name for name, _ in methods] if args.methods == [name for name, _ in METHODS] else args.methods
        args.models = [n for n in args.models if n in settings]
    else:
        methods = METHODS
        settings = {name: [(b, 16, g) for b, g in MODELS[name]["settings"]] for name in MODELS}
    os.makedirs(args.work, exist_ok=True)
    cache_path = os.path.join(args.work, "results.json")
    cache = json.load(open(cache_path)) if os.path.exists(cache_path) else {}
    lines = []
    for name in args.models:
        m = dict(MODELS[name], **({"windows": args.windows} if args.windows else {}))
        fp_key = f"{name}/FP/w{m['windows']}"
        if fp_key not in cache:
            cache[fp_key] = {"ppl": evaluate(m, m["path"])}
        fp = cache[fp_key]["ppl"]
        cols = settings[name]
        header = "| method | " + " | ".join(f"{setting_name(b, a, g)} ppl | time" for b, a, g in cols) + " |"
        lines += [f"### {name} (FP perplexity {fp:.2f}; seq_len {m['seq']}, {m['windows']} windows)", "", header,
                  "|---|" + "---|---|" * len(cols)]
        for label, flags in methods:
            if label not in args.methods:
                continue
            cells = []
            for bits, abits, group in cols:
                # Weight-only cells keep the keys of earlier tables.
                wa = f"a{abits}" if abits < 16 else ""
                key = f"{name}/{label}/w{bits}{wa}g{group}/w{m['windows']}"
                if key not in cache:
                    tag = "-".join(f.replace("=", "") for f in flags[1:] if f != "--set")
                    out = os.path.join(args.work, name, f"{tag}-w{bits}{wa}g{group}")
                    aflags = ["--set", f"a_bits={abits}"] if abits < 16 else []
                    cache[key] = quantize(m, label, flags + aflags, bits, group, out)
                    save_json(cache, cache_path)
                r = cache[key]
                cells.append(f"{r['ppl']:.2f} | {r['wall']:.0f} s")
                print(name, label, setting_name(bits, abits, group), cells[-1], f"(cpu {r['cpu']:.0f} s)", flush=True)
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    text = "\n".join(lines)
    print(text)
    save_text(text + "\n", args.out)


if __name__ == "__main__":
    main()
