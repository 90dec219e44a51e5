"""BRAT standoff folders <-> notes.

Each document is NAME.txt (UTF-8) with NAME.ann, whose text-bound lines are
`T<n>\\t<LABEL> <start> <end>[;<start> <end>...]\\t<surface>`. Offsets count a leading byte-order
mark as one character, as MEDDOCAN's do, so the text is decoded with plain utf-8, never utf-8-sig.

The rest of standoff is read and set aside, since a de-identification corpus needs only its
spans: annotator notes (`#`, what the brat editor writes for a comment), attributes (`A`, `M`),
relations (`R`), events (`E`), normalizations (`N`) and equivalences (`*`), counted by kind in one
warning per corpus. A discontinuous span (`0 5;7 10`) becomes one span per fragment with the same
label, so every PHI character stays tagged (`discontinuous="refuse"` refuses it instead).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path

from sdeid.label_map import check_labels
from sdeid.schema import Note, NoteError, Span, validate_note
from sdeid.text_folder import check_writable, checked_notes, write_text_files

_SPAN_LINE = re.compile(r"^(T\d+)\t(\S+) (\d+ \d+(?:;\d+ \d+)*)\t(.*)$")
# Standoff lines that carry no text-bound span, by their first character.
SET_ASIDE = {
    "#": "annotator notes",
    "A": "attributes",
    "M": "attributes",
    "R": "relations",
    "E": "events",
    "N": "normalizations",
    "*": "equivalences",
}
log = logging.getLogger(__name__)


def read_brat(
    folder, labels=None, allow_overlap: bool = False, discontinuous: str = "split"
) -> list[Note]:
    """Read every NAME.txt/NAME.ann pair in `folder`, sorted by name, and validate them.

    Labels outside `labels` are refused for the whole corpus at once, with their counts."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NoteError(f"{folder}: not a folder")
    txts = {p.stem for p in folder.glob("*.txt")}
    anns = {p.stem for p in folder.glob("*.ann")}
    if not txts and not anns:
        raise NoteError(f"{folder}: no .txt or .ann files (empty corpus folder)")
    for stem in sorted(txts ^ anns):
        have, missing = (".txt", ".ann") if stem in txts else (".ann", ".txt")
        raise NoteError(f"{folder / (stem + have)}: has no matching {stem}{missing}")
    aside: Counter = Counter()
    notes = [
        read_brat_document(folder / f"{stem}.txt", None, allow_overlap, discontinuous, aside)
        for stem in sorted(txts)
    ]
    if aside:
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(aside.items()))
        log.warning(f"{folder}: set aside standoff lines with no text-bound span: {kinds}")
    if labels is not None:
        check_labels(notes, labels, str(folder))
    return notes


def read_brat_document(
    txt_path, labels=None, allow_overlap: bool = False, discontinuous: str = "split", aside=None
) -> Note:
    """One document; lines with no text-bound span are counted into `aside` by kind."""
    txt_path = Path(txt_path)
    ann_path = txt_path.with_suffix(".ann")
    text = _read_utf8(txt_path)
    ann = _read_utf8(ann_path)
    spans = []
    # split on \n only: str.splitlines would also break at U+2028 or \x85 inside a surface.
    for lineno, line in enumerate(ann.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        where = f"{ann_path}:{lineno}"
        if line[0] in SET_ASIDE and not line.startswith("T"):
            if aside is not None:
                aside[SET_ASIDE[line[0]]] += 1
            continue
        m = _SPAN_LINE.match(line)
        if m is None:
            raise NoteError(
                f"{where}: not a standoff annotation line (a text-bound one reads 'T<n><TAB>"
                f"<LABEL> <start> <end><TAB><surface>')"
            )
        _, label, offsets, surface = m.groups()
        fragments = [tuple(map(int, f.split())) for f in offsets.split(";")]
        if len(fragments) > 1 and discontinuous == "refuse":
            raise NoteError(
                f"{where}: discontinuous span {offsets} (discontinuous: split tags each fragment)"
            )
        for start, end in fragments:
            if not 0 <= start < end <= len(text):
                raise NoteError(
                    f"{where}: offsets [{start}, {end}) are not inside {txt_path.name} "
                    f"({len(text)} characters)"
                )
        # BRAT writes a discontinuous span's surface as its fragments joined by a space.
        if " ".join(text[a:b] for a, b in fragments) != surface:
            raise NoteError(
                f"{where}: surface string ({len(surface)} characters) does not match the text "
                f"at {', '.join(f'[{a}, {b})' for a, b in fragments)} of {txt_path.name}"
            )
        spans.extend(Span(a, b, label) for a, b in fragments)
    note = Note(txt_path.stem, text, sorted(spans), source=str(txt_path.parent), annotator="gold")
    validate_note(note, labels, allow_overlap, where=str(ann_path))
    return note


def _read_utf8(path: Path) -> str:
    if not path.is_file():
        raise NoteError(f"{path}: file not found")
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise NoteError(
            f"{path}:{line}: not UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start})"
        ) from None


def write_brat(notes, folder, overwrite: bool = False) -> Path:
    """Write notes as NAME.txt/NAME.ann into `folder`, all or nothing (sdeid.text_folder):
    a failure leaves no half-written folder and an existing one is replaced only with
    `overwrite`."""
    check_writable(folder, overwrite)
    notes = list(checked_notes(notes))
    for note in notes:
        for s in note.spans:
            if "\n" in note.text[s.start : s.end]:
                raise NoteError(
                    f"{note.doc_id}: span [{s.start}, {s.end}) crosses a line break, "
                    "which BRAT's one-line surface field cannot hold"
                )
    return write_text_files(folder, _brat_files(notes), overwrite)


def _brat_files(notes):
    for note in notes:
        yield f"{note.doc_id}.txt", note.text
        yield (
            f"{note.doc_id}.ann",
            "".join(
                f"T{i}\t{s.label} {s.start} {s.end}\t{note.text[s.start : s.end]}\n"
                for i, s in enumerate(sorted(note.spans), start=1)
            ),
        )
