"""Perplexity against quantization wall time (issue 12): RTN, AWQ, GPTQ, TesseraQ at several
budgets and AutoRound at several iteration counts, on the same calibration windows, 2 threads.

    swift build -c release --product tesseraq-cli && swift build -c release --product tesseraq
    pip install auto-round matplotlib          # AutoRound 0.16.1 beside torch 2.13.0+cpu
    nice -n 10 python3 bench/frontier.py --models stories260K --bits 2 3
    nice -n 10 python3 bench/frontier.py --models SmolLM2-135M --bits 2 --points tq-anchor-A ar-light

Points (`--points`, default all): `rtn`; `awq` and `gptq` (anchor-A's calibration); `tq-ci`,
`tq-fast`, `tq-light`, `tq-anchor-A`, `tq-anchor-A-lr2e-2`, `tq-long`, `tq-long20`, `tq-10min` (TesseraQ budgets, see BUDGETS; `--init` names the start,
passed as `--set init=...`; `--compute-dtype bf16` runs TesseraQ and AWQ at compute_dtype bf16,
recorded in the point's key and label); `ar-light`, `ar-default`, `ar-long` (AutoRound's `light` recipe,
50 iterations at lr 5e-3; its default, 200; and 1000, its `best` recipe's count; all on
anchor-A's windows and batch).

Calibration: the script tokenizes data/wikitext2/valid.txt with the model's tokenizer, cuts
n_samples windows of seq_len tokens at seeded random offsets, and writes them to a uint32
token file. Our CLI reads it with `calib_windows=sequential` (it then trains on exactly those
windows, not a new draw); AutoRound gets the same windows as a list of [1, seq_len] tensors.

Time: `seconds` is the quantization alone: for our CLI the `seconds` of `quantize --json`
(from the first calibration forward to the last block, model loading and checkpoint writing
excluded); for AutoRound the wall time of `AutoRound(...).quantize()` (its calibration pass and
tuning, model loading and export excluded). `wall` is the whole process's wall clock.
Evaluation is never timed: `tesseraq-cli eval` on seq_len x windows of data/wikitext2/test.raw.txt
(512 x 8 for stories260K, 2048 x 16 for SmolLM2). AutoRound's result is evaluated as its
fake-quantized float weights, saved as an HF float checkpoint (`--ar-gptq-export` also scores
its GPTQ export).

Each finished point is recorded in OUT/results.json (an interrupted run resumes; parts can run
in separate sessions); OUT/frontier.md and OUT/frontier.png are rewritten from all recorded points.
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from methods_table import CLI, MODELS, ROOT, evaluate, save_json, save_text, text, timed  # noqa: E402

def on_anchor_a(iters, lr=1e-2, **sets):
    """A budget on anchor-A's calibration (the fast preset, 32 x 512, batch 2) at `iters` steps per round."""
    return dict(preset="fast", n=32, seq=512, batch=2, sets=dict(iters=iters, lr=lr, scale_lr=lr, **sets))


# Calibration and schedule of each TesseraQ budget. n_samples, seq_len and batch are always
# passed explicitly (ci's and fast's are those presets' values), so the window file fits.
BUDGETS = {
    "ci": dict(preset="ci", n=32, seq=128, batch=4),
    "fast": dict(preset="fast", n=64, seq=256, batch=2),
    # fast with 6 steps per round: a point below AutoRound light's time on machine A, where `fast`'s
    # 9 steps land within the machine's drift of it.
    "light": dict(preset="fast", n=64, seq=256, batch=2, sets=dict(iters=6)),
    "anchor-A": on_anchor_a(10),
    # anchor-A's 10 rounds x 10 steps at twice its learning rates: 10 steps at 1e-2 leave the rounding
    # and DST variables short of where 14 steps take them (the `10min` budget), and Adam's steps are
    # about lr each, so doubling lr covers that distance in anchor-A's own steps (bench/bf16_parity.py's
    # seeds show the gain is not one seed's).
    "anchor-A-lr2e-2": on_anchor_a(10, lr=2e-2),
    "long": on_anchor_a(30),
    # long's 30 steps per round over the paper's 20 rounds (its default thresholds): 600 steps per
    # block, the budget that puts a point near AutoRound's 1000 iterations in less of its time.
    "long20": on_anchor_a(30, thresholds="default"),
    # anchor-A's calibration and learning rates with the steps per round that fit 10 minutes at bf16
    # on machine A (the AMD EPYC; anchor-A's 10 steps took 408-463 s there): issue 12's time target.
    "10min": on_anchor_a(14),
}
# Methods that take compute_dtype (TesseraQ's training, AWQ's scale search, and their block passes).
DTYPE_METHODS = ("TesseraQ", "AWQ")

# name: (method, budget, AutoRound iters and lr (None: its default, 1 / iters))
POINTS = {
    "rtn": ("RTN", None, None),
    "awq": ("AWQ", "anchor-A", None),
    "gptq": ("GPTQ", "anchor-A", None),
    **{f"tq-{b}": ("TesseraQ", b, None) for b in BUDGETS},
    "ar-light": ("AutoRound", "anchor-A", (50, 5e-3)),
    "ar-default": ("AutoRound", "anchor-A", (200, None)),
    "ar-long": ("AutoRound", "anchor-A", (1000, None)),
}
GROUPS = {"stories260K": 32, "SmolLM2-135M": 64}
WINDOWS = {"stories260K": 8, "SmolLM2-135M": 16}
CALIB_SEED = 42


def model_spec(name, model_dir):
    m = dict(MODELS[name], windows=WINDOWS[name], group=GROUPS[name])
    if model_dir and name != "stories260K":
        m["path"] = model_dir
    return m


def calibration_file(m, name, n, seq, work):
    """n windows of seq tokens of WikiText-2 valid at seeded random offsets, as a uint32 file."""
    path = os.path.join(work, "calib", f"{name}-{n}x{seq}-seed{CALIB_SEED}.u32")
    if not os.path.exists(path):
        sys.path.insert(0, os.path.join(ROOT, "bindings", "python"))
        import tesseraq
        with open(text("valid"), encoding="utf-8") as f:
            tokens = tesseraq.Tokenizer(m["path"]).encode(f.read())
        starts = np.random.default_rng(CALIB_SEED).integers(0, len(tokens) - seq, size=n)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.concatenate([tokens[s:s + seq] for s in starts]).astype("<u4").tofile(path + ".partial")
        os.replace(path + ".partial", path)
    return path


def run_ours(m, name, point, bits, init, dtype, out, work, threads, extra=None):
    """Our CLI at one point; `extra` adds configuration keys (bf16_parity.py's seed)."""
    method, budget, _ = POINTS[point]
    cmd = [CLI, "quantize", "--model", m["path"], "--out", out, "--bits", str(bits), "--group-size", str(m["group"]),
           "--method", method.lower(), "--overwrite", "--threads", str(threads), "--json"]
    if budget:
        b = BUDGETS[budget]
        cmd += ["--preset", b["preset"], "--calib-tokens", calibration_file(m, name, b["n"], b["seq"], work)]
        sets = dict(n_samples=b["n"], seq_len=b["seq"], batch=b["batch"], calib_windows="sequential")
        if method == "TesseraQ":
            sets.update(b.get("sets", {}), init=init)
        if method in DTYPE_METHODS and dtype != "f32":
            sets["compute_dtype"] = dtype
        sets.update(extra or {})
        for k, v in sets.items():
            cmd += ["--set", f"{k}={v}"]
    return timed(cmd)


def run_autoround(m, name, point, bits, out, work, threads, gptq_export, compile):
    _, budget, (iters, lr) = POINTS[point]
    b = BUDGETS[budget]
    job = dict(model=m["path"], calib=calibration_file(m, name, b["n"], b["seq"], work), n=b["n"], seq=b["seq"],
               batch=b["batch"], bits=bits, group=m["group"], iters=iters, lr=lr, out=out, threads=threads,
               gptq_export=gptq_export, compile=compile)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    t0, cpu0 = time.time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    log = out + ".log"
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(log, "w") as f:
        p = subprocess.run([sys.executable, os.path.abspath(__file__), "--autoround-job", json.dumps(job)], env=env,
                           stdout=subprocess.PIPE, stderr=f, text=True)
    if p.returncode != 0:
        raise SystemExit(f"AutoRound failed (exit {p.returncode}); see {log}")
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    return dict(json.loads(p.stdout.strip().splitlines()[-1]), wall=time.time() - t0, cpu=cpu)


def autoround_job(job):
    """In a subprocess: AutoRound on the windows of job["calib"]; prints its tuning seconds as JSON."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast
    from auto_round import AutoRound

    torch.set_num_threads(job["threads"])
    model = AutoModelForCausalLM.from_pretrained(job["model"], torch_dtype=torch.float32)
    try:
        tokenizer = AutoTokenizer.from_pretrained(job["model"])
    except Exception:   # stories260K ships tokenizer.json alone
        tokenizer = PreTrainedTokenizerFast(tokenizer_file=os.path.join(job["model"], "tokenizer.json"))
    ids = np.fromfile(job["calib"], dtype="<u4").astype(np.int64).reshape(job["n"], job["seq"])
    dataset = [torch.from_numpy(row).unsqueeze(0) for row in ids]
    ar = AutoRound(model, tokenizer, bits=job["bits"], group_size=job["group"], sym=False, dataset=dataset,
                   nsamples=job["n"], seqlen=job["seq"], batch_size=job["batch"], iters=job["iters"], lr=job["lr"],
                   device_map="cpu", seed=42, enable_torch_compile=job["compile"])
    before = {k: v.clone() for k, v in model.state_dict().items() if ".layers." in k and k.endswith("proj.weight")}
    t0 = time.time()
    qmodel, _ = ar.quantize()
    seconds = time.time() - t0
    # AutoRound keeps a linear in float when a dimension is not a multiple of 32 (stories260K's
    # 172-wide MLP): count them, so such a point is not mistaken for a like-for-like one.
    after = {k.replace(".orig_layer.", "."): v for k, v in qmodel.state_dict().items()}
    unchanged = sorted(k for k, v in before.items() if torch.equal(after[k].to(v.dtype), v))
    # The block linears now hold their quantize-dequantize (fake-quantized) weights.
    state = {k.replace(".orig_layer.", "."): v for k, v in qmodel.state_dict().items()}
    qmodel.save_pretrained(job["out"], state_dict=state, safe_serialization=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        if os.path.exists(os.path.join(job["model"], f)):
            shutil.copy(os.path.join(job["model"], f), job["out"])
    if job["gptq_export"]:
        ar.save_quantized(job["out"] + "-gptq", format="auto_gptq")
    print(json.dumps({"seconds": seconds, "float_linears": len(unchanged), "linears": len(before)}), flush=True)


def host_cpu():
    """The CPU a point ran on (model name, family/model, the features our kernels choose by): times
    from different machines are not comparable, so each point records it."""
    info = {}
    with open("/proc/cpuinfo") as f:
        for line in f:
            k, _, v = line.partition(":")
            info.setdefault(k.strip(), v.strip())
    flags = set(info.get("flags", "").split())
    feats = [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return (f"{info.get('model name', 'unknown')} (family {info.get('cpu family', '?')}, model {info.get('model', '?')}; "
            f"{', '.join(feats) or 'no AVX-512'})")


def host_id(host):
    """A short tag of host_cpu()'s text for results.json's keys: "amd-epyc-f25m17"."""
    name, _, rest = host.partition(" (")
    fm = rest.split(";")[0].replace("family ", "f").replace(", model ", "m")
    return "-".join(name.lower().split()) + (f"-{fm}" if fm.startswith("f") else "")


def commit():
    """The commit a point was measured at (`-dirty` when Sources/ has uncommitted changes)."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "Sources"], cwd=ROOT).returncode != 0
    return (head + "-dirty" * dirty) or None


def check_cli_built():
    """Stops when the CLI binary is older than a file under Sources/: a point would be recorded under
    the source tree's commit but measured on stale code (a mistake this script made once)."""
    built = os.path.getmtime(CLI)
    for d, _, files in os.walk(os.path.join(ROOT, "Sources")):
        for f in files:
            if os.path.getmtime(os.path.join(d, f)) > built:
                raise SystemExit(f"{CLI} is older than {os.path.join(d, f)}: rebuild it "
                                 "(swift build -c release --product tesseraq-cli) before measuring")


def key_of(name, bits, point, init, dtype="f32", no_compile=False):
    """results.json's key of a point: model/wBITSgGROUP/point[/init=...][/dtype][/no-compile]@host."""
    key = f"{name}/w{bits}g{GROUPS[name]}/{point}" + (f"/init={init}" if point.startswith("tq-") else "")
    key += f"/{dtype}" if dtype != "f32" and POINTS[point][0] in DTYPE_METHODS else ""
    key += "/no-compile" if no_compile and point.startswith("ar-") else ""
    return key + f"@{host_id(host_cpu())}"


def label_of(r):
    dtype = r.get("compute_dtype")
    if r["method"] == "TesseraQ":
        return f"TesseraQ {r['budget']} (init {r['init']}{', ' + dtype if dtype else ''})"
    if r["method"] == "AWQ" and dtype:
        return f"AWQ ({dtype})"
    if r["method"] == "AutoRound":
        return f"AutoRound {r['point'][3:]} ({r['iters']} it{'' if r.get('compile', True) else ', eager'})"
    return r["method"]


def host_of(r):
    return r.get("host", "not recorded")


def beats(results, ar):
    """Our points measured on `ar`'s machine at no more quantization time that have lower perplexity."""
    return [r for r in results if r["method"] == "TesseraQ" and host_of(r) == host_of(ar)
            and r["seconds"] <= ar["seconds"] and r["ppl"] < ar["ppl"]]


def report(cache, out_dir):
    points = [r for r in cache.values() if "model" in r]
    panels = sorted({(r["model"], r["bits"]) for r in points},
                    key=lambda p: (p[0] != "stories260K", p[0], p[1]))
    hosts = sorted({host_of(r) for r in points})
    letter = {h: chr(ord("A") + i) for i, h in enumerate(hosts)}
    lines = ["Perplexity against quantization time (`seconds`: the quantization alone, 2 threads; `wall` and "
             "`CPU`: the whole process's wall and CPU seconds, model loading and writing included). "
             "Times compare only within one machine; AutoRound is checked against our points from its own machine. "
             "`measured`: when the point ran (a preset's point measures the preset of that day; "
             "results.json records each point's commit). "
             "Written by bench/frontier.py.", ""]
    lines += [f"- machine {letter[h]}: {h}" for h in hosts] + [""]
    for name, bits in panels:
        rs = sorted((r for r in points if (r["model"], r["bits"]) == (name, bits)), key=lambda r: r["seconds"])
        fp = cache.get(f"{name}/FP")
        lines += [f"### {name} W{bits} g{GROUPS[name]} (FP perplexity {fp['ppl']:.2f}; eval {rs[0]['eval']})" if fp else
                  f"### {name} W{bits} g{GROUPS[name]}", "",
                  "| point | machine | calibration | seconds | wall | CPU | perplexity | measured (UTC) |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in rs:
            calib = f"{r['n']} x {r['seq']}, batch {r['batch']}" if r.get("n") else "-"
            note = f" ({r['float_linears']} of {r['linears']} linears left float)" if r.get("float_linears") else ""
            lines.append(f"| {label_of(r)}{note} | {letter[host_of(r)]} | {calib} | {r['seconds']:.1f} | {r['wall']:.1f} | {r['cpu']:.1f} "
                         f"| {r['ppl']:.2f} | {r['when']} |")
        for r in rs:
            if r.get("ppl_gptq_export"):
                lines.append(f"\n{label_of(r)}: its GPTQ export scores {r['ppl_gptq_export']:.2f} "
                             f"(the table: its fake-quantized weights)")
        if (name, bits) == ("SmolLM2-135M", 2):
            for r in (r for r in rs if r["method"] == "TesseraQ" and (r["budget"].startswith("anchor-A") or r["budget"] == "10min")):
                met = r["ppl"] <= 65 and r["seconds"] <= 600
                what = "anchor-A target" if r["budget"].startswith("anchor-A") else "10-minute target on anchor-A's calibration"
                lines.append(f"\n{what} (perplexity <= 65 in <= 600 s), {label_of(r)}, machine {letter[host_of(r)]}: "
                             f"{'met' if met else 'not met'} ({r['ppl']:.2f} in {r['seconds']:.0f} s)")
        for ar in (r for r in rs if r["method"] == "AutoRound"):
            ok = beats(rs, ar)
            best = min(ok, key=lambda r: r["ppl"]) if ok else None
            lines.append(f"\nAutoRound {ar['iters']} it, machine {letter[host_of(ar)]} ({ar['seconds']:.0f} s, {ar['ppl']:.2f}): "
                         + (f"beaten by {label_of(best)} ({best['seconds']:.0f} s, {best['ppl']:.2f})" if best else
                            "no TesseraQ point of that machine below it at no more time"))
        lines.append("")
    table = "\n".join(lines)
    save_text(table + "\n", os.path.join(out_dir, "frontier.md"))
    print(table)
    plot(cache, points, panels, letter, os.path.join(out_dir, "frontier.png"))


def plot(cache, points, panels, letter, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.5), squeeze=False)
    styles = {"RTN": "kx", "AWQ": "gs", "GPTQ": "m^", "TesseraQ": "bo-", "AutoRound": "rD--"}
    for ax, (name, bits) in zip(axes[0], panels):
        rs = [r for r in points if (r["model"], r["bits"]) == (name, bits)]
        hosts = sorted({letter[host_of(r)] for r in rs})
        series = {}
        for r in sorted(rs, key=lambda r: r["seconds"]):
            extra = f" (init {r['init']})" if r.get("init") else " (part float)" if r.get("float_linears") else ""
            machine = f", machine {letter[host_of(r)]}" if len(hosts) > 1 else ""
            series.setdefault(r["method"] + extra + machine, []).append(r)
        fp = cache.get(f"{name}/FP")
        # Off-scale points (RTN at 2 bits, under a second) sit on the panel's edge, their value written.
        top = 4 * fp["ppl"] if fp else float("inf")
        xy = lambda p: (max(p["seconds"], 1.0), min(p["ppl"], top))  # noqa: E731
        for label, pts in series.items():
            # A panel's second machine: hollow markers.
            hollow = {"markerfacecolor": "none"} if letter[host_of(pts[0])] != hosts[0] else {}
            # TesseraQ's starts in their own colours (init awq blue).
            style = {"rtn": "co-", "lwc": "yo-"}.get(pts[0].get("init"), styles[pts[0]["method"]])
            ax.plot([xy(p)[0] for p in pts], [xy(p)[1] for p in pts], style, label=label, **hollow)
            for p in pts:
                tag = {"TesseraQ": p["budget"], "AutoRound": f"{p['iters']} it"}.get(p["method"], "")
                if xy(p) != (p["seconds"], p["ppl"]):
                    tag += f" ({p['ppl']:.0f} in {p['seconds']:.1f} s)"
                if tag:
                    ax.annotate(tag.strip(), xy(p), textcoords="offset points", xytext=(4, 4), fontsize=7)
        if fp:
            ax.axhline(fp["ppl"], color="gray", ls=":", label=f"FP ({fp['ppl']:.1f})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("quantization seconds (2 threads; under 1 s drawn at 1 s)")
        ax.set_ylabel("perplexity, WikiText-2 test")
        ax.set_title(f"{name} W{bits} g{GROUPS[name]}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_point(args, m, name, bits, point, out):
    """Quantizes (timed) and evaluates (untimed) one point: its record for results.json."""
    method, budget, ar = POINTS[point]
    os.makedirs(os.path.dirname(out), exist_ok=True)
    if method == "AutoRound":
        r = run_autoround(m, name, point, bits, out, args.work, args.threads, args.ar_gptq_export,
                          False if args.ar_no_compile else None)
        if args.ar_gptq_export:
            r["ppl_gptq_export"] = evaluate(m, out + "-gptq")
    else:
        r = run_ours(m, name, point, bits, args.init, args.compute_dtype, out, args.work, args.threads)
    b = BUDGETS.get(budget, {})
    r.update(model=name, bits=bits, point=point, method=method, budget=budget, ppl=evaluate(m, out),
             eval=f"{m['windows']} x {m['seq']}", threads=args.threads, n=b.get("n"), seq=b.get("seq"),
             batch=b.get("batch"), init=args.init if method == "TesseraQ" else None, iters=ar[0] if ar else None,
             compile=not args.ar_no_compile if ar else None, when=time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
             host=host_cpu(), commit=commit())
    if method in DTYPE_METHODS and args.compute_dtype != "f32":
        r["compute_dtype"] = args.compute_dtype
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["stories260K"], choices=list(GROUPS))
    ap.add_argument("--bits", nargs="+", type=int, default=[2, 3])
    ap.add_argument("--points", nargs="+", default=list(POINTS), choices=list(POINTS))
    ap.add_argument("--init", default="awq", help="TesseraQ's start (--set init=...), default awq")
    ap.add_argument("--compute-dtype", default="f32", choices=["f32", "bf16"],
                    help="TesseraQ's and AWQ's compute_dtype (default f32)")
    ap.add_argument("--model-dir", help="SmolLM2-135M's directory (default models/SmolLM2-135M-Instruct)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "frontier"),
                    help="results.json, frontier.md and frontier.png (committed)")
    ap.add_argument("--work", default=os.path.join(ROOT, "out", "frontier"), help="checkpoints and calibration files")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ar-gptq-export", action="store_true", help="also evaluate AutoRound's GPTQ export")
    ap.add_argument("--ar-no-compile", action="store_true",
                    help="AutoRound without torch.compile (its default on this CPU: compiled)")
    ap.add_argument("--redo", action="store_true", help="re-measure the named points even if recorded (replacing them)")
    ap.add_argument("--report-only", action="store_true", help="rewrite the table and plot from results.json")
    ap.add_argument("--autoround-job", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.autoround_job:
        return autoround_job(json.loads(args.autoround_job))
    os.makedirs(args.out, exist_ok=True)
    cache_path = os.path.join(args.out, "results.json")
    cache = json.load(open(cache_path)) if os.path.exists(cache_path) else {}
    if not args.report_only:
        check_cli_built()
    for name in [] if args.report_only else args.models:
        m = model_spec(name, args.model_dir)
        if f"{name}/FP" not in cache:
            cache[f"{name}/FP"] = {"ppl": evaluate(m, m["path"]), "eval": f"{m['windows']} x {m['seq']}"}
            save_json(cache, cache_path)
        for bits in args.bits:
            for point in args.points:
                key = key_of(name, bits, point, args.init, args.compute_dtype, args.ar_no_compile)
                if key not in cache or args.redo:
                    print(f"{key} ...", flush=True)
                    # One directory per point: w2g64/tq-anchor-A_init=awq_bf16@host.
                    parts = key.split("/")
                    out = os.path.join(args.work, name, parts[1], "_".join(parts[2:]))
                    cache[key] = run_point(args, m, name, bits, point, out)
                    save_json(cache, cache_path)
                    r = cache[key]
                    print(f"{key}: ppl {r['ppl']:.2f}, {r['seconds']:.1f} s (wall {r['wall']:.1f} s)", flush=True)
    report(cache, args.out)


if __name__ == "__main__":
    main()
