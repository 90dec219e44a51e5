"""Clean-up of generated notes, in datatrove's shape: every step streams its own files.

    sign     per raw shard (a task each): the length rule, an exact-text digest and the MinHash
             band keys of every note, written as a small signature file; the MinHash
             permutations are built once per task, not once per note
    exact    one task over the signature files' digests: of a group of identical texts the
             first in plan order stays
    bands    one task per LSH band: notes whose band keys collide are candidate pairs
    choose   over the candidates only: in plan order, a note is a near-duplicate when it shares
             a band with a note already kept (what a MinHash LSH index filled in plan order says)
    filter   per raw shard (a task each): the shard less its removed rows, written to clean/

Plan order is shard order, then row order within a shard, so the notes kept are the ones the
one-process clean-up kept. The driver holds only the removed row numbers.
"""

from sdeid.cleanup.job import clean_shards

__all__ = ["clean_shards"]
