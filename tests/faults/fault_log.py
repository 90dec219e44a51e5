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
import re
import subprocess
import sys
import time
from pathlib import Path

from sdeid.kill_job import kill_session

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
    """Start `sdeid ARGS` in its own session, wait until `ready()` (then `delay` more
    seconds), and SIGKILL the whole session: the driver and every Ray process it started."""
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
    kill_session(proc.pid)
    proc.wait()
    assert not finished, "the job ended before the kill could land"
    assert ready(), "the job never reached the kill point"


def registered_metric(snapshot, key):
    """The `key` metric of the latest checkpoint Ray Train registered (its
    checkpoint_manager_snapshot.json), or -1 before any. A checkpoint_* folder appears before
    Ray Train registers it; a kill in between leaves nothing to resume from."""
    try:
        return json.loads(snapshot.read_text())["latest_checkpoint_result"]["metrics"][key]
    except (OSError, ValueError, KeyError, TypeError):
        return -1


def record(fault: str, lost, duplicated, message: str) -> None:
    path = os.environ.get("SDEID_FAULT_LOG")
    if not path:
        return
    # The table is committed: name paths from the repository and pytest's temporary folder.
    message = re.sub(r"\S*/pytest-of-[^/]+/pytest-\d+/", "$TMP/", message.replace(f"{ROOT}/", ""))
    row = dict(fault=fault, lost=lost, duplicated=duplicated, message=message, seed=SEED)
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def first_error_line(stderr: str) -> str:
    lines = [x for x in stderr.splitlines() if x.startswith("sdeid: ")]
    return lines[-1] if lines else stderr.strip().splitlines()[-1]


def lost_and_duplicated(ids, want) -> tuple[int, int]:
    """Notes of `want` missing from `ids`, and notes in `ids` more than once."""
    return len(set(want) - set(ids)), len(ids) - len(set(ids))


def generate_config(generator, tmp_path, **over):
    """A 60-note hf-backend generate config on the tiny Llama: 3 prompts x 20 samples."""
    _, base, prompts = generator
    cfg = dict(
        model=str(base),
        prompts_from=str(prompts),
        samples_per_prompt=20,
        max_new_tokens=24,
        notes_per_shard=4,
        min_chars=1,
        backend="hf",
        hf_batch_size=2,
    )
    cfg.update(over)
    path = tmp_path / "gen.yaml"
    path.write_text(json.dumps(cfg))
    return path


GENERATED_IDS = sorted(f"toy-0-{i}-s{s:04d}" for i in range(3) for s in range(20))


def annotate_job(annotator, tmp_path, shards: int):
    """Shards of 2 long notes each (many windows: slow enough to stop mid-run) and a config
    with one annotator actor; returns (config path, the notes' ids)."""
    from conftest import toy_notes

    from sdeid.shard_store import ShardStore

    notes = toy_notes(copies=2 * shards)[: 2 * shards]
    for i, note in enumerate(notes):
        note.text, note.spans, note.annotator = note.text * 12, [], ""
        note.doc_id = f"syn-{i:03d}"
    store = ShardStore(tmp_path / "notes")
    for i in range(shards):
        store.write(i, notes[2 * i : 2 * i + 2])
    cfg = dict(
        notes=str(store.folder),
        model=str(annotator / "ner"),
        annotators=1,
        cpus_per_annotator=2,
        batch_size=2,
        max_length=24,
        stride=6,
    )
    path = tmp_path / "ann.yaml"
    path.write_text(json.dumps(cfg))
    return path, sorted(n.doc_id for n in notes)
