"""What the Ray dashboard would cost the embedded local Ray: start-up, memory, idle CPU.

    .venv/bin/python benchmarks/ray_dashboard.py [--repeats 3] [--idle-s 30]

The local Ray that every sdeid job starts by default runs without the dashboard. The dashboard
serves the State API, which Ray Train's placement-group cleaner polls; without it the cleaner
logged a warning every second, now muted in the local Ray's workers (sdeid/ray_env.py). This
measures the other way out: a fresh `ray.init(num_cpus=4)` per run, dashboard off and on,
alternating; ray.init's wall time, then after 10 s of settling the resident memory of Ray's
processes and their CPU time over `idle_s` seconds of idling (as % of one core), and whether
the State API answers. Medians of the repeats. Writes benchmarks/results/ray_dashboard.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "ray_dashboard.json"

# Run in a fresh interpreter per measurement, so that each one starts its own Ray.
CHILD = r"""
import json, sys, time
import psutil, ray

dashboard, idle_s = sys.argv[1] == "on", float(sys.argv[2])
t = time.perf_counter()
ray.init(num_cpus=4, include_dashboard=dashboard)
init_s = time.perf_counter() - t
time.sleep(10)
me = psutil.Process()
procs = me.children(recursive=True)
cpu = lambda: sum(p.cpu_times().user + p.cpu_times().system for p in procs if p.is_running())
before = cpu()
time.sleep(idle_s)
idle_cpu = (cpu() - before) / idle_s * 100
rss_mb = sum(p.memory_info().rss for p in procs if p.is_running()) / 2**20
try:
    from ray.util.state import list_actors

    list_actors(timeout=5)
    state_api = "answers"
except Exception as e:
    state_api = type(e).__name__
ray.shutdown()
print(json.dumps(dict(init_s=init_s, idle_cpu_pct=idle_cpu, rss_mb=rss_mb,
                      processes=len(procs), state_api=state_api)))
"""


def measure(setting: str, idle_s: float) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, setting, str(idle_s)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(repeats: int, idle_s: float):
    runs = {"off": [], "on": []}
    for _ in range(repeats):
        for setting in runs:
            runs[setting].append(measure(setting, idle_s))
            print(setting, runs[setting][-1], flush=True)
            time.sleep(5)  # let the last Ray's processes exit
    medians = {
        s: {k: statistics.median(r[k] for r in rows) for k in ("init_s", "idle_cpu_pct", "rss_mb")}
        for s, rows in runs.items()
    }
    result = {"idle_s": idle_s, "runs": runs, "medians": medians}
    print(json.dumps(medians, indent=2))
    RESULTS.write_text(json.dumps(result, indent=2))
    lines = [
        "# The Ray dashboard's cost on the local Ray (`benchmarks/ray_dashboard.py`)",
        "",
        f"A fresh `ray.init(num_cpus=4)` per run on 2 CPU cores, dashboard off and on, "
        f"alternating; medians of {repeats} (each run's value in brackets).",
        "",
        "| dashboard | ray.init s | Ray's RSS MB | idle CPU, % of a core | processes | State API |",
        "|---|---|---|---|---|---|",
    ]
    for s, rows in runs.items():
        cells = [s]
        for k, digits in (("init_s", 2), ("rss_mb", 0), ("idle_cpu_pct", 1)):
            each = ", ".join(f"{r[k]:.{digits}f}" for r in rows)
            cells.append(f"{medians[s][k]:.{digits}f} ({each})")
        cells += [str(rows[0]["processes"]), rows[0]["state_api"]]
        lines.append("| " + " | ".join(cells) + " |")
    RESULTS.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--idle-s", type=float, default=30.0)
    args = ap.parse_args()
    main(args.repeats, args.idle_s)
