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
        "T1\tTERRITORIO 41 49\tValencia\nX1\tsomething\n",
        r"toy-0-1.ann:2: not a standoff annotation line",
    ),
    (
        "discontinuous span whose surface does not match",
        "toy-0-1.ann",
        "T1\tTERRITORIO 41 44;45 49\tVal cia\n",
        r"toy-0-1.ann:1: surface string .* does not match the text at \[41, 44\), \[45, 49\)",
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
        r"toy: labels the label set does not know: CIUDAD \(1\); map them",
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


def test_standoff_without_spans_is_set_aside_with_one_warning(toy_brat, caplog):
    """What the brat editor writes beside spans (a comment, an attribute, a relation, ...)."""
    extra = (
        "T1\tTERRITORIO 41 49\tValencia\n#1\tAnnotatorNotes T1\tcheck this city\n"
        "A1\tNegated T1\nM2\tConfidence T1 High\nR1\tRel Arg1:T1 Arg2:T1\n"
        "E1\tEv:T1\nN1\tReference T1 Wikipedia:123\tValencia\n*\tEquiv T1 T1\n"
    )
    _corrupt(toy_brat, "toy-0-1.ann", extra)
    with caplog.at_level("WARNING", logger="sdeid.brat"):
        notes = read_brat(toy_brat, MEDDOCAN_LABELS)
    (warning,) = caplog.messages
    assert warning == (
        f"{toy_brat}: set aside standoff lines with no text-bound span: 1 annotator notes, "
        "2 attributes, 1 equivalences, 1 events, 1 normalizations, 1 relations"
    )
    assert [(s.start, s.end, s.label) for s in notes[1].spans] == [(41, 49, "TERRITORIO")]


def test_discontinuous_span_is_split_into_fragments_or_refused(toy_brat):
    _corrupt(toy_brat, "toy-0-1.ann", "T1\tTERRITORIO 41 44;45 49\tVal ncia\n")
    notes = read_brat(toy_brat, MEDDOCAN_LABELS)
    assert [(s.start, s.end, s.label) for s in notes[1].spans] == [
        (41, 44, "TERRITORIO"),
        (45, 49, "TERRITORIO"),
    ]
    with pytest.raises(NoteError, match=r"toy-0-1.ann:1: discontinuous span 41 44;45 49"):
        read_brat(toy_brat, MEDDOCAN_LABELS, discontinuous="refuse")


def test_unknown_labels_are_listed_with_counts_for_the_whole_corpus(toy_brat):
    _corrupt(toy_brat, "toy-0-0.ann", "T1\tCIUDAD 98 104\tMadrid\n")
    _corrupt(toy_brat, "toy-0-1.ann", "T1\tCIUDAD 41 49\tValencia\nT2\tDOCTOR 61 71\tPedro Ruiz\n")
    with pytest.raises(NoteError, match=r"does not know: CIUDAD \(2\), DOCTOR \(1\);"):
        read_brat(toy_brat, MEDDOCAN_LABELS)
