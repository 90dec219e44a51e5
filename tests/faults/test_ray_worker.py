"""A Ray worker process killed mid-task: the annotator actor dies while it tags a batch. Ray
restarts the actor and retries the batch; the job ends with every note exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from fault_log import ROOT, record

from sdeid.shard_store import ShardStore


def _actor_pids():
    """Processes whose title (Ray sets it to the actor's class) names the annotator."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if cmd.startswith("ray::") and "NerAnnotator" in cmd:
            pids.append(int(pid))
    return pids


def test_annotator_actor_killed_mid_task_is_retried(annotator, tmp_path):
    from test_kill import _long_notes

    notes = tmp_path / "notes"
    store = ShardStore(notes)
    batch = _long_notes(40)
    for i in range(20):
        store.write(i, batch[2 * i : 2 * i + 2])
    cfg = tmp_path / "ann.yaml"
    cfg.write_text(
        json.dumps(
            dict(
                notes=str(notes),
                model=str(annotator / "ner"),
                annotators=1,
                cpus_per_annotator=2,
                batch_size=2,
                max_length=24,
                stride=6,
            )
        )
    )
    out = tmp_path / "ann"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sdeid.cli", "annotate", "--config", str(cfg), "--out", str(out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    killed, deadline = [], time.time() + 300
    while not killed and proc.poll() is None and time.time() < deadline:
        if len(list((out / "shards").glob("_done/*.json"))) >= 2:
            for pid in _actor_pids():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        time.sleep(0.05)
    stdout, stderr = proc.communicate(timeout=600)
    assert killed, "the annotator actor was not found running"
    assert proc.returncode == 0, stderr[-3000:]
    ids = ShardStore(out / "shards").read_table(columns=["doc_id"])["doc_id"].to_pylist()
    want = sorted(n.doc_id for n in batch)
    lost, dup = len(set(want) - set(ids)), len(ids) - len(set(ids))
    assert (lost, dup) == (0, 0) and sorted(ids) == want
    record(
        "annotator actor process (Ray worker) SIGKILLed mid-run",
        lost,
        dup,
        "killed after 2/20 shards; Ray restarted the actor and the job went on: exit 0, "
        "40/40 notes once",
    )
