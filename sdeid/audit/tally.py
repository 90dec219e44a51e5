"""The audit's figures as sums over notes, so a shard task's tallies add up to the corpus's and
the figures after the filter are the tally of the notes it kept (no second pass)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from sdeid.memorization.canaries import LABEL as CANARY


@dataclass
class Tally:
    notes: int = 0
    ngram_hits: Counter = field(default_factory=Counter)
    ngram_total: Counter = field(default_factory=Counter)
    found: set = field(default_factory=set)
    """Distinct private PHI strings (word sequences) found."""
    notes_with_leaks: int = 0
    notes_flagged: int = 0
    similarities: Counter = field(default_factory=Counter)
    """How many notes have each Jaccard estimate to their nearest private note. An estimate is
    a share of num_perm hash values, so there are at most num_perm + 1 keys, whatever the
    number of notes: the driver's tally does not grow with the corpus."""

    def add(self, note: dict) -> None:
        """One audited note (sdeid.audit.notes.audit_note)."""
        self.notes += 1
        self.ngram_hits.update(note["ngram_hits"])
        self.ngram_total.update(note["ngram_total"])
        self.found.update(note["found"])
        self.notes_with_leaks += note["row"]["phi_leaked"] > 0
        self.notes_flagged += note["row"]["flagged"]
        self.similarities[note["row"]["nearest_jaccard"]] += 1

    def merge(self, other: Tally) -> Tally:
        self.notes += other.notes
        self.ngram_hits.update(other.ngram_hits)
        self.ngram_total.update(other.ngram_total)
        self.found |= other.found
        self.notes_with_leaks += other.notes_with_leaks
        self.notes_flagged += other.notes_flagged
        self.similarities.update(other.similarities)
        return self

    def summary(self, index, ngram_sizes) -> dict:
        leaked = {k for k in self.found if not index.generic[k]}
        total = self.ngram_total
        return {
            "notes": self.notes,
            "ngram_recall": {
                str(n): self.ngram_hits[n] / total[n] if total[n] else 0.0 for n in ngram_sizes
            },
            "phi_private_strings": len(index.phi),
            "phi_strings_found": len(self.found),
            "phi_strings_generic": len(self.found) - len(leaked),
            "phi_strings_leaked": len(leaked),
            "phi_leaked_by_label": _by_label(index, leaked),
            "phi_found_by_label": _by_label(index, self.found),
            "notes_with_leaks": self.notes_with_leaks,
            "nearest_jaccard": {
                "median": _nth(self.similarities, self.notes // 2),
                "p95": _nth(self.similarities, int(self.notes * 0.95)),
                "max": max(self.similarities, default=None),
            },
            "notes_flagged": self.notes_flagged,
            "canary_secrets_planted": sum(v["label"] == CANARY for v in index.phi.values()),
            "canary_secrets_found": sum(index.phi[k]["label"] == CANARY for k in self.found),
        }


def _nth(counts: Counter, n: int):
    """The n-th smallest value (from 0) of the values counted, or None when there are none."""
    for value in sorted(counts):
        n -= counts[value]
        if n < 0:
            return value
    return None


def _by_label(index, keys) -> dict:
    return dict(Counter(index.phi[k]["label"] for k in keys).most_common())
