"""The audit's settings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AuditConfig:
    synthetic: str
    """Synthetic note shards: an `annotate` or `generate` output folder, or a shard folder."""
    private: str
    """The private training corpus the generator was adapted to."""
    reference: tuple[str, ...] = ()
    """Corpora (BRAT or Parquet) or text files (one string per line) whose strings are public
    or not private to the training notes; a PHI string found in them is generic, not a leak."""
    generator: str | None = None
    """The generator's adapt folder: the secrets of the canaries planted there are searched as
    private PHI strings (label CANARY, never generic), and its memorization.json figures are
    copied into audit.json."""
    min_phi_chars: int = 6
    """Shorter PHI strings (initials, "M", ages like "40") are too generic to count."""
    ngram_sizes: tuple[int, ...] = (3, 4, 5, 6, 7, 8)
    max_jaccard: float = 0.5
    """Flag a note whose nearest private note is at least this similar (MinHash Jaccard)."""
    num_perm: int = 128

    def check(self):
        if self.min_phi_chars < 1:
            raise ValueError(f"min_phi_chars must be >= 1, got {self.min_phi_chars}")
        if not 0 < self.max_jaccard <= 1:
            raise ValueError(f"max_jaccard must be in (0, 1], got {self.max_jaccard}")
        if not self.ngram_sizes or min(self.ngram_sizes) < 1:
            raise ValueError("ngram_sizes must be positive sizes")
