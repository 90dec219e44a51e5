"""Strict entity and token-level scores on hand-made cases whose answers are known."""

from __future__ import annotations

import pytest

from sdeid.metrics import ner_scores
from sdeid.schema import Note, Span

TEXT = "Ana García vive en Madrid desde 2019."


def _note(*spans):
    return Note("d", TEXT, [Span(*s) for s in spans])


def test_perfect_and_empty():
    gold = [_note((0, 10, "NOMBRE"), (19, 25, "TERRITORIO"))]
    s = ner_scores(gold, gold)
    assert s["strict"]["f1"] == 1.0 and s["token"]["f1"] == 1.0
    s = ner_scores(gold, [_note()])
    assert s["strict"]["f1"] == 0.0 and s["strict"]["recall"] == 0.0


def test_boundary_error_is_strict_miss_but_partial_token_hit():
    gold = [_note((0, 10, "NOMBRE"), (19, 25, "TERRITORIO"))]
    pred = [_note((0, 3, "NOMBRE"), (19, 25, "TERRITORIO"))]
    s = ner_scores(gold, pred)
    assert s["strict"]["precision"] == 0.5 and s["strict"]["recall"] == 0.5
    # tokens: Ana García Madrid gold (3), Ana Madrid predicted (2), both right
    assert s["token"]["precision"] == 1.0
    assert s["token"]["recall"] == pytest.approx(2 / 3)
    assert s["per_label"]["NOMBRE"]["f1"] == 0.0 and s["per_label"]["TERRITORIO"]["f1"] == 1.0


def test_wrong_label_counts_against_both():
    gold = [_note((19, 25, "TERRITORIO"))]
    pred = [_note((19, 25, "PAIS"))]
    s = ner_scores(gold, pred)
    assert s["strict"]["f1"] == 0.0 and s["token"]["f1"] == 0.0
    assert s["per_label"]["PAIS"]["pred"] == 1 and s["per_label"]["TERRITORIO"]["gold"] == 1
