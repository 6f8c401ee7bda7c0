"""bf16 against float32 training (issue 12): the final perplexity of TesseraQ at compute_dtype
bf16 beside the same run at f32, over several training seeds.

    swift build -c release --product tesseraq-cli && swift build -c release --product tesseraq
    python3 bench/bf16_parity.py --models stories260K --bits 2 3 --budgets ci fast anchor-A --seeds 42 43 44 45 46
    python3 bench/bf16_parity.py --models SmolLM2-135M --bits 2 3 --budgets fast --seeds 42 43 44

Why seeds: one run's perplexity moves by a few percent with the order the steps draw their batches
(key `seed`; the windows are the frontier's fixed file, read with calib_windows=sequential), and
bf16 rounding changes that trajectory as any seed does. So a single pair compares two draws of the
same noise; the means over seeds, with the seed-to-seed spread beside them, say whether bf16
costs quality. The budgets, windows and evaluation are bench/frontier.py's. Seed 42, the presets'
own, is the frontier's run: taken from its results.json when recorded there at a commit whose
Sources/ are the working tree's. `--dtypes bf16` runs one side only (e.g. a budget's spread at bf16).

Each run is recorded in OUT/bf16_parity.json (an interrupted sweep resumes); OUT/bf16_parity.md
is rewritten from all recorded runs. Only perplexity is compared; the timings are the frontier's.
`--set KEY=VALUE` adds configuration keys to every run (e.g. `pass_dtype=f32`, the block passes in
float32 while bf16 trains); such runs are a row of their own, labelled with the keys.
"""
import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from frontier import BUDGETS, GROUPS, ROOT, check_cli_built, commit, key_of, model_spec, run_ours  # noqa: E402
from methods_table import evaluate, save_json, save_text  # noqa: E402

DTYPES = ("f32", "bf16")
PRESET_SEED = 42


def parity_key(name, bits, budget, dtype, seed):
    return f"{name}/w{bits}g{GROUPS[name]}/{budget}/{dtype}/seed={seed}"


def same_sources(rev):
    """Whether commit `rev`'s Sources/ are the working tree's (a "-dirty" commit never is)."""
    return not rev.endswith("-dirty") and subprocess.run(["git", "diff", "--quiet", rev, "--", "Sources"], cwd=ROOT).returncode == 0


def summary(runs):
    """Mean, sample standard deviation (0 for one run) and count of the runs' perplexities."""
    ppl = [r["ppl"] for r in runs]
    return statistics.mean(ppl), statistics.stdev(ppl) if len(ppl) > 1 else 0.0, len(ppl)


def report(cache, path):
    """One row per model, width and budget: each dtype's mean +- sd over its seeds, and bf16's mean
    relative to f32's over the seeds both dtypes ran."""
    cells = {}
    for key, r in cache.items():
        cells.setdefault((r["model"], r["bits"], r["budget"]), {}).setdefault(r["dtype"], {})[r["seed"]] = r
    lines = ["bf16 against float32 training: TesseraQ's final perplexity (init awq) over training seeds "
             "(`seed`: the order of the steps' batches). Written by bench/bf16_parity.py.", "",
             "| model | width | budget | f32 mean +- sd (seeds) | bf16 mean +- sd (seeds) | bf16 / f32 (seeds both ran) | "
             "largest single-seed gap |", "|---|---|---|---|---|---|---|"]
    for (model, bits, budget), by in sorted(cells.items()):
        cols = []
        for d in DTYPES:
            mean, sd, n = summary(by[d].values()) if by.get(d) else (0, 0, 0)
            cols.append(f"{mean:.2f} +- {sd:.2f} ({n})" if n else "-")
        both = sorted(set(by.get("f32", {})) & set(by.get("bf16", {})))
        ratio = gap = "-"
        if both:
            m32, m16 = (statistics.mean(by[d][s]["ppl"] for s in both) for d in DTYPES)
            ratio = f"{100 * (m16 / m32 - 1):+.1f}% ({len(both)})"
            gap = f"{100 * max(abs(by['bf16'][s]['ppl'] / by['f32'][s]['ppl'] - 1) for s in both):.1f}%"
        lines.append(f"| {model} | W{bits} g{GROUPS[model]} | {budget} | {cols[0]} | {cols[1]} | {ratio} | {gap} |")
    save_text("\n".join(lines) + "\n", path)
    print("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["stories260K"], choices=list(GROUPS))
    ap.add_argument("--bits", nargs="+", type=int, default=[2, 3])
    ap.add_argument("--budgets", nargs="+", default=["ci", "fast", "anchor-A"], choices=list(BUDGETS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44, 45, 46])
    ap.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    ap.add_argument("--model-dir", help="SmolLM2-135M's directory (default models/SmolLM2-135M-Instruct)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"), help="bf16_parity.json and .md (committed)")
    ap.add_argument("--work", default=os.path.join(ROOT, "out", "frontier"), help="checkpoints and calibration files")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a configuration key for every run")
    ap.add_argument("--report-only", action="store_true", help="rewrite the table from bf16_parity.json")
    args = ap.parse_args()
    sets = sorted(kv.split("=", 1) for kv in args.set)
    variant, tag = "".join(f", {k}={v}" for k, v in sets), "".join(f"-{k}={v}" for k, v in sets)
    cache_path = os.path.join(args.out, "bf16_parity.json")
    cache = json.load(open(cache_path)) if os.path.exists(cache_path) else {}
    frontier_path = os.path.join(ROOT, "bench", "results", "frontier", "results.json")
    recorded = json.load(open(frontier_path)) if os.path.exists(frontier_path) else {}
    if not args.report_only:
        check_cli_built()
    specs = {name: model_spec(name, args.model_dir) for name in args.models}
    runs = itertools.product(args.models, args.bits, args.budgets, args.seeds, args.dtypes)
    for name, bits, point, seed, dtype in [] if args.report_only else runs:
        budget = point + variant
        key, m = parity_key(name, bits, budget, dtype, seed), specs[name]
        if key in cache:
            continue
        same = recorded.get(key_of(name, bits, f"tq-{point}", "awq", dtype))
        if seed == PRESET_SEED and same and same_sources(same["commit"]) and not sets:
            cache[key] = dict(same, model=name, bits=bits, budget=budget, dtype=dtype, seed=seed, source="frontier")
        else:
            out = os.path.join(args.work, name, f"w{bits}g{m['group']}", f"parity-{point}{tag}-{dtype}-seed{seed}")
            r = run_ours(m, name, f"tq-{point}", bits, "awq", dtype, out, args.work, args.threads, extra=dict(sets, seed=seed))
            cache[key] = dict(r, model=name, bits=bits, budget=budget, dtype=dtype, seed=seed, ppl=evaluate(m, out),
                              when=time.strftime("%Y-%m-%d %H:%M", time.gmtime()), commit=commit())
            print(f"{key}: ppl {cache[key]['ppl']:.2f}", flush=True)
        save_json(cache, cache_path)
    report(cache, os.path.join(args.out, "bf16_parity.md"))


if __name__ == "__main__":
    main()
