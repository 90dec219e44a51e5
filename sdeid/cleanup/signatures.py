"""Per-note signatures: the length rule, an exact-text digest and MinHash LSH band keys.

The MinHash is datasketch's (word 5-gram shingles, seed 1), so a note's hash values are the ones
the one-process clean-up computed; the band split (b bands of r rows) is datasketch's choice for
the threshold. A band key is 8 bytes of BLAKE2b over the band's hash values.
"""

from __future__ import annotations

import hashlib

import numpy as np

from sdeid.dedup import shingles

NUM_PERM = 64
# Status of a note under the length rules.
OK, TOO_SHORT, TOO_LONG = 0, 1, 2


def bands_for(threshold: float, num_perm: int = NUM_PERM) -> tuple[int, int]:
    """(bands, rows per band) that datasketch's MinHashLSH picks for `threshold`."""
    from datasketch.lsh import _optimal_param

    return _optimal_param(threshold, num_perm, 0.5, 0.5)


def exact_digest(text: str) -> int:
    """Whitespace-normalized text -> signed 64-bit digest (the exact-duplicate key)."""
    digest = hashlib.sha1(" ".join(text.split()).encode()).digest()
    return int.from_bytes(digest[:8], "little", signed=True)


class Signer:
    """Signs notes with one set of MinHash permutations, built once."""

    def __init__(self, min_chars: int, max_chars: int, threshold: float):
        from datasketch import MinHash

        self.min_chars, self.max_chars = min_chars, max_chars
        self.bands, self.rows = bands_for(threshold) if threshold > 0 else (0, 0)
        first = MinHash(num_perm=NUM_PERM, seed=1)
        self.permutations, self.scheme = first.permutations, first.scheme

    def status(self, text: str) -> int:
        if len(text) < self.min_chars:
            return TOO_SHORT
        if self.max_chars and len(text) > self.max_chars:
            return TOO_LONG
        return OK

    def band_keys(self, text: str) -> list[int]:
        from datasketch import MinHash

        m = MinHash(num_perm=NUM_PERM, seed=1, permutations=self.permutations, scheme=self.scheme)
        m.update_batch([s.encode() for s in shingles(text)])
        values = np.asarray(m.hashvalues, dtype=np.uint64)
        return [
            int.from_bytes(
                hashlib.blake2b(
                    values[b * self.rows : (b + 1) * self.rows].tobytes(), digest_size=8
                ).digest(),
                "little",
                signed=True,
            )
            for b in range(self.bands)
        ]

    def sign(self, texts, first_order: int):
        """The signature table of consecutive notes whose first has plan order `first_order`."""
        import pyarrow as pa

        status = [self.status(t) for t in texts]
        columns = {
            "order": pa.array(range(first_order, first_order + len(texts)), pa.int64()),
            "status": pa.array(status, pa.int8()),
            "exact": pa.array([exact_digest(t) for t in texts], pa.int64()),
        }
        keys = [
            self.band_keys(t) if s == OK else [0] * self.bands
            for t, s in zip(texts, status, strict=True)
        ]
        for b in range(self.bands):
            columns[f"band_{b}"] = pa.array([k[b] for k in keys], pa.int64())
        return pa.table(columns)
