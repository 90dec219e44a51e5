"""Notes <-> Parquet shards, on local paths or any pyarrow filesystem URI, and <-> HF datasets.

A shard is written under a temporary name and renamed when complete, so a reader never sees
a partial file and a crash leaves at most a stray temporary that the next write ignores.
"""

from __future__ import annotations

import uuid

from sdeid.schema import (
    NOTE_COLUMNS,
    Note,
    NoteError,
    Span,
    arrow_schema,
    span_order,
    validate_note,
)


def _filesystem(uri: str):
    from pyarrow import fs

    return fs.FileSystem.from_uri(uri) if "://" in uri else (fs.LocalFileSystem(), uri)


def notes_to_table(notes, extra_columns: dict | None = None):
    import pyarrow as pa

    schema = arrow_schema()
    columns = [
        pa.array([n.doc_id for n in notes], pa.string()),
        pa.array([n.text for n in notes], pa.string()),
        _spans_array(notes, schema.field("spans").type),
        pa.array([n.source for n in notes], pa.string()),
        pa.array([n.annotator for n in notes], pa.string()),
    ]
    table = pa.Table.from_arrays(columns, schema=schema)
    for name, values in (extra_columns or {}).items():
        table = table.append_column(name, pa.array(values))
    return table


def _spans_array(notes, list_type):
    """The spans column from flat per-field lists and offsets: an annotated note carries tens
    of spans, and a dict per span (what pyarrow needs from Python rows) was one of the largest
    costs in the annotator's profile (benchmarks/annotate_cpu.py)."""
    import pyarrow as pa

    offsets, starts, ends, labels, scores = [0], [], [], [], []
    for note in notes:
        for s in note.spans:
            starts.append(s.start)
            ends.append(s.end)
            labels.append(s.label)
            scores.append(s.score)
        offsets.append(len(starts))
    fields = list(list_type.value_type)
    values = pa.StructArray.from_arrays(
        [pa.array(v, f.type) for v, f in zip((starts, ends, labels, scores), fields, strict=True)],
        fields=fields,
    )
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values, type=list_type)


def table_to_notes(table, where: str = "", labels=None, allow_overlap: bool = False):
    missing = [c for c in NOTE_COLUMNS if c not in table.column_names]
    if missing:
        raise NoteError(f"{where}: missing note column(s) {missing}; has {table.column_names}")
    for name in ("doc_id", "text", "spans"):
        if table[name].null_count:
            row = table[name].is_null().index(True).as_py()
            raise NoteError(f"{where}: row {row}: doc_id, text and spans must not be null")
    doc_ids, texts, sources, annotators = (
        table[c].to_pylist() for c in ("doc_id", "text", "source", "annotator")
    )
    notes, row = [], 0
    for chunk in table["spans"].chunks:
        # The spans as flat per-field lists read once, not a dict per span (see _spans_array);
        # a sliced chunk's offsets index its unsliced values.
        values, offsets = chunk.values, chunk.offsets.to_pylist()
        starts, ends, span_labels, scores = (values.field(f).to_pylist() for f in range(4))
        for k in range(len(chunk)):
            lo, hi = offsets[k], offsets[k + 1]
            if None in starts[lo:hi] or None in ends[lo:hi] or None in span_labels[lo:hi]:
                raise NoteError(f"{where}: row {row}: a span has no start, end or label")
            note = Note(
                doc_ids[row],
                texts[row],
                sorted(
                    map(Span, starts[lo:hi], ends[lo:hi], span_labels[lo:hi], scores[lo:hi]),
                    key=span_order,
                ),
                sources[row] or "",
                annotators[row] or "",
            )
            validate_note(note, labels, allow_overlap, where=f"{where}: row {row} ({note.doc_id})")
            notes.append(note)
            row += 1
    return notes


def write_notes_parquet(notes, uri: str, extra_columns: dict | None = None) -> str:
    """Validate then write one shard atomically (temporary name, then rename)."""
    import pyarrow.parquet as pq

    for note in notes:
        validate_note(note, allow_overlap=True)
    table = notes_to_table(notes, extra_columns)
    fs, path = _filesystem(uri)
    parent = path.rsplit("/", 1)[0] if "/" in path else "."
    fs.create_dir(parent, recursive=True)
    tmp = f"{parent}/.{path.rsplit('/', 1)[-1]}.tmp-{uuid.uuid4().hex}"
    try:
        pq.write_table(table, tmp, filesystem=fs)
        fs.move(tmp, path)
    except BaseException:
        try:
            fs.delete_file(tmp)
        except OSError:
            pass
        raise
    return uri


def read_notes_parquet(uri: str, labels=None, allow_overlap: bool = False) -> list[Note]:
    """Read a shard file, or every *.parquet shard in a folder (sorted), into notes."""
    import pyarrow.parquet as pq
    from pyarrow import fs as pafs

    fs, path = _filesystem(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise NoteError(f"{uri}: not found")
    if info.type == pafs.FileType.Directory:
        files = sorted(
            f.path
            for f in fs.get_file_info(pafs.FileSelector(path))
            if f.path.endswith(".parquet") and not f.base_name.startswith(".")
        )
        if not files:
            raise NoteError(f"{uri}: no .parquet shards in this folder")
    else:
        files = [path]
    notes = []
    for f in files:
        try:
            table = pq.read_table(f, filesystem=fs)
        except Exception as e:  # pyarrow raises several types for a damaged file
            raise NoteError(f"{f}: not a readable Parquet file ({type(e).__name__}: {e})") from None
        notes.extend(table_to_notes(table, where=f, labels=labels, allow_overlap=allow_overlap))
    return notes


def notes_to_hf_dataset(notes):
    """A Hugging Face `datasets.Dataset` with the note columns (spans as a list of structs)."""
    import datasets

    return datasets.Dataset(notes_to_table(notes))
