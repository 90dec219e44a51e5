"""The fault campaign (tests/faults) run once, its outcomes rendered as a table.

    .venv/bin/python benchmarks/faults.py [--seed N]   # writes benchmarks/results/faults.md

Every test in tests/faults records one row (fault or bad input, notes lost, notes duplicated,
message); the seed draws the random kill points (the same seed replays the same points).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "faults.jsonl"
        env = dict(os.environ, SDEID_FAULT_LOG=str(log), SDEID_FAULT_SEED=str(args.seed))
        t0 = time.time()
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:warnings",
                "-m",
                "slow or not slow",
                "tests/faults",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        wall = time.time() - t0
        rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else "(no output)"
    lines = [
        "# Fault campaign",
        "",
        f"Made by `.venv/bin/python benchmarks/faults.py --seed {args.seed}` "
        f"(pytest tests/faults: {summary}; {wall / 60:.1f} min on this machine).",
        "",
        "| fault or input | notes lost | notes duplicated | outcome / message |",
        "|---|---|---|---|",
    ]
    for r in rows:
        message = r["message"].replace("|", "\\|")
        lines.append(f"| {r['fault']} | {r['lost']} | {r['duplicated']} | {message} |")
    out = ROOT / "benchmarks" / "results" / "faults.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
