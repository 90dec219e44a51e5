"""Shared fixtures: the MEDDOCAN location, a small synthetic BRAT corpus, tiny models, local Ray,
and a two-node Ray cluster on this one machine."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MEDDOCAN = Path(os.environ.get("SDEID_MEDDOCAN", ROOT.parent / "shared" / "data" / "meddocan"))

needs_meddocan = pytest.mark.skipif(
    not (MEDDOCAN / "train").is_dir(),
    reason=f"MEDDOCAN corpus not found at {MEDDOCAN} (set SDEID_MEDDOCAN to its folder)",
)

# A few short notes in MEDDOCAN's shape; the PHI values are invented.
TOY_NOTES = [
    (
        "Datos del paciente.\nNombre: Ana García López.\nEdad: 40 años.\n"
        "Ingresa en el Hospital San Rafael de Madrid el 12/03/2019.\n",
        [
            ("Ana García López", "NOMBRE_SUJETO_ASISTENCIA"),
            ("40 años", "EDAD_SUJETO_ASISTENCIA"),
            ("Hospital San Rafael", "HOSPITAL"),
            ("Madrid", "TERRITORIO"),
            ("12/03/2019", "FECHAS"),
        ],
    ),
    (
        "Paciente varón de 63 años remitido desde Valencia por el Dr. Pedro Ruiz.\n",
        [
            ("varón", "SEXO_SUJETO_ASISTENCIA"),
            ("63 años", "EDAD_SUJETO_ASISTENCIA"),
            ("Valencia", "TERRITORIO"),
            ("Pedro Ruiz", "NOMBRE_PERSONAL_SANITARIO"),
        ],
    ),
    (
        "\ufeffMujer de 25 años natural de Perú, NHC 1234567, vista el 3 de mayo de 2018.\n",
        [
            ("Mujer", "SEXO_SUJETO_ASISTENCIA"),
            ("25 años", "EDAD_SUJETO_ASISTENCIA"),
            ("Perú", "PAIS"),
            ("1234567", "ID_SUJETO_ASISTENCIA"),
            ("3 de mayo de 2018", "FECHAS"),
        ],
    ),
]


def toy_notes(copies: int = 1):
    from sdeid.schema import Note, Span

    notes = []
    for c in range(copies):
        for i, (text, ents) in enumerate(TOY_NOTES):
            spans, pos = [], 0
            for surface, label in ents:
                start = text.index(surface, pos)
                spans.append(Span(start, start + len(surface), label))
                pos = start + len(surface)
            notes.append(Note(f"toy-{c}-{i}", text, spans, source="toy"))
    return notes


@pytest.fixture
def toy_brat(tmp_path):
    from sdeid.brat import write_brat

    return write_brat(toy_notes(), tmp_path / "toy")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    from sdeid.tiny_models import build_tiny_bert

    texts = [n.text for n in toy_notes()] * 20
    return build_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), texts, vocab_size=300)


@pytest.fixture(scope="session")
def generator(tmp_path_factory):
    """A tiny random Llama (vLLM-compatible head size) and a prompt corpus."""
    from sdeid.brat import write_brat
    from sdeid.causal_lm_init import build_llama

    root = tmp_path_factory.mktemp("gen")
    base = build_llama(root / "base", [n.text for n in toy_notes(copies=3)], "tiny")
    prompts = write_brat(toy_notes(), root / "prompts")
    return root, base, prompts


@pytest.fixture(scope="session")
def annotator(tmp_path_factory, tiny_bert):
    """A tiny NER model trained on the toy notes (`ner`), and 3 shards of toy notes to tag
    (`notes`)."""
    import json
    import subprocess
    import sys

    from sdeid.brat import write_brat
    from sdeid.shard_store import ShardStore

    root = tmp_path_factory.mktemp("annotate")
    train = write_brat(toy_notes(copies=8), root / "train")
    cfg = dict(
        train=str(train),
        dev=str(train),
        base_model=str(tiny_bert),
        epochs=10,
        batch_size=4,
        learning_rate=5e-3,
        warmup_ratio=0.0,
        max_length=24,
        stride=6,
        num_workers=1,
        cpus_per_worker=2,
        log_every=1000,
    )
    (root / "ner.yaml").write_text(json.dumps(cfg))
    run = subprocess.run(
        [sys.executable, "-m", "sdeid.cli", "ner", "train", "--config", str(root / "ner.yaml")]
        + ["--out", str(root / "ner")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    notes = toy_notes(copies=4)
    for note in notes:
        note.spans, note.annotator = [], ""
    store = ShardStore(root / "notes")
    for i in range(3):
        store.write(i, notes[i * 4 : (i + 1) * 4])
    return root


@pytest.fixture(scope="session")
def lm_corpus(tmp_path_factory):
    """Toy notes repeated with small variations: enough text for a few packed blocks."""
    from sdeid.brat import write_brat
    from sdeid.causal_lm_init import build_llama

    root = tmp_path_factory.mktemp("lm")
    train = write_brat(toy_notes(copies=30), root / "train")
    dev = write_brat(toy_notes(copies=2), root / "dev")
    base = build_llama(root / "base", [n.text for n in toy_notes(copies=3)], "tiny")
    return root, train, dev, base


@pytest.fixture(scope="session")
def local_ray():
    """A local Ray with 4 logical CPUs on this 2-core machine: fractional actors never deadlock."""
    import ray

    from sdeid.ray_env import runtime_env

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=True, runtime_env=runtime_env(True))
    yield ray
    ray.shutdown()


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


def run_ray(*args, env=None, timeout=120):
    return subprocess.run(
        [RAY, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
    )


@contextlib.contextmanager
def two_node_cluster():
    """A head and a second node on loopback, each with its own ports; yields the dashboard
    address for `ray job submit` and the environment (auth token) clients need."""
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
    head = run_ray(
        "start", "--head", f"--port={gcs}", f"--dashboard-port={dashboard}",
        "--dashboard-host=127.0.0.1", "--include-dashboard=true", f"--temp-dir={temp}",
        f"--ray-client-server-port={_free_port()}", *common, *_agent_ports(), env=env,
    )  # fmt: skip
    assert head.returncode == 0, head.stderr[-3000:]
    try:
        worker = run_ray("start", f"--address=127.0.0.1:{gcs}", *common, *_agent_ports(), env=env)
        assert worker.returncode == 0, worker.stderr[-3000:]
        deadline = time.time() + 60
        while time.time() < deadline:
            status = run_ray("status", f"--address=127.0.0.1:{gcs}", env=env)
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
