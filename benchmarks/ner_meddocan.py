"""Gold NER on MEDDOCAN: train with the README's command, then record the numbers.

    .venv/bin/python benchmarks/ner_meddocan.py            # trains (about 55 min on 2 cores)
    .venv/bin/python benchmarks/ner_meddocan.py --no-train # summarise an existing run folder

Writes benchmarks/results/ner_meddocan.json and ner_meddocan.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMAND = [
    "sdeid",
    "ner",
    "train",
    "--config",
    "configs/ner-meddocan-cpu.yaml",
    "--out",
    "runs/ner-meddocan",
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-train", action="store_true")
    args = ap.parse_args()
    run_dir = ROOT / COMMAND[-1]
    wall = None
    if not args.no_train:
        t0 = time.time()
        subprocess.run(
            [str(Path(sys.executable).parent / "sdeid"), *COMMAND[1:]], cwd=ROOT, check=True
        )
        wall = time.time() - t0
    m = json.loads((run_dir / "metrics.json").read_text())
    test = m["test"]
    result = {
        "command": " ".join(COMMAND),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
        "command_wall_s": wall,
        "train_wall_s": m["train_wall_s"],
        "best_epoch": m["best_epoch"],
        "dev_strict_f1_by_epoch": [round(e["dev_f1"], 4) for e in m["epochs"]],
        "test_strict": test["strict"],
        "test_token": test["token"],
        "test_per_label": test["per_label"],
        "train_tokens_per_s": m["train_tokens_per_s"],
        "inference_docs_per_s": m["inference_docs_per_s"],
        "peak_rss_mb": {"train_worker": m["worker_peak_rss_mb"], "driver": m["driver_peak_rss_mb"]},
    }
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "ner_meddocan.json").write_text(json.dumps(result, indent=2))
    s, t = test["strict"], test["token"]
    lines = [
        "# Gold NER on MEDDOCAN (all-MiniLM-L6-v2, 2 CPU cores)",
        "",
        f"Command: `{result['command']}`",
        "",
        "| metric | value |",
        "|---|---|",
        f"| test strict entity micro P / R / F1 | {s['precision']:.4f} / {s['recall']:.4f} / "
        f"**{s['f1']:.4f}** |",
        f"| test token-level F1 | {t['f1']:.4f} |",
        f"| best epoch (dev strict F1) | {m['best_epoch']} ({m['best_dev_f1']:.4f}) |",
        f"| dev strict F1 by epoch | {', '.join(f'{x:.3f}' for x in result['dev_strict_f1_by_epoch'])} |",
        f"| training wall time | {m['train_wall_s'] / 60:.1f} min |",
        f"| training throughput | {m['train_tokens_per_s']:.0f} subword tokens/s |",
        f"| inference | {m['inference_docs_per_s']:.2f} documents/s |",
        f"| peak RSS (train worker / driver) | {m['worker_peak_rss_mb']:.0f} / "
        f"{m['driver_peak_rss_mb']:.0f} MB |",
        "",
        "## Test, strict, per label",
        "",
        "| label | precision | recall | F1 | gold |",
        "|---|---|---|---|---|",
    ]
    for lab, v in sorted(test["per_label"].items(), key=lambda kv: -kv[1]["gold"]):
        lines.append(
            f"| {lab} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | {v['gold']} |"
        )
    (out / "ner_meddocan.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
