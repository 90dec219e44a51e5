"""A two-node Ray cluster on this one machine: a head and a second node on loopback.

The tests submit the whole method to it as a Ray job, and `benchmarks/scale.py` runs stages as
its clients, to show work spreading over nodes without a real cluster. Nothing in a stage uses
it: a stage joins whatever cluster RAY_ADDRESS names.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

RAY = str(Path(sys.executable).parent / "ray")


@dataclass
class Cluster:
    address: str  # the GCS, for ray.init and RAY_ADDRESS
    dashboard: str  # for `ray job submit` and the state API
    env: dict  # what a client's environment needs (the auth token)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ray(*args, env=None, timeout=120, cores: str | None = None, cwd=None):
    """The `ray` command line; pinned to `cores` (taskset's list) when given."""
    pin = ["taskset", "-c", cores] if cores else []
    cmd = [*pin, RAY, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)


def _agent_ports() -> list[str]:
    """Free ports for a node's agents. Their defaults are fixed (the dashboard agent listens on
    52365): with another Ray on the machine (a test's local Ray, or the other node) the agent
    cannot bind, and the head then never has a job agent ("No available agent to submit job")."""
    names = (
        "dashboard-agent-listen",
        "dashboard-agent-grpc",
        "metrics-export",
        "runtime-env-agent",
    )
    return [f"--{name}-port={free_port()}" for name in names]


@contextlib.contextmanager
def two_node_cluster(cpus_per_node=2, object_store_bytes=300_000_000, cores=None, cwd=None):
    """Start the two nodes, each with its own ports, wait until both are up, yield a Cluster,
    and kill the cluster's processes at the end. `cores` pins every Ray process to them; `cwd`
    is where they start, and so where a submitted job's entrypoint runs."""
    gcs, dashboard = free_port(), free_port()
    # A short temp dir: Ray's socket paths must fit in 107 characters.
    temp = Path("/tmp") / f"sdeid-2n-{os.getpid()}"
    # Ray 2.60 clusters use token authentication: every node and client shows the token.
    env = dict(
        os.environ,
        RAY_TRAIN_ENABLE_PRINT_PATCH="0",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=secrets.token_hex(32),
    )
    common = [
        "--node-ip-address=127.0.0.1",
        f"--num-cpus={cpus_per_node}",
        f"--object-store-memory={object_store_bytes}",
    ]
    try:
        head = run_ray(
            "start", "--head", f"--port={gcs}", f"--dashboard-port={dashboard}",
            "--dashboard-host=127.0.0.1", "--include-dashboard=true", f"--temp-dir={temp}",
            f"--ray-client-server-port={free_port()}", *common, *_agent_ports(),
            env=env, cores=cores, cwd=cwd,
        )  # fmt: skip
        if head.returncode != 0:
            raise RuntimeError(f"ray start --head failed:\n{head.stderr[-3000:]}")
        second = run_ray(
            "start", f"--address=127.0.0.1:{gcs}", *common, *_agent_ports(),
            env=env, cores=cores, cwd=cwd,
        )  # fmt: skip
        if second.returncode != 0:
            raise RuntimeError(f"ray start (second node) failed:\n{second.stderr[-3000:]}")
        deadline = time.time() + 60
        while (status := run_ray("status", f"--address=127.0.0.1:{gcs}", env=env)).stdout.count(
            "node_"
        ) < 2:
            if time.time() > deadline:
                raise RuntimeError(f"the second node never joined:\n{status.stdout}")
            time.sleep(1)
        yield Cluster(f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dashboard}", env)
    finally:
        stop_cluster(gcs, temp)


def stop_cluster(gcs: int, temp: Path) -> None:
    """Kill this cluster's processes only (`ray stop` would stop every Ray on the machine):
    those whose command line names its GCS port or its temp dir."""
    marks = (f"127.0.0.1:{gcs}", f"--gcs_server_port={gcs}", str(temp))
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if any(m in cmd for m in marks) and int(pid) != os.getpid():
            with contextlib.suppress(OSError):
                os.kill(int(pid), signal.SIGKILL)
