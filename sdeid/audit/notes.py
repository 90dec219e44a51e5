"""One synthetic note audited against the private index."""

from __future__ import annotations

from sdeid.audit.index import PrivateIndex, find_grouped
from sdeid.audit.tally import Tally


def audit_note(index: PrivateIndex, doc_id: str, text: str, cfg, cache: dict) -> dict:
    """The note's row (what audit_notes records: ids, offsets and labels, never text), plus
    what its tally needs: n-gram hits per n and the PHI strings found."""
    hits = find_grouped(text, index.phi_by_length)
    leaks = [(k, off) for k, off in hits if not index.generic[k]]
    j, sim = index.nearest(text) if index.private_ids else (None, 0.0)
    counts = {n: index.ngram_hits(text, n, cache) for n in cfg.ngram_sizes}
    row = {
        "doc_id": doc_id,
        "phi_found": len(hits),
        "phi_leaked": len(leaks),
        # where, and whose: offsets into the synthetic note and private doc ids only
        "leaks": [
            {"offset": off, "label": index.phi[k]["label"], "private_doc": index.phi[k]["doc_id"]}
            for k, off in leaks
        ],
        "nearest_private_doc": index.private_ids[j] if j is not None else None,
        "nearest_jaccard": sim,
        "flagged": bool(leaks) or sim >= cfg.max_jaccard,
    }
    return {
        "row": row,
        "found": {k for k, _ in hits},
        "ngram_hits": {n: h for n, (h, _) in counts.items()},
        "ngram_total": {n: t for n, (_, t) in counts.items()},
    }


def measure(cfg, ids, texts, private_notes, ref_texts) -> tuple[dict, list[dict]]:
    """The audit of a few notes in this process: (summary, per-note rows)."""
    index = PrivateIndex(private_notes, ref_texts, cfg.ngram_sizes, cfg.min_phi_chars, cfg.num_perm)
    tally, rows, cache = Tally(), [], {}
    for doc_id, text in zip(ids, texts, strict=True):
        note = audit_note(index, doc_id, text, cfg, cache)
        tally.add(note)
        rows.append(note["row"])
    return tally.summary(index, cfg.ngram_sizes), rows
