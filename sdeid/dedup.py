"""Clean-up of generated notes: length filter, exact duplicates, MinHash near-duplicates.

Near-duplicates are found with datasketch's MinHash LSH over word 5-gram shingles; of a group
of near-duplicates the first in plan order is kept. Each rule's removals are counted.
"""

from __future__ import annotations

import hashlib


def shingles(text: str, n: int = 5) -> set[str]:
    words = text.split()
    return {" ".join(words[i : i + n]) for i in range(max(1, len(words) - n + 1))}


def minhash(text: str, num_perm: int = 64):
    from datasketch import MinHash

    m = MinHash(num_perm=num_perm, seed=1)
    m.update_batch([s.encode() for s in shingles(text)])
    return m


def clean_notes(ids, texts, min_chars: int, max_chars: int, near_dup_threshold: float):
    """Return (kept ids in order, {rule: removed count})."""
    from datasketch import MinHashLSH

    removed = {"too_short": 0, "too_long": 0, "exact_duplicate": 0, "near_duplicate": 0}
    seen_exact = set()
    lsh = MinHashLSH(threshold=near_dup_threshold, num_perm=64) if near_dup_threshold > 0 else None
    kept = []
    for note_id, text in zip(ids, texts, strict=True):
        if len(text) < min_chars:
            removed["too_short"] += 1
            continue
        if max_chars and len(text) > max_chars:
            removed["too_long"] += 1
            continue
        digest = hashlib.sha1(" ".join(text.split()).encode()).digest()
        if digest in seen_exact:
            removed["exact_duplicate"] += 1
            continue
        seen_exact.add(digest)
        if lsh is not None:
            m = minhash(text)
            if lsh.query(m):
                removed["near_duplicate"] += 1
                continue
            lsh.insert(note_id, m)
        kept.append(note_id)
    return kept, removed
