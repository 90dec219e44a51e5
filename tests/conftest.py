"""Shared fixtures: the MEDDOCAN location, a small synthetic BRAT corpus, tiny models, local Ray."""

from __future__ import annotations

import os
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
def local_ray():
    """A local Ray with 4 logical CPUs on this 2-core machine: fractional actors never deadlock."""
    import ray

    ray.init(
        num_cpus=4,
        include_dashboard=False,
        log_to_driver=True,
        runtime_env={"env_vars": {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}},
    )
    yield ray
    ray.shutdown()
