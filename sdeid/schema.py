"""The note record every stage reads and writes, and its one validation function.

A note is a document id, its text, and PHI spans given as character offsets into that text
(Python string indices, so a leading U+FEFF counts as one character, as in MEDDOCAN).
Provenance says where the text came from (`source`) and who drew the spans (`annotator`:
"gold" for human annotation, otherwise a model fingerprint).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

from sdeid.errors import SdeidError

SCHEMA_VERSION = 1

# The 22 PHI labels that occur in MEDDOCAN (see ../shared/data/meddocan/README.md).
MEDDOCAN_LABELS = (
    "TERRITORIO",
    "FECHAS",
    "EDAD_SUJETO_ASISTENCIA",
    "NOMBRE_SUJETO_ASISTENCIA",
    "NOMBRE_PERSONAL_SANITARIO",
    "SEXO_SUJETO_ASISTENCIA",
    "CALLE",
    "PAIS",
    "ID_SUJETO_ASISTENCIA",
    "CORREO_ELECTRONICO",
    "ID_TITULACION_PERSONAL_SANITARIO",
    "ID_ASEGURAMIENTO",
    "HOSPITAL",
    "FAMILIARES_SUJETO_ASISTENCIA",
    "INSTITUCION",
    "ID_CONTACTO_ASISTENCIAL",
    "NUMERO_TELEFONO",
    "PROFESION",
    "NUMERO_FAX",
    "OTROS_SUJETO_ASISTENCIA",
    "CENTRO_SALUD",
    "ID_EMPLEO_PERSONAL_SANITARIO",
)


class NoteError(SdeidError):
    """A note, or the file it came from, is not valid. The message says where and what."""


@dataclass(frozen=True, order=True)
class Span:
    start: int
    end: int
    label: str
    score: float | None = None


# The order Span's own comparisons give, as a sort key read in C: the dataclass compares in
# Python, and sorting an annotated note's spans that way showed in the annotator's profile
# (benchmarks/annotate_cpu.py).
span_order = operator.attrgetter("start", "end", "label", "score")


@dataclass
class Note:
    doc_id: str
    text: str
    spans: list[Span] = field(default_factory=list)
    source: str = ""
    annotator: str = "gold"


def arrow_schema():
    """The Parquet/Arrow schema of a note table. Extra columns may follow these."""
    import pyarrow as pa

    span = pa.struct(
        [
            pa.field("start", pa.int32(), nullable=False),
            pa.field("end", pa.int32(), nullable=False),
            pa.field("label", pa.string(), nullable=False),
            pa.field("score", pa.float32()),
        ]
    )
    return pa.schema(
        [
            pa.field("doc_id", pa.string(), nullable=False),
            pa.field("text", pa.string(), nullable=False),
            pa.field("spans", pa.list_(span), nullable=False),
            pa.field("source", pa.string()),
            pa.field("annotator", pa.string()),
        ],
        metadata={"sdeid_schema_version": str(SCHEMA_VERSION)},
    )


NOTE_COLUMNS = ("doc_id", "text", "spans", "source", "annotator")


def validate_note(note: Note, labels=None, allow_overlap: bool = False, where: str = "") -> None:
    """Raise NoteError unless every span lies inside the text with start < end, carries a
    known label (when `labels` is given) and, unless `allow_overlap`, overlaps no other span.

    Overlaps are forbidden by default because BIO tagging cannot represent them; a corpus
    that needs them must say so. `where` prefixes the message (a file or row).
    """
    prefix = f"{where or note.doc_id}: "
    if not note.doc_id:
        raise NoteError(prefix + "empty doc_id")
    n = len(note.text)
    for span in note.spans:
        if not 0 <= span.start < span.end <= n:
            raise NoteError(
                prefix + f"span {span.label} [{span.start}, {span.end}) is not inside the "
                f"text of {n} characters (needs 0 <= start < end <= {n})"
            )
        if labels is not None and span.label not in labels:
            raise NoteError(prefix + f"unknown label {span.label!r} at [{span.start}, {span.end})")
    if not allow_overlap:
        ordered = sorted(note.spans, key=span_order)
        for a, b in zip(ordered, ordered[1:], strict=False):
            if b.start < a.end:
                raise NoteError(
                    prefix + f"spans [{a.start}, {a.end}) {a.label} and [{b.start}, {b.end}) "
                    f"{b.label} overlap (overlapping spans are not allowed)"
                )
