"""NER scores: strict entity-level P/R/F1 (MEDDOCAN subtask 1) and token-level F1 (the paper's).

Strict: a predicted span counts only when start, end and label all equal a gold span's.
Token-level: the text is cut into word and punctuation tokens; each token takes the label of
the span covering it (or O); precision and recall count tokens with a non-O label, and a token
is right when its predicted label equals its gold one. Token-level F1 forgives boundary errors,
so it flatters a weak model: report both.
"""

from __future__ import annotations

import re
from collections import Counter

_TOKEN = re.compile(r"\w+|[^\w\s]")


def prf(tp: int, n_pred: int, n_gold: int) -> dict:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f, "tp": tp, "pred": n_pred, "gold": n_gold}


def strict_scores(gold_notes, pred_notes) -> dict:
    """{'micro': {...}, 'per_label': {label: {...}}} over documents matched by doc_id."""
    pred_by_id = {n.doc_id: n for n in pred_notes}
    tp, n_pred, n_gold = Counter(), Counter(), Counter()
    for g in gold_notes:
        gold = {(s.start, s.end, s.label) for s in g.spans}
        pred = (
            {(s.start, s.end, s.label) for s in pred_by_id[g.doc_id].spans}
            if g.doc_id in pred_by_id
            else set()
        )
        for *_, lab in gold:
            n_gold[lab] += 1
        for *_, lab in pred:
            n_pred[lab] += 1
        for *_, lab in gold & pred:
            tp[lab] += 1
    labels = sorted(set(n_gold) | set(n_pred))
    return {
        "micro": prf(sum(tp.values()), sum(n_pred.values()), sum(n_gold.values())),
        "per_label": {lab: prf(tp[lab], n_pred[lab], n_gold[lab]) for lab in labels},
    }


def _token_labels(text: str, spans):
    ordered = sorted(spans)
    out, j = [], 0
    for m in _TOKEN.finditer(text):
        while j < len(ordered) and ordered[j].end <= m.start():
            j += 1
        hit = j < len(ordered) and ordered[j].start < m.end()
        out.append(ordered[j].label if hit else "O")
    return out


def token_scores(gold_notes, pred_notes) -> dict:
    pred_by_id = {n.doc_id: n for n in pred_notes}
    tp = n_pred = n_gold = 0
    for g in gold_notes:
        pred_spans = pred_by_id[g.doc_id].spans if g.doc_id in pred_by_id else []
        for gl, pl in zip(
            _token_labels(g.text, g.spans), _token_labels(g.text, pred_spans), strict=True
        ):
            n_gold += gl != "O"
            n_pred += pl != "O"
            tp += gl != "O" and gl == pl
    return prf(tp, n_pred, n_gold)


def ner_scores(gold_notes, pred_notes) -> dict:
    strict = strict_scores(gold_notes, pred_notes)
    return {
        "strict": strict["micro"],
        "per_label": strict["per_label"],
        "token": token_scores(gold_notes, pred_notes),
    }


def per_label_table(scores: dict) -> str:
    """A Markdown table of strict P/R/F1 per label, with support."""
    lines = ["| label | precision | recall | F1 | gold |", "|---|---|---|---|---|"]
    for lab, s in sorted(scores["per_label"].items(), key=lambda kv: -kv[1]["gold"]):
        lines.append(
            f"| {lab} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} | {s['gold']} |"
        )
    return "\n".join(lines)
