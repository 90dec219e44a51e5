"""NER training speed: float32 vs bfloat16 mixed precision (`precision: bf16`), same loop and data.

    .venv/bin/python benchmarks/ner_precision.py [--repeats 3] [--fraction 0.25]

Runs the real `sdeid ner train` command with the MEDDOCAN CPU recipe for one epoch on a share
of train (dev held out of train, so the per-epoch dev scoring stays short), alternating the two
settings, and reads the training loop's own subword tokens/s from metrics.json (the epoch's
training time only: no start-up, no dev scoring). Medians of the repeats. Quality is not measured
here: one epoch on a share of train says nothing about the finished model; the full recipe's
test F1 in both settings is in the README. Writes benchmarks/results/ner_precision.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from md_table import rate_rows  # benchmarks/, beside this script

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "ner_precision.json"
WORK = ROOT / "runs" / "bench-ner-precision"
SETTINGS = {"float32": "precision=fp32", "bfloat16_autocast": "precision=bf16"}


def tokens_per_s(setting: str, fraction: float) -> float:
    out = WORK / "run"
    shutil.rmtree(out, ignore_errors=True)
    overrides = [SETTINGS[setting], "epochs=1", f"train_fraction={fraction}", "dev=null"]
    overrides += ["test=null", "log_every=1000"]
    cmd = [str(Path(sys.executable).parent / "sdeid"), "ner", "train"]
    cmd += ["--config", "configs/ner-meddocan-cpu.yaml", "--out", str(out)]
    for o in overrides:
        cmd += ["--set", o]
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "metrics.json").read_text())["epochs"][0]["train_tokens_per_s"]


def main(repeats: int, fraction: float):
    WORK.mkdir(parents=True, exist_ok=True)
    rows = {name: [] for name in SETTINGS}
    for _ in range(repeats):
        for name in SETTINGS:
            rows[name].append(tokens_per_s(name, fraction))
            print(name, round(rows[name][-1]), flush=True)
    result = {
        "recipe": "configs/ner-meddocan-cpu.yaml",
        "train_fraction": fraction,
        "tokens_per_s": rows,
        "median_tokens_per_s": {k: statistics.median(v) for k, v in rows.items()},
    }
    print(json.dumps(result, indent=2))
    RESULTS.write_text(json.dumps(result, indent=2))
    lines = [
        "# NER training speed by precision (`benchmarks/ner_precision.py`)",
        "",
        f"`sdeid ner train` with configs/ner-meddocan-cpu.yaml, one epoch on {fraction:.0%} of "
        f"train, 2 CPU cores; the loop's subword tokens/s, median of {repeats} repeats.",
        "",
        *rate_rows(rows, "float32", "tokens/s", 0),
    ]
    RESULTS.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--fraction", type=float, default=0.25)
    args = ap.parse_args()
    main(args.repeats, args.fraction)
