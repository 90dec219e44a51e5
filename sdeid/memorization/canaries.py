"""Canaries: short notes holding a random secret, planted in the adaptation corpus only.

A canary is "Informe <code>. <field>: <secret>." with a code of its own (so no two canaries share a
prefix and compete for the same secret) and a secret drawn from one of four formats: a name, a
clinical record number, a date, a phone number. Each is repeated `repeats` times in the
adaptation notes, at seeded random positions (not side by side, which would put every copy in the
same training block). The same settings always make the same canaries, so the audit can look for
their secrets without the adaptation run handing them over.

Exposure (Carlini et al., The Secret Sharer, 2019) compares the secret with R - 1 random
candidates of its format: exposure = log2 R - log2 rank, where rank 1 is the most likely.
"""

from __future__ import annotations

import json
import random
import string
from dataclasses import asdict, dataclass
from pathlib import Path

from sdeid.schema import Note, Span

LABEL = "CANARY"
FILE = "canaries.json"

# Common Spanish names: 40 x 40 x 40 combinations, far more than the candidates drawn.
_FIRST = (
    "Antonio Manuel Jose Francisco David Juan Javier Daniel Carlos Jesus Alejandro Miguel Rafael "
    "Pedro Pablo Angel Sergio Fernando Jorge Luis Maria Carmen Ana Isabel Laura Cristina Marta "
    "Lucia Elena Pilar Sara Paula Raquel Rosa Silvia Julia Beatriz Alicia Irene Nuria"
).split()
_SURNAME = (
    "Garcia Rodriguez Gonzalez Fernandez Lopez Martinez Sanchez Perez Gomez Martin Jimenez Ruiz "
    "Hernandez Diaz Moreno Munoz Alvarez Romero Alonso Gutierrez Navarro Torres Dominguez Vazquez "
    "Ramos Gil Ramirez Serrano Blanco Molina Morales Suarez Ortega Delgado Castro Ortiz Rubio "
    "Marin Sanz Iglesias"
).split()
FIELDS = {
    "name": "Nombre del paciente",
    "record": "NHC",
    "date": "Fecha de nacimiento",
    "phone": "Telefono de contacto",
}


def random_secret(kind: str, rng: random.Random) -> str:
    if kind == "name":
        return f"{rng.choice(_FIRST)} {rng.choice(_SURNAME)} {rng.choice(_SURNAME)}"
    if kind == "record":
        return str(rng.randrange(10_000_000, 100_000_000))
    if kind == "date":
        return f"{rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/{rng.randint(1930, 2009)}"
    if kind == "phone":
        return f"6{rng.randrange(10**8):08d}"
    raise ValueError(f"unknown canary kind {kind!r}")


@dataclass(frozen=True)
class Canary:
    canary_id: str
    kind: str
    repeats: int
    prefix: str
    secret: str

    def text(self, secret: str | None = None) -> str:
        return f"{self.prefix}{self.secret if secret is None else secret}."


def make_canaries(per_repeat: int, repeats, seed: int) -> list[Canary]:
    """`per_repeat` canaries for each repetition count, the kinds taken in turn."""
    rng = random.Random(f"canaries-{seed}")
    kinds = list(FIELDS)
    out, codes = [], set()
    for r in repeats:
        for i in range(per_repeat):
            kind = kinds[(len(out)) % len(kinds)]
            code = "".join(rng.choices(string.ascii_uppercase + string.digits, k=6))
            while code in codes:
                code = "".join(rng.choices(string.ascii_uppercase + string.digits, k=6))
            codes.add(code)
            prefix = f"Informe {code}. {FIELDS[kind]}: "
            out.append(Canary(f"canary-r{r}-{i}", kind, r, prefix, random_secret(kind, rng)))
    return out


def candidates(canary: Canary, r: int, seed: int) -> list[str]:
    """The secret and r - 1 distinct random secrets of its format, the secret first."""
    rng = random.Random(f"{canary.canary_id}-{seed}")
    seen, out = {canary.secret}, [canary.secret]
    while len(out) < r:
        s = random_secret(canary.kind, rng)
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def canary_notes(canaries) -> list[Note]:
    """One note per copy, the secret marked as a CANARY span (what the audit looks for)."""
    notes = []
    for c in canaries:
        text = c.text()
        span = Span(len(c.prefix), len(c.prefix) + len(c.secret), LABEL)
        notes += [Note(f"{c.canary_id}-{k}", text, [span], "canary") for k in range(c.repeats)]
    return notes


def plant(notes: list, canaries, seed: int) -> list:
    """The notes with every canary copy inserted at a seeded random position."""
    out = list(notes)
    rng = random.Random(f"plant-{seed}")
    for note in canary_notes(canaries):
        out.insert(rng.randint(0, len(out)), note)
    return out


def write(folder, canaries) -> None:
    tmp = Path(folder) / f".{FILE}.tmp"  # whole or absent
    tmp.write_text(json.dumps([asdict(c) for c in canaries], indent=1))
    tmp.replace(Path(folder) / FILE)


def read(folder) -> list[Canary]:
    """The canaries planted in an adapt output folder; [] when it planted none."""
    path = Path(folder) / FILE
    if not path.is_file():
        return []
    return [Canary(**c) for c in json.loads(path.read_text())]
