"""Notes <-> Parquet shards (local and URI), HF datasets export, and bad shards."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import toy_notes

from sdeid.corpus_io import read_corpus
from sdeid.parquet_io import (
    notes_to_hf_dataset,
    notes_to_table,
    read_notes_parquet,
    table_to_notes,
    write_notes_parquet,
)
from sdeid.schema import Note, NoteError, Span, arrow_schema


def test_round_trip_local_and_uri(tmp_path):
    notes = toy_notes()
    notes[0].spans[0] = Span(
        notes[0].spans[0].start, notes[0].spans[0].end, notes[0].spans[0].label, 0.75
    )
    write_notes_parquet(notes[:2], str(tmp_path / "shards" / "part-0.parquet"))
    write_notes_parquet(notes[2:], f"file://{tmp_path}/shards/part-1.parquet")
    back = read_notes_parquet(str(tmp_path / "shards"))
    assert [(n.doc_id, n.text, n.spans, n.source) for n in back] == [
        (n.doc_id, n.text, sorted(n.spans), n.source) for n in notes
    ]
    assert back[0].spans[0].score == pytest.approx(0.75)
    assert read_notes_parquet(f"file://{tmp_path}/shards/part-1.parquet")[0].text.startswith(
        "\ufeff"
    )
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == [
        "part-0.parquet",
        "part-1.parquet",
    ]


def test_read_corpus_tells_brat_from_parquet(tmp_path, toy_brat):
    write_notes_parquet(toy_notes(), str(tmp_path / "p" / "a.parquet"))
    assert len(read_corpus(str(toy_brat))) == len(read_corpus(str(tmp_path / "p"))) == 3


def test_hf_dataset_export():
    ds = notes_to_hf_dataset(toy_notes())
    assert ds.num_rows == 3 and ds[0]["spans"][0]["label"] == "NOMBRE_SUJETO_ASISTENCIA"


def test_invalid_note_is_not_written(tmp_path):
    bad = [Note("d1", "abc", [Span(1, 9, "FECHAS")])]
    with pytest.raises(NoteError, match=r"d1: span FECHAS \[1, 9\) is not inside the text of 3"):
        write_notes_parquet(bad, str(tmp_path / "x.parquet"))
    assert list(tmp_path.iterdir()) == []


def test_bad_rows_name_file_and_row(tmp_path):
    good = toy_notes()
    path = tmp_path / "s.parquet"
    write_notes_parquet(good, str(path))
    table = pq.read_table(path).to_pylist()
    table[1]["spans"][0]["end"] = 10_000
    pq.write_table(pa.Table.from_pylist(table, schema=pq.read_schema(path)), path)
    with pytest.raises(NoteError, match=r"s.parquet: row 1 \(toy-0-1\): span .* not inside"):
        read_notes_parquet(str(path))


def test_missing_column_and_damaged_file(tmp_path):
    pq.write_table(pa.table({"doc_id": ["a"], "text": ["x"]}), tmp_path / "a.parquet")
    with pytest.raises(NoteError, match=r"a.parquet: missing note column\(s\) \['spans'"):
        read_notes_parquet(str(tmp_path / "a.parquet"))
    (tmp_path / "b.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(NoteError, match=r"b.parquet: not a readable Parquet file"):
        read_notes_parquet(str(tmp_path / "b.parquet"))
    with pytest.raises(NoteError, match="not found"):
        read_notes_parquet(str(tmp_path / "nope"))


def test_sliced_and_chained_tables_read_back_their_own_rows():
    # Ray Data hands a writer slices of shards and concatenations of them: the spans of each
    # row are read through its chunk's offsets, not from the start of the values.
    notes = toy_notes(copies=3)
    notes[4].spans = []
    table = notes_to_table(notes, {"n": list(range(len(notes)))})
    rows = [
        {
            "doc_id": n.doc_id,
            "text": n.text,
            "spans": [vars(s) for s in n.spans],
            "source": n.source,
            "annotator": n.annotator,
        }
        for n in notes
    ]  # the same table built the plain way, from a dict per span
    assert table.drop_columns(["n"]).equals(pa.Table.from_pylist(rows, schema=arrow_schema()))
    chained = pa.concat_tables([table.slice(5, 3), table.slice(1, 4)])
    back = table_to_notes(chained)
    want = notes[5:8] + notes[1:5]
    assert [(n.doc_id, n.spans) for n in back] == [(n.doc_id, sorted(n.spans)) for n in want]


def test_a_span_without_a_label_names_its_row():
    rows = notes_to_table(toy_notes()).to_pylist()
    rows[2]["spans"][0]["label"] = None
    loose = pa.struct(
        [
            ("start", pa.int32()),
            ("end", pa.int32()),
            ("label", pa.string()),
            ("score", pa.float32()),
        ]
    )
    table = pa.Table.from_pylist(rows).cast(
        pa.schema([(c, pa.list_(loose) if c == "spans" else pa.string()) for c in rows[0]])
    )
    with pytest.raises(NoteError, match=r"shard 7: row 2: a span has no start, end or label"):
        table_to_notes(table, where="shard 7")
