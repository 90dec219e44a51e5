"""CoNLL (one token and its tag per line) <-> notes.

A line is a token, optional middle columns, and its tag last, separated by tabs or spaces; a
blank line ends a sentence. Tags are BIO in either flavour: IOB2 (every entity starts with
B-) or IOB1 (I- starts an entity unless it continues one of the same label; B- only separates
two adjacent entities of one label). A folder holds one document per NAME.conll; a single file
may hold several, each starting at a `-DOCSTART-` line (as CoNLL-2003), named FILE-1, FILE-2...

CoNLL has tokens, not text, so the text is rebuilt: a sentence's tokens joined by one space,
sentences joined by a line feed. Character offsets are counted in that text. The writer does the
reverse: each line of a note's text is a sentence (blank lines are skipped), split at whitespace
and at every span boundary, tagged IOB2 and written with a tab. So a CoNLL file in the writer's
layout (IOB2, two tab-separated columns, one document per file) round-trips byte for byte; a
note's labels, spans and surfaces survive the trip, its whitespace does not.
"""

from __future__ import annotations

import re
from pathlib import Path

from sdeid.schema import Note, NoteError, Span, validate_note
from sdeid.text_folder import check_writable, checked_notes, write_text_files

DOCSTART = "-DOCSTART-"
SUFFIXES = (".conll", ".iob", ".bio")


def read_conll(path) -> list[Note]:
    """A folder of NAME.conll files (sorted), or one file (split at -DOCSTART- lines)."""
    path = Path(path)
    if path.is_file():
        return _read_file(path)
    files = sorted(f for f in path.glob("*") if f.suffix in SUFFIXES) if path.is_dir() else []
    if not files:
        raise NoteError(f"{path}: no {'/'.join(SUFFIXES)} files (CoNLL corpus folder expected)")
    return [n for f in files for n in _read_file(f, one_document=True)]


def _read_file(path: Path, one_document: bool = False) -> list[Note]:
    from sdeid.brat import _read_utf8

    docs: list[list] = [[]]  # each document: (lineno, token, tag) rows, None at a blank line
    starts = 0
    for lineno, line in enumerate(_read_utf8(path).split("\n"), start=1):
        fields = line.split()
        if not fields:
            docs[-1].append(None)
        elif fields[0] == DOCSTART:
            starts += 1
            if one_document and starts > 1:
                raise NoteError(f"{path}:{lineno}: a second -DOCSTART- in a one-document file")
            docs.append([])
        elif len(fields) < 2:
            raise NoteError(f"{path}:{lineno}: expected a token and a tag, found one field")
        else:
            docs[-1].append((lineno, fields[0], fields[-1]))
    docs = [d for d in docs if any(d)]
    if not docs:
        raise NoteError(f"{path}: no tokens")
    if starts <= 1:
        return [_document(path, path.stem, docs[0])]
    return [_document(path, f"{path.stem}-{i}", d) for i, d in enumerate(docs, start=1)]


def _document(path: Path, doc_id: str, rows) -> Note:
    sentences, current = [], []
    for row in rows:
        if row is None:
            if current:
                sentences.append(current)
            current = []
        else:
            current.append(row)
    if current:
        sentences.append(current)
    text_parts, spans, pos = [], [], 0
    for s_index, sentence in enumerate(sentences):
        if s_index:
            text_parts.append("\n")
            pos += 1
        open_span = None  # [label, start, end]
        for t_index, (lineno, token, tag) in enumerate(sentence):
            if t_index:
                text_parts.append(" ")
                pos += 1
            start, end = pos, pos + len(token)
            text_parts.append(token)
            pos = end
            prefix, _, label = tag.partition("-")
            if tag == "O":
                open_span = _close(open_span, spans)
            elif prefix in ("B", "I") and label:
                if prefix == "B" or open_span is None or open_span[0] != label:
                    _close(open_span, spans)
                    open_span = [label, start, end]
                else:
                    open_span[2] = end
            else:
                raise NoteError(f"{path}:{lineno}: tag {tag!r} is not O, B-LABEL or I-LABEL")
        _close(open_span, spans)
    note = Note(doc_id, "".join(text_parts), sorted(spans), source=str(path), annotator="gold")
    validate_note(note, where=str(path))
    return note


def _close(open_span, spans):
    if open_span is not None:
        spans.append(Span(open_span[1], open_span[2], open_span[0]))
    return None


def conll_lines(note: Note) -> str:
    """One document in the writer's layout (see the module docstring)."""
    cuts = {p for s in note.spans for p in (s.start, s.end)}
    spans = sorted(note.spans)
    out = []
    for line in re.finditer(r"[^\n]+", note.text):
        tokens = []
        for word in re.finditer(r"\S+", line.group()):
            a, b = line.start() + word.start(), line.start() + word.end()
            edges = [a, *sorted(p for p in cuts if a < p < b), b]
            tokens.extend(zip(edges, edges[1:], strict=False))
        previous = None
        for a, b in tokens:
            span = next((s for s in spans if s.start <= a and b <= s.end), None)
            tag = "O" if span is None else f"{'I' if span is previous else 'B'}-{span.label}"
            out.append(f"{note.text[a:b]}\t{tag}\n")
            previous = span
        if tokens:
            out.append("\n")
    return "".join(out)


def write_conll(notes, folder, overwrite: bool = False) -> Path:
    """NAME.conll per note, all or nothing (sdeid.text_folder). Overlapping spans cannot be
    written (a token has one tag) and are refused."""
    check_writable(folder, overwrite)
    files = [(f"{n.doc_id}.conll", conll_lines(n)) for n in checked_notes(notes, False)]
    return write_text_files(folder, files, overwrite)
