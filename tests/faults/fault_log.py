"""Helpers for the fault campaign: run the real CLI, kill it at a random point, record outcomes.

Each test records one row (fault, notes lost, notes duplicated, message). With SDEID_FAULT_LOG
set to a file, rows are appended there as JSON lines; `benchmarks/faults.py` runs the campaign
that way and renders the table. The random kill points come from SDEID_FAULT_SEED (default 0),
printed in each row so a failing draw can be replayed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("SDEID_FAULT_SEED", "0"))


def rng(name: str) -> random.Random:
    """One random stream per test, so adding a test does not move another's kill points."""
    return random.Random(f"{SEED}/{name}")


def sdeid(*args, timeout=900, **kw):
    env = {**os.environ, "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}
    return subprocess.run(
        [sys.executable, "-m", "sdeid.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=timeout,
        **kw,
    )


def kill_when(args, ready, delay: float = 0.0, timeout: float = 300) -> None:
    """Start `sdeid ARGS` in its own process group, wait until `ready()` (then `delay` more
    seconds), and SIGKILL the whole group: the driver and every Ray process it started."""
    env = {**os.environ, "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sdeid.cli", *map(str, args)],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + timeout
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(delay)
    finished = proc.poll() is not None
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    assert not finished, "the job ended before the kill could land"
    assert ready(), "the job never reached the kill point"


def record(fault: str, lost, duplicated, message: str) -> None:
    path = os.environ.get("SDEID_FAULT_LOG")
    if not path:
        return
    row = dict(fault=fault, lost=lost, duplicated=duplicated, message=message, seed=SEED)
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def first_error_line(stderr: str) -> str:
    lines = [x for x in stderr.splitlines() if x.startswith("sdeid: ")]
    return lines[-1] if lines else stderr.strip().splitlines()[-1]
