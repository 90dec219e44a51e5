"""Corpus statistics for `sdeid data stats`: documents, characters, spans per label."""

from __future__ import annotations

from collections import Counter


def corpus_stats(notes) -> dict:
    labels = Counter(s.label for n in notes for s in n.spans)
    return {
        "documents": len(notes),
        "characters": sum(len(n.text) for n in notes),
        "spans": sum(labels.values()),
        "spans_per_label": dict(labels.most_common()),
    }


def format_stats(stats: dict) -> str:
    lines = [
        f"documents  {stats['documents']}",
        f"characters {stats['characters']}",
        f"spans      {stats['spans']}",
        "",
        "spans per label:",
    ]
    lines += [f"  {lab:<34} {n}" for lab, n in stats["spans_per_label"].items()]
    return "\n".join(lines)
