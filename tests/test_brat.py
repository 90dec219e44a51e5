"""BRAT folders <-> notes: round trips, MEDDOCAN's BOM files, and every bad input's message."""

from __future__ import annotations

import pytest
from conftest import MEDDOCAN, needs_meddocan, toy_notes

from sdeid.brat import read_brat, write_brat
from sdeid.schema import MEDDOCAN_LABELS, NoteError


def test_round_trip_toy(tmp_path):
    notes = toy_notes()
    folder = write_brat(notes, tmp_path / "out")
    back = read_brat(folder, MEDDOCAN_LABELS)
    assert [(n.doc_id, n.text, n.spans) for n in back] == [
        (n.doc_id, n.text, sorted(n.spans)) for n in sorted(notes, key=lambda n: n.doc_id)
    ]


def test_bom_counts_as_one_character(toy_brat):
    note = {n.doc_id: n for n in read_brat(toy_brat)}["toy-0-2"]
    assert note.text[0] == "\ufeff"
    first = note.spans[0]
    assert note.text[first.start : first.end] == "Mujer" and first.start == 1


@needs_meddocan
@pytest.mark.meddocan
def test_meddocan_round_trip_is_byte_identical(tmp_path):
    notes = read_brat(MEDDOCAN / "train", MEDDOCAN_LABELS)
    assert len(notes) == 500
    assert sum(n.text.startswith("\ufeff") for n in notes) > 0
    out = write_brat(notes, tmp_path / "train")
    for note in notes:
        src, dst = MEDDOCAN / "train" / f"{note.doc_id}.txt", out / f"{note.doc_id}.txt"
        assert src.read_bytes() == dst.read_bytes()
    assert [(n.doc_id, n.spans) for n in read_brat(out)] == [(n.doc_id, n.spans) for n in notes]


def _corrupt(folder, name, text=None, data=None):
    path = folder / name
    if data is not None:
        path.write_bytes(data)
    else:
        path.write_text(text, encoding="utf-8")
    return path


BAD_INPUTS = [
    (
        "offsets past the end",
        "toy-0-1.ann",
        "T1\tTERRITORIO 40 500\tValencia\n",
        r"toy-0-1.ann:1: offsets \[40, 500\) are not inside toy-0-1.txt",
    ),
    (
        "surface does not match",
        "toy-0-1.ann",
        "T1\tTERRITORIO 41 49\tSevilla\n",
        r"toy-0-1.ann:1: surface string .* does not match the text at \[41, 49\)",
    ),
    (
        "unknown annotation line",
        "toy-0-1.ann",
        "T1\tTERRITORIO 41 49\tValencia\nR1\tRel Arg1:T1\n",
        r"toy-0-1.ann:2: not a text-bound annotation line",
    ),
    (
        "discontinuous span",
        "toy-0-1.ann",
        "T1\tTERRITORIO 41 44;45 49\tVal cia\n",
        r"toy-0-1.ann:1: not a text-bound annotation line",
    ),
    (
        "start not before end",
        "toy-0-1.ann",
        "T1\tTERRITORIO 49 41\t\n",
        r"toy-0-1.ann:1: offsets \[49, 41\) are not inside",
    ),
    (
        "unknown label",
        "toy-0-1.ann",
        "T1\tCIUDAD 41 49\tValencia\n",
        r"toy-0-1.ann: unknown label 'CIUDAD' at \[41, 49\)",
    ),
    (
        "overlapping spans",
        "toy-0-1.ann",
        "T1\tTERRITORIO 41 49\tValencia\nT2\tPAIS 44 49\tencia\n",
        r"toy-0-1.ann: spans \[41, 49\) TERRITORIO and \[44, 49\) PAIS overlap",
    ),
]


@pytest.mark.parametrize("case,name,content,message", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_annotation_is_named(toy_brat, case, name, content, message):
    _corrupt(toy_brat, name, content)
    with pytest.raises(NoteError, match=message):
        read_brat(toy_brat, MEDDOCAN_LABELS)


def test_not_utf8_names_file_line_and_byte(toy_brat):
    _corrupt(toy_brat, "toy-0-0.txt", data="Línea uno\nLínea dos \xff".encode("latin-1"))
    with pytest.raises(NoteError, match=r"toy-0-0.txt:1: not UTF-8 \(byte 0xed at offset 1\)"):
        read_brat(toy_brat)


def test_txt_without_ann_and_the_reverse(toy_brat):
    (toy_brat / "toy-0-0.ann").unlink()
    with pytest.raises(NoteError, match=r"toy-0-0.txt: has no matching toy-0-0.ann"):
        read_brat(toy_brat)
    (toy_brat / "toy-0-0.txt").rename(toy_brat / "orphan.txt")
    (toy_brat / "toy-0-1.txt").unlink()
    with pytest.raises(NoteError, match=r"has no matching"):
        read_brat(toy_brat)


def test_empty_folder(tmp_path):
    with pytest.raises(NoteError, match=r"no .txt or .ann files \(empty corpus folder\)"):
        read_brat(tmp_path)


def test_write_is_all_or_nothing(tmp_path):
    notes = toy_notes()
    first = write_brat(notes[:1], tmp_path / "out")
    before = sorted(p.name for p in first.iterdir())
    bad = toy_notes()
    bad[2].spans[0] = type(bad[2].spans[0])(5, 500, "FECHAS")
    with pytest.raises(NoteError):
        write_brat(bad, tmp_path / "out", overwrite=True)
    assert sorted(p.name for p in first.iterdir()) == before  # the earlier output is intact
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left behind
    with pytest.raises(NoteError, match="exists and is not empty"):
        write_brat(notes, tmp_path / "out")


def test_error_message_holds_no_note_text(toy_brat):
    _corrupt(toy_brat, "toy-0-0.ann", "T1\tNOMBRE_SUJETO_ASISTENCIA 28 44\tAna Garcia Lopez\n")
    with pytest.raises(NoteError) as err:
        read_brat(toy_brat)
    assert "Ana" not in str(err.value) and "García" not in str(err.value)
