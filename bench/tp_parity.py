"""Tensor-parallel parity: the same TesseraQ run as one process and under `mpirun -np 2` (one thread
per rank, same seed), compared block by block (final, last-step and RTN losses), by perplexity, and
byte for byte (the exported checkpoint, its report of times and memory aside).

    python3 bench/tp_parity.py --model models/SmolLM2-135M-Instruct --bits 2 3

Needs Open MPI (`bash scripts/setup.sh --mpi`) and a release build (`swift build -c release`).
Writes bench/results/tp_parity.json (merging with what is there) and prints a summary per case.
This is a measurement, not a test: the test suite runs the stories260K cases
(bindings/python/tests/test_tensor_parallel.py).
"""
import argparse
import filecmp
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "tp_parity.json"


def run(cmd, env=None):
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed ({p.returncode}):\n{p.stderr[-4000:]}")
    return p.stdout


def same_files(a, b):
    """Every file of the two checkpoints equal byte for byte, but the run's own report (its times and
    per-rank memory)."""
    names = sorted(n for n in os.listdir(a) if n != "quantize_report.json")
    return names == sorted(n for n in os.listdir(b) if n != "quantize_report.json") and all(filecmp.cmp(os.path.join(a, n), os.path.join(b, n), shallow=False)
                                                  for n in names)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "models" / "SmolLM2-135M-Instruct"))
    ap.add_argument("--bits", type=int, nargs="+", default=[2])
    ap.add_argument("--group-size", type=int, default=64)
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--init", default="rtn")
    ap.add_argument("--calib-text", default=str(ROOT / "data" / "wikitext2" / "valid.txt"))
    ap.add_argument("--eval-text", default=str(ROOT / "data" / "wikitext2" / "test.raw.txt"))
    ap.add_argument("--seq-len", type=int, default=2048, help="evaluation window")
    ap.add_argument("--max-windows", type=int, default=16)
    ap.add_argument("--cli", default=str(ROOT / ".build" / "release" / "tesseraq-cli"))
    ap.add_argument("--keep", help="keep the checkpoints under this directory")
    args = ap.parse_args()
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        sys.exit("mpirun not found: bash scripts/setup.sh --mpi")
    env = dict(os.environ, OMP_NUM_THREADS="1", OMPI_MCA_btl_vader_single_copy_mechanism="none")
    root = ["--allow-run-as-root"] if os.geteuid() == 0 else []
    work = Path(args.keep or tempfile.mkdtemp(prefix="tp_parity_"))
    work.mkdir(parents=True, exist_ok=True)
    for bits in args.bits:
        key = f"{Path(args.model).name} W{bits} g{args.group_size} {args.preset} init={args.init}"
        outs, reports, ppl, seconds = {}, {}, {}, {}
        for label, prefix in [("single", []), ("ranks2", [mpirun, *root, "--oversubscribe", "-np", "2",
                                                           "-x", "OMP_NUM_THREADS=1"])]:
            out = work / f"W{bits}-{label}"
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.time()
            reports[label] = json.loads(run([*prefix, args.cli, "quantize", "--model", args.model, "--out", str(out),
                                             "--method", "tesseraq", "--bits", str(bits), "--group-size",
                                             str(args.group_size), "--preset", args.preset, "--set", f"init={args.init}",
                                             "--calib-text", args.calib_text, "--threads", "1", "--json"], env))
            seconds[label] = time.time() - t0
            ppl[label] = json.loads(run([args.cli, "eval", "--model", str(out), "--text", args.eval_text, "--seq-len",
                                         str(args.seq_len), "--max-windows", str(args.max_windows), "--json"]))["perplexity"]
            outs[label] = out
        blocks = []
        for a, b in zip(reports["single"]["blocks"], reports["ranks2"]["blocks"]):
            row = {"block": a["block"]}
            for k in ("final_loss", "last_step_loss", "rtn_loss"):
                if k in a and k in b:
                    row[k] = [a[k], b[k]]
                    row[k + "_rel"] = abs(b[k] / a[k] - 1) if a[k] else abs(b[k])
            blocks.append(row)
        worst = max(r.get("final_loss_rel", 0) for r in blocks)
        results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}   # (read late: runs may overlap)
        results[key] = {
            "date": time.strftime("%Y-%m-%d"), "threads_per_rank": 1, "perplexity": ppl,
            "perplexity_rel": abs(ppl["ranks2"] / ppl["single"] - 1), "worst_final_loss_rel": worst,
            "identical_checkpoints": same_files(outs["single"], outs["ranks2"]), "seconds": seconds, "blocks": blocks,
        }
        r = results[key]
        print(f"{key}: perplexity {ppl['single']:.4f} single, {ppl['ranks2']:.4f} on 2 ranks "
              f"({r['perplexity_rel']:.2e} apart); worst block final loss {worst:.2e} apart; "
              f"checkpoints {'identical' if r['identical_checkpoints'] else 'differ'}", flush=True)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
