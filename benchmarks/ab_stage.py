"""One pipeline stage timed at two commits, interleaved (A B A B ...), on the same machine.

Each side is a checkout (a git worktree) with its own run folder whose upstream stages are hard
links to a finished run's (`--from-run`), so only the stage under test runs:

    git worktree add ../base 859c413
    python benchmarks/ab_stage.py --a ../base --b . --from-run runs/meddocan-cpu \
        --config configs/meddocan-cpu.yaml --stage adapt \
        --set adapt.max_steps=30 --set adapt.warmup_steps=5 --pairs 5

Interleaving matters on shared cores: their speed drifts by 10-20 % over an hour, more than the
differences this is meant to find. Compare the paired ratios (B over A within a pair) more than
the medians of each side. Writes benchmarks/results/ab_<stage>.json (or --out)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_once(checkout: Path, run_dir: Path, args) -> dict:
    """`sdeid run --only STAGE` in `checkout` (its code on PYTHONPATH); the stage's wall time
    and, where it records them, its training throughput."""
    sets = [x for s in args.set for x in ("--set", s)]
    cmd = [sys.executable, "-m", "sdeid.cli", "run", "--config", args.config]
    cmd += ["--out", str(run_dir), "--only", args.stage, *sets]
    env = dict(os.environ, PYTHONPATH=str(checkout))
    out = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{checkout}: sdeid run failed:\n{out.stderr[-3000:]}")
    line = next(x for x in out.stdout.splitlines() if x.split()[:1] == [args.stage])
    stage_dir = Path(line.split()[-1])
    result = {"wall_s": float(line.split()[2].rstrip("s"))}
    metrics = stage_dir / "metrics.json"
    if metrics.is_file():
        m = json.loads(metrics.read_text())
        for key in ("train_tokens_per_s", "trained_s"):
            if key in m:
                result[key] = m[key]
    return result


def paired_ratios(results: dict) -> dict:
    """B over A within each pair, per figure: the two runs of a pair ran minutes apart, so the
    cores' drift mostly cancels; the median and range over pairs, and in how many pairs B was
    worse (a longer time, a lower rate). Figures a side does not record are left out."""
    out = {}
    for f in results["a"][0]:
        pairs = zip(results["a"], results["b"], strict=True)
        r = [b[f] / a[f] for a, b in pairs if a.get(f) and b.get(f)]
        if r:
            worse = sum(x < 1 if f.endswith("per_s") else x > 1 for x in r)
            out[f] = {
                "median": round(statistics.median(r), 3),
                "min": round(min(r), 3),
                "max": round(max(r), 3),
                "b_worse_in": f"{worse} of {len(r)}",
            }
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--a", required=True, help="checkout A (e.g. the baseline commit)")
    p.add_argument("--b", required=True, help="checkout B")
    p.add_argument("--from-run", required=True, help="a finished run folder to link stages from")
    p.add_argument("--config", required=True, help="pipeline config, relative to each checkout")
    p.add_argument("--stage", required=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--out", help="results JSON (default benchmarks/results/ab_<stage>.json)")
    args = p.parse_args()

    sides = {"a": Path(args.a).resolve(), "b": Path(args.b).resolve()}
    commits = {
        k: subprocess.run(
            ["git", "rev-parse", "--short=7", "HEAD"], cwd=v, capture_output=True, text=True
        ).stdout.strip()
        for k, v in sides.items()
    }
    source = Path(args.from_run).resolve() / "stages"
    runs = {}
    for k, checkout in sides.items():
        run_dir = checkout / "runs" / f"ab-{args.stage}-{k}"
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        subprocess.run(["cp", "-al", str(source), str(run_dir / "stages")], check=True)
        runs[k] = run_dir
    results = {"a": [], "b": []}
    for i in range(args.pairs):
        for k in ("a", "b"):
            r = run_once(sides[k], runs[k], args)
            results[k].append(r)
            print(f"pair {i + 1} {k} ({commits[k]}): {r}", flush=True)
    summary = {
        k: {f: statistics.median(r[f] for r in results[k]) for f in results[k][0]} for k in results
    }
    report = {
        "stage": args.stage,
        "config": args.config,
        "set": args.set,
        "commits": commits,
        "runs": results,
        "median": summary,
        "paired": paired_ratios(results),
    }
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"ab_{args.stage}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"median": summary, "paired": report["paired"]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
