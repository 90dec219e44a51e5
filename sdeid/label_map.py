"""Label maps: a corpus's PHI labels renamed to a run's label set, or dropped.

A map is a YAML file with the run's label set and, for each corpus label that differs, what it
becomes (another label, or `drop`):

    labels: [NAME, PROFESSION, LOCATION, AGE, DATE, CONTACT, ID]
    map:
      NOMBRE_SUJETO_ASISTENCIA: NAME
      SEXO_SUJETO_ASISTENCIA: drop

A label the map does not name passes through unchanged, so a label already in the run's set
stays itself and applying a map twice changes nothing; a label that ends up outside the set is
refused with the corpus check below. Every command that reads a corpus takes a map
(`read_corpus(..., label_map=...)`, `--label-map`, the `label_map` setting of `ner train`).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass

from sdeid.config import ConfigError, read_yaml
from sdeid.schema import NoteError

DROP = "drop"


@dataclass(frozen=True)
class LabelMap:
    labels: tuple[str, ...]
    """The run's label set: what every mapped corpus is checked against."""
    mapping: dict
    """Corpus label -> run label, or DROP."""
    path: str = ""


def load_label_map(path) -> LabelMap:
    values = read_yaml(path)
    where = str(path)
    if not isinstance(values, dict) or set(values) != {"labels", "map"}:
        raise ConfigError(f"{where}: a label map has exactly two keys, labels and map")
    labels, mapping = values["labels"], values["map"]
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise ConfigError(f"{where}: labels: expected a non-empty list of label names")
    if len(set(labels)) != len(labels) or DROP in labels:
        raise ConfigError(f"{where}: labels: names must be distinct and not {DROP!r}")
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where}: map: expected a mapping of corpus label: run label or drop")
    for source, target in mapping.items():
        if not isinstance(source, str) or not isinstance(target, str):
            raise ConfigError(f"{where}: map: {source!r}: expected text on both sides")
        if target != DROP and target not in labels:
            raise ConfigError(
                f"{where}: map: {source}: {target!r} is not in labels and is not {DROP!r}"
            )
        if source in labels and target != source:
            # Else applying the map to an already mapped corpus would change it again.
            raise ConfigError(f"{where}: map: {source} is a run label and must map to itself")
    return LabelMap(tuple(labels), dict(mapping), where)


def apply_label_map(notes, label_map: LabelMap) -> list:
    """The notes with every span's label mapped; dropped spans are removed."""
    out = []
    for note in notes:
        spans = []
        for span in note.spans:
            target = label_map.mapping.get(span.label, span.label)
            if target != DROP:
                spans.append(dataclasses.replace(span, label=target))
        out.append(dataclasses.replace(note, spans=sorted(spans)))
    return out


def check_labels(notes, labels, where: str) -> None:
    """Refuse a corpus with labels outside `labels`, naming all of them with their counts."""
    unknown = Counter(s.label for n in notes for s in n.spans if s.label not in labels)
    if unknown:
        listed = ", ".join(f"{label} ({n})" for label, n in unknown.most_common())
        raise NoteError(
            f"{where}: labels the label set does not know: {listed}; map them to known "
            "labels or to drop with a label map"
        )
