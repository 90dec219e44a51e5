"""Every corpus format through one reader and writer: i2b2 XML, CoNLL, Hugging Face, Parquet and
BRAT; label maps; `sdeid data convert`. Inputs are built here from each published layout."""

from __future__ import annotations

import pytest
from conftest import MEDDOCAN, ROOT, needs_meddocan, toy_notes

from sdeid.cli import main
from sdeid.config import ConfigError
from sdeid.corpus_io import FORMATS, detect_format, read_corpus, write_corpus
from sdeid.label_map import apply_label_map, load_label_map
from sdeid.schema import MEDDOCAN_LABELS, Note, NoteError, Span

COARSE_MAP = ROOT / "configs" / "label_maps" / "meddocan-coarse.yaml"
I2B2_MAP = ROOT / "configs" / "label_maps" / "i2b2-2014-coarse.yaml"

# A record in the 2014 challenge's layout (the published example's first tags, invented text).
I2B2_TEXT = "\n\n\nRecord date: 2067-05-03\n\nWilma Hargrove is a 55 yo woman seen by Dr. Lee.\n"
I2B2_FILE = (
    '<?xml version="1.0" encoding="UTF-8" ?>\n<deIdi2b2>\n<TEXT><![CDATA['
    + I2B2_TEXT
    + "]]></TEXT>\n<TAGS>\n"
    '<DATE id="P0" start="16" end="26" text="2067-05-03" TYPE="DATE" comment="" />\n'
    '<NAME id="P1" start="28" end="42" text="Wilma Hargrove" TYPE="PATIENT" comment="" />\n'
    '<AGE id="P2" start="48" end="50" text="55" TYPE="AGE" comment="" />\n'
    '<NAME id="P3" start="72" end="75" text="Lee" TYPE="DOCTOR" comment="" />\n'
    "</TAGS>\n</deIdi2b2>\n"
)

CONLL_IOB2 = (
    "Wilma\tB-PATIENT\nHargrove\tI-PATIENT\nis\tO\n55\tB-AGE\n\n"
    "Seen\tO\nby\tO\nDr.\tO\nLee\tB-DOCTOR\nLee\tB-DOCTOR\n.\tO\n\n"
)


def _spans(note):
    return [(note.text[s.start : s.end], s.label) for s in note.spans]


def test_i2b2_file_reads_at_the_challenges_offsets_and_round_trips_byte_for_byte(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "110-01.xml").write_text(I2B2_FILE, encoding="utf-8")
    (note,) = read_corpus(str(tmp_path / "in"))
    assert note.doc_id == "110-01" and note.text == I2B2_TEXT
    assert _spans(note) == [
        ("2067-05-03", "DATE"),
        ("Wilma Hargrove", "PATIENT"),
        ("55", "AGE"),
        ("Lee", "DOCTOR"),
    ]
    out = write_corpus([note], tmp_path / "out", "i2b2")
    assert (out / "110-01.xml").read_text(encoding="utf-8") == I2B2_FILE


def test_i2b2_writer_keeps_what_xml_would_change_or_refuses_it(tmp_path):
    text = 'Nota ]]> de "Ana & Co" <x>\nfin'
    notes = [Note("a", text, [Span(10, 23, "NAME"), Span(24, 30, "ID")])]
    back = read_corpus(str(write_corpus(notes, tmp_path / "a", "i2b2")))
    assert back[0].text == text and _spans(back[0]) == _spans(notes[0])
    with pytest.raises(NoteError, match=r"^b: offset 4: i2b2 XML cannot carry a carriage return"):
        write_corpus([Note("b", "line\r\nnext")], tmp_path / "b", "i2b2")
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    "tag,message",
    [
        ('<DATE id="P0" start="16" end="999" text="x" TYPE="DATE" />', r"\[16, 999\) are not"),
        ('<DATE id="P0" start="16" end="26" text="2067-05-04" TYPE="DATE" />', "does not match"),
        ('<DATE id="P0" start="a" end="26" TYPE="DATE" />', "start and end must be integers"),
        ('<DATE id="P0" start="16" end="26" />', "no TYPE attribute"),
    ],
)
def test_i2b2_bad_tags_name_the_file_and_tag(tmp_path, tag, message):
    path = tmp_path / "r1.xml"
    text = I2B2_FILE.replace(
        '<DATE id="P0" start="16" end="26" text="2067-05-03" TYPE="DATE" comment="" />', tag
    )
    path.write_text(text, encoding="utf-8")
    with pytest.raises(NoteError, match=rf"r1.xml: <DATE id=P0> \(tag 1\): .*{message}"):
        read_corpus(str(path))


def test_i2b2_malformed_xml_names_its_line(tmp_path):
    path = tmp_path / "r1.xml"
    path.write_text(I2B2_FILE.replace("</TAGS>", "</TAG>"), encoding="utf-8")
    with pytest.raises(NoteError, match=r"r1.xml:15: not well-formed XML \(mismatched tag"):
        read_corpus(str(path))


def test_conll_iob2_round_trips_byte_for_byte(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "d1.conll").write_text(CONLL_IOB2, encoding="utf-8")
    (note,) = read_corpus(str(tmp_path / "in"))
    assert note.text == "Wilma Hargrove is 55\nSeen by Dr. Lee Lee ."
    assert _spans(note) == [
        ("Wilma Hargrove", "PATIENT"),
        ("55", "AGE"),
        ("Lee", "DOCTOR"),
        ("Lee", "DOCTOR"),
    ]
    out = write_corpus([note], tmp_path / "out", "conll")
    assert (out / "d1.conll").read_text(encoding="utf-8") == CONLL_IOB2


def test_conll_iob1_and_docstart_files(tmp_path):
    iob1 = "-DOCSTART- -X- -X- O\n\nWilma NNP I-PATIENT\nHargrove NNP I-PATIENT\n"
    iob1 += "Lee NNP B-PATIENT\n\n-DOCSTART- -X- -X- O\n\n55 CD I-AGE\n"
    path = tmp_path / "all.txt"
    path.write_text(iob1, encoding="utf-8")
    first, second = read_corpus(str(path), fmt="conll")
    assert (first.doc_id, second.doc_id) == ("all-1", "all-2")
    assert _spans(first) == [("Wilma Hargrove", "PATIENT"), ("Lee", "PATIENT")]
    assert _spans(second) == [("55", "AGE")]


@pytest.mark.parametrize(
    "text,message",
    [
        ("Wilma\tB-PATIENT\nHargrove\tE-PATIENT\n", r"d.conll:2: tag 'E-PATIENT' is not O"),
        ("Wilma\tB-PATIENT\nHargrove\n", r"d.conll:2: expected a token and a tag"),
    ],
)
def test_conll_bad_lines_name_file_and_line(tmp_path, text, message):
    (tmp_path / "d.conll").write_text(text, encoding="utf-8")
    with pytest.raises(NoteError, match=message):
        read_corpus(str(tmp_path))


def test_notes_to_conll_keep_labels_and_surfaces(tmp_path):
    notes = toy_notes()
    notes[0].spans = sorted([*notes[0].spans, Span(2, 4, "FECHAS")])  # inside "Da|to|s"
    back = read_corpus(str(write_corpus(notes, tmp_path / "c", "conll")), MEDDOCAN_LABELS)
    assert [_spans(n) for n in back] == [_spans(n) for n in notes]
    assert back[0].text.startswith("Da to s del paciente.\nNombre:")


def test_every_format_round_trips_the_toy_notes(tmp_path):
    notes = toy_notes()
    for fmt in FORMATS:
        out = write_corpus(notes, tmp_path / fmt, fmt)
        assert detect_format(str(out)) == fmt
        back = read_corpus(str(out), MEDDOCAN_LABELS)
        assert [_spans(n) for n in back] == [_spans(n) for n in notes], fmt
        if fmt != "conll":  # CoNLL keeps tokens, not whitespace
            assert [(n.doc_id, n.text, n.spans) for n in back] == [
                (n.doc_id, n.text, n.spans) for n in notes
            ], fmt


def test_a_folder_of_two_formats_asks_which(tmp_path, toy_brat):
    (toy_brat / "x.xml").write_text(I2B2_FILE, encoding="utf-8")
    with pytest.raises(NoteError, match=r"several formats \(\['brat', 'i2b2'\]\); use --from"):
        read_corpus(str(toy_brat))
    assert len(read_corpus(str(toy_brat), fmt="i2b2")) == 1


def test_label_map_renames_drops_and_is_checked(tmp_path, toy_brat):
    notes = read_corpus(str(toy_brat), label_map=str(COARSE_MAP))
    assert _spans(notes[1]) == [
        ("63 años", "AGE"),
        ("Valencia", "LOCATION"),
        ("Pedro Ruiz", "NAME"),
    ]
    label_map = load_label_map(COARSE_MAP)
    assert apply_label_map(notes, label_map) == notes  # a mapped corpus maps to itself
    assert load_label_map(I2B2_MAP).labels == label_map.labels
    bad = tmp_path / "bad.yaml"
    bad.write_text("labels: [NAME]\nmap:\n  PATIENT: PERSON\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: map: PATIENT: 'PERSON' is not in labels"):
        load_label_map(bad)
    partial = tmp_path / "partial.yaml"
    partial.write_text("labels: [NAME, AGE]\nmap:\n  NOMBRE_SUJETO_ASISTENCIA: NAME\n")
    with pytest.raises(NoteError, match=r"does not know: EDAD_SUJETO_ASISTENCIA \(3\), "):
        read_corpus(str(toy_brat), label_map=str(partial))


def test_data_convert_cli_maps_labels_and_never_overwrites_by_default(tmp_path, toy_brat, capsys):
    out = tmp_path / "i2b2"
    args = ["data", "convert", str(toy_brat), str(out), "--to", "i2b2"]
    assert main([*args, "--label-map", str(COARSE_MAP)]) == 0
    assert "converted 3 notes, 12 spans"  # two SEXO spans dropped in capsys.readouterr().out
    assert [s.label for s in read_corpus(str(out))[0].spans] == [
        "NAME",
        "AGE",
        "LOCATION",
        "LOCATION",
        "DATE",
    ]
    before = (out / "toy-0-0.xml").read_bytes()
    assert main(args) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert (out / "toy-0-0.xml").read_bytes() == before


@needs_meddocan
@pytest.mark.meddocan
def test_meddocan_through_every_format(tmp_path):
    notes = read_corpus(str(MEDDOCAN / "dev"), MEDDOCAN_LABELS)
    for fmt in FORMATS:
        back = read_corpus(str(write_corpus(notes, tmp_path / fmt, fmt)), MEDDOCAN_LABELS)
        if fmt == "conll":  # tokens, not whitespace: a span's inner whitespace becomes one space
            assert [[(s.label, " ".join(t.split())) for s, t in _spans_text(n)] for n in notes] == [
                [(s.label, t) for s, t in _spans_text(n)] for n in back
            ]
        else:
            assert [(n.doc_id, n.text, n.spans) for n in back] == [
                (n.doc_id, n.text, n.spans) for n in notes
            ], fmt


def _spans_text(note):
    return [(s, note.text[s.start : s.end]) for s in note.spans]
