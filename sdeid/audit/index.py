"""The private side of the audit, built once and shared by every shard task.

- word n-gram hashes of the private notes, one sorted array per n (lower-cased `\\w+` words);
  a hash is a polynomial over 64-bit word digests, the same in every process (Python's own
  hash of a string is salted per process);
- the private PHI strings as word sequences, each with its label, the note it came from, and
  whether it is generic (also found in the reference texts), decided here once;
- the private notes' MinHash signatures (word 5-grams), for the nearest private note.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

from sdeid.memorization.canaries import LABEL as CANARY

WORD = re.compile(r"\w+")
_BASE = np.uint64(0x9E3779B97F4A7C15)  # an odd 64-bit multiplier


def _word_digests(words: list[str], cache: dict) -> np.ndarray:
    out = np.empty(len(words), np.uint64)
    for i, w in enumerate(words):
        d = cache.get(w)
        if d is None:
            d = cache[w] = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest())
        out[i] = d
    return out


def ngram_hashes(text: str, n: int, cache: dict | None = None) -> np.ndarray:
    """One 64-bit hash per word n-gram occurrence of `text`, in order."""
    words = WORD.findall(text.lower())
    if len(words) < n:
        return np.zeros(0, np.uint64)
    d = _word_digests(words, {} if cache is None else cache)
    h = np.zeros(len(words) - n + 1, np.uint64)
    with np.errstate(over="ignore"):  # arithmetic modulo 2**64 on purpose
        for i in range(n):
            h = h * _BASE + d[i : len(words) - n + 1 + i]
    return h


def phi_strings(private_notes, min_chars: int) -> dict[tuple, dict]:
    """{word sequence: {"label", "doc_id", "chars"}} for each distinct private PHI surface."""
    out = {}
    for note in private_notes:
        for s in note.spans:
            surface = note.text[s.start : s.end]
            key = tuple(WORD.findall(surface))
            if len(surface.strip()) >= min_chars and key and key not in out:
                out[key] = {"label": s.label, "doc_id": note.doc_id, "chars": len(surface)}
    return out


def by_length(keys) -> dict[int, set]:
    """Word sequences grouped by their number of words, as find_sequences searches them."""
    by_len: dict[int, set] = {}
    for k in keys:
        by_len.setdefault(len(k), set()).add(k)
    return by_len


def find_sequences(texts: list[str], keys) -> list[list[tuple[tuple, int]]]:
    """For each text, the (key, character offset) of every key found as a word sequence."""
    by_len = by_length(keys)
    return [find_grouped(text, by_len) for text in texts]


def find_grouped(text: str, by_len: dict[int, set]) -> list[tuple[tuple, int]]:
    """find_sequences for one text, with the keys already grouped by length."""
    matches = list(WORD.finditer(text))
    words = [m.group() for m in matches]
    hits = []
    for n, wanted in by_len.items():
        for i in range(len(words) - n + 1):
            seq = tuple(words[i : i + n])
            if seq in wanted:
                hits.append((seq, matches[i].start()))
    return hits


class PrivateIndex:
    """What the audit needs from the private and reference corpora; no private text."""

    def __init__(self, private_notes, ref_texts, ngram_sizes, min_phi_chars: int, num_perm: int):
        from sdeid.dedup import minhash

        cache: dict = {}
        self.ngrams = {
            n: np.unique(
                np.concatenate([ngram_hashes(note.text, n, cache) for note in private_notes])
                if private_notes
                else np.zeros(0, np.uint64)
            )
            for n in ngram_sizes
        }
        self.phi = phi_strings(private_notes, min_phi_chars)
        self.phi_by_length = by_length(self.phi)  # once, not once per synthetic note
        generic = {k for hits in find_sequences(ref_texts, self.phi) for k, _ in hits}
        # A planted canary's secret is never generic: finding it anywhere is the point.
        self.generic = {k: k in generic and self.phi[k]["label"] != CANARY for k in self.phi}
        self.private_ids = [n.doc_id for n in private_notes]
        self.num_perm = num_perm
        self.signatures = (
            np.stack([minhash(n.text, num_perm).hashvalues for n in private_notes])
            if private_notes
            else np.zeros((0, num_perm), np.uint64)
        )

    def ngram_hits(self, text: str, n: int, cache: dict) -> tuple[int, int]:
        """(occurrences of the text's n-grams found in the private notes, all occurrences)."""
        h, known = ngram_hashes(text, n, cache), self.ngrams[n]
        if not len(known):
            return 0, len(h)
        # `known` is sorted and unique: a binary search per n-gram, not a sort per note.
        at = np.minimum(np.searchsorted(known, h), len(known) - 1)
        return int((known[at] == h).sum()), len(h)

    def nearest(self, text: str) -> tuple[int, float]:
        """(index of the nearest private note, its MinHash Jaccard estimate)."""
        from sdeid.dedup import minhash

        sim = (self.signatures == minhash(text, self.num_perm).hashvalues).mean(axis=1)
        j = int(sim.argmax())
        return j, float(sim[j])


def ngram_recall(synthetic: list[str], private: list[str], n: int) -> float:
    """Share of the synthetic n-gram occurrences found in the private corpus."""
    cache: dict = {}
    known = np.unique(np.concatenate([ngram_hashes(t, n, cache) for t in private] or [[]]))
    found = [np.isin(ngram_hashes(t, n, cache), known) for t in synthetic]
    total = sum(len(f) for f in found)
    return sum(int(f.sum()) for f in found) / total if total else 0.0
