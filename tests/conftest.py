"""Shared fixtures: the MEDDOCAN location, a small synthetic BRAT corpus, tiny models, local Ray,
and a two-node Ray cluster on this one machine."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sdeid import local_cluster

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


def run_ray(*args, env=None, timeout=120):
    return local_cluster.run_ray(*args, env=env, timeout=timeout, cwd=ROOT)


@contextlib.contextmanager
def two_node_cluster():
    """sdeid.local_cluster's two nodes, started in the repository (where a submitted job's
    entrypoint runs); yields the dashboard address for `ray job submit` and the environment
    (auth token) clients need."""
    with local_cluster.two_node_cluster(cwd=ROOT) as cluster:
        yield cluster.dashboard, cluster.env
