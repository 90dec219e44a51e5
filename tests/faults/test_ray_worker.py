"""A Ray worker process killed mid-task: the annotator actor dies while it tags a batch. Ray
restarts the actor and retries the batch; the job ends with every note exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from fault_log import ROOT, annotate_job, lost_and_duplicated, record

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
    cfg, want = annotate_job(annotator, tmp_path, shards=20)
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
    lost, dup = lost_and_duplicated(ids, want)
    assert (lost, dup) == (0, 0) and sorted(ids) == want
    record(
        "annotator actor process (Ray worker) SIGKILLed mid-run",
        lost,
        dup,
        "killed after 2/20 shards; Ray restarted the actor and the job went on: exit 0, "
        "40/40 notes once",
    )
