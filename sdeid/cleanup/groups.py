"""Exact duplicates and near-duplicate candidates from the signature files, then the choice.

Each function reads only the columns it needs from every signature file: an exact digest or one
band's keys with the plan order, 16 bytes a note, so one task holds a band of 100M notes in 1.6 GB.
"""

from __future__ import annotations

import numpy as np

from sdeid.cleanup.signatures import OK


def _read(files, columns):
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pa.concat_tables([pq.read_table(f, columns=columns) for f in files])


def exact_duplicates(files) -> np.ndarray:
    """Plan orders of the notes that repeat an earlier note's text (length rule passed)."""
    import pyarrow.compute as pc

    table = _read(files, ["order", "status", "exact"])
    table = table.filter(pc.equal(table["status"], OK))
    first = table.group_by("exact").aggregate([("order", "min")])
    kept = first["order_min"]
    return np.setdiff1d(table["order"].to_numpy(), kept.to_numpy())


def band_buckets(files, band: int, exclude: np.ndarray) -> list[np.ndarray]:
    """The notes sharing a key in one band, as arrays of plan orders (only groups of two or
    more; notes failing the length rule or in `exclude` take no part)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = f"band_{band}"
    table = _read(files, ["order", "status", column])
    keep = pc.and_(
        pc.equal(table["status"], OK),
        pc.invert(pc.is_in(table["order"], value_set=pa.array(exclude, pa.int64()))),
    )
    table = table.filter(keep)
    groups = table.group_by(column).aggregate([("order", "list"), ("order", "count")])
    groups = groups.filter(pc.greater(groups["order_count"], 1))
    return [np.sort(np.asarray(g)) for g in groups["order_list"].to_pylist()]


def near_duplicates(buckets: list[np.ndarray]) -> np.ndarray:
    """In plan order, a note is removed when a bucket it is in holds a note kept before it:
    what querying a MinHash LSH index of the kept notes, filled in plan order, answers."""
    buckets_of: dict[int, list[int]] = {}
    for b, members in enumerate(buckets):
        for order in members.tolist():
            buckets_of.setdefault(order, []).append(b)
    kept_in = [[] for _ in buckets]  # kept members of each bucket, in plan order
    removed = []
    for order in sorted(buckets_of):
        if any(kept_in[b] for b in buckets_of[order]):
            removed.append(order)
        else:
            for b in buckets_of[order]:
                kept_in[b].append(order)
    return np.asarray(removed, dtype=np.int64)
