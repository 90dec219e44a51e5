"""A two-node Ray cluster on this one machine (a head and a second node on loopback, each with
its own ports), the smoke pipeline submitted to it with `ray job submit`, its output checked."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, toy_notes

RAY = str(Path(sys.executable).parent / "ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _agent_ports() -> list[str]:
    """Free ports for a node's agents. Their defaults are fixed (the dashboard agent listens on
    52365): with another Ray on the machine (a test's local Ray) the agent cannot bind, and the
    head then never has a job agent ("No available agent to submit job")."""
    names = (
        "dashboard-agent-listen",
        "dashboard-agent-grpc",
        "metrics-export",
        "runtime-env-agent",
    )
    return [f"--{name}-port={_free_port()}" for name in names]


def _ray(*args, env=None, timeout=120):
    return subprocess.run(
        [RAY, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
    )


@pytest.fixture
def two_nodes(tmp_path):
    gcs, dashboard = _free_port(), _free_port()
    # A short temp dir: Ray's socket paths must fit in 107 characters.
    temp = Path("/tmp") / f"sdeid-2n-{os.getpid()}"
    # Ray 2.60 clusters use token authentication: every node and client shows the token.
    env = dict(
        os.environ,
        RAY_TRAIN_ENABLE_PRINT_PATCH="0",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=secrets.token_hex(32),
    )
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=2", "--object-store-memory=300000000"]
    head = _ray(
        "start", "--head", f"--port={gcs}", f"--dashboard-port={dashboard}",
        "--dashboard-host=127.0.0.1", "--include-dashboard=true", f"--temp-dir={temp}",
        f"--ray-client-server-port={_free_port()}", *common, *_agent_ports(), env=env,
    )  # fmt: skip
    assert head.returncode == 0, head.stderr[-3000:]
    try:
        worker = _ray("start", f"--address=127.0.0.1:{gcs}", *common, *_agent_ports(), env=env)
        assert worker.returncode == 0, worker.stderr[-3000:]
        deadline = time.time() + 60
        while time.time() < deadline:
            status = _ray("status", f"--address=127.0.0.1:{gcs}", env=env)
            if status.stdout.count("node_") >= 2:
                break
            time.sleep(1)
        assert status.stdout.count("node_") >= 2, status.stdout
        yield f"http://127.0.0.1:{dashboard}", env
    finally:
        _stop_cluster(gcs, temp)


def _stop_cluster(gcs: int, temp: Path) -> None:
    """Kill this cluster's processes only (`ray stop` would stop every Ray on the machine):
    those whose command line names its GCS port or its temp dir."""
    import signal

    marks = (f"127.0.0.1:{gcs}", f"--gcs_server_port={gcs}", str(temp))
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if any(m in cmd for m in marks) and int(pid) != os.getpid():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass


def test_smoke_pipeline_as_a_ray_job_on_two_nodes(two_nodes, tiny_bert, tmp_path):
    from sdeid.brat import write_brat

    address, env = two_nodes
    corpus = {
        "train": write_brat(toy_notes(copies=4), tmp_path / "train"),
        "dev": write_brat(toy_notes(), tmp_path / "dev"),
        "test": write_brat(toy_notes(copies=2), tmp_path / "test"),
    }
    out = tmp_path / "run"
    sets = [f"{k}={v}" for k, v in corpus.items()]
    sets += [f"annotator.base_model={tiny_bert}", "annotator.train_fraction=1.0"]
    entry = [sys.executable, "jobs/run.py", "--config", "configs/smoke.yaml", "--out", str(out)]
    for s in sets:
        entry += ["--set", s]
    # The head's job agent starts a little after the head; until then a submission is refused
    # with "No available agent" and nothing is submitted, so retrying is safe.
    deadline = time.time() + 180  # seconds, even on a loaded 2-core machine
    while True:
        job = _ray(
            "job", "submit", f"--address={address}", "--submission-id=smoke-2n", "--",
            *entry, env=env, timeout=900,
        )  # fmt: skip  # waits for the job and streams its logs
        if "No available agent" not in job.stderr or time.time() > deadline:
            break
        time.sleep(3)
    assert job.returncode == 0, (job.stdout + job.stderr)[-5000:]
    assert "succeeded" in job.stdout.lower()
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["notes"] == 6 and 0 <= report["scores"]["synthetic"]["strict_f1"] <= 1
    plan = json.loads((out / "plan.json").read_text())
    assert [s["action"] for s in plan["stages"]] == ["run"] * len(plan["stages"])
    # The job's driver joined the two-node cluster instead of starting a Ray of its own.
    assert "Connecting to existing Ray cluster" in job.stdout + job.stderr
    (tmp_path / "job_output.txt").write_text(job.stdout)
