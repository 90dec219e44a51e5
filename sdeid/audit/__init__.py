"""Privacy audit of synthetic notes against the private corpus they were made from, and the filter.

Three measures:
- word n-gram recall, n = 3..8: the share of the synthetic corpus's word n-grams (lower-cased
  `\\w+` words, every occurrence counted) that occur anywhere in the private corpus. The paper
  reports 5-gram recall (0.328 with little adaptation data, 0.122 with the most).
- verbatim PHI: every gold span surface of the private corpus with at least `min_phi_chars`
  characters, searched as a word sequence (case kept, punctuation and spacing ignored) in each
  synthetic note. A string found there that also occurs in a reference corpus (other splits, a
  public list) is *generic* ("Madrid", "40 años"); one found only in the private notes is a leak.
- each synthetic note's nearest private note by MinHash Jaccard over word 5-grams.
A note is flagged when it holds a leak or its nearest private note is at least `max_jaccard`
similar. Outputs name notes by id and offset, never by their text.

It streams (sdeid.audit.job): the private side, small, is built once into an index
(sdeid.audit.index) that every shard task shares; each task audits its notes
(sdeid.audit.notes), writes its unflagged notes and their per-note rows, and returns tallies
(sdeid.audit.tally) whose sums are the figures before and after the filter.
"""

from sdeid.audit.config import AuditConfig
from sdeid.audit.index import PrivateIndex, find_sequences, ngram_recall, phi_strings
from sdeid.audit.job import run_audit
from sdeid.audit.notes import measure

__all__ = [
    "AuditConfig",
    "PrivateIndex",
    "find_sequences",
    "measure",
    "ngram_recall",
    "phi_strings",
    "run_audit",
]
