"""The clean-up steps (see the package docstring) as tasks: on Ray when the job runs on Ray
(vLLM generation), else one after another in this process (the hf backend)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from sdeid.tasks import shared, task_runner

# A note's plan order: its shard's index in the high bits, its row in the shard in the low.
ROW_BITS = 32


def clean_shards(cfg, store, clean_dir: Path) -> dict:
    """Filter every raw shard of `store` into `clean_dir` (same shard numbers). Returns the
    counts: notes_raw, notes_clean and removed by rule."""
    from sdeid.cleanup import groups
    from sdeid.cleanup.signatures import bands_for

    clean_dir = Path(clean_dir)
    work = clean_dir.parent / (clean_dir.name + "_work")
    shutil.rmtree(work, ignore_errors=True)  # signatures are cheap to remake
    work.mkdir(parents=True)
    done = sorted(store.done().items())
    rules = (cfg.min_chars, cfg.max_chars, cfg.near_dup_threshold)
    run = task_runner()

    signed = run(_sign, [(store.folder, i, m, work, rules) for i, m in done])
    files = [f for f, _, _ in signed]
    # The group-bys read a column of every note, so they are tasks too: the driver holds only
    # what they return, the duplicates and the candidate buckets.
    (exact,) = run(groups.exact_duplicates, [(files,)])
    near = np.zeros(0, np.int64)
    if cfg.near_dup_threshold > 0:
        bands, _ = bands_for(cfg.near_dup_threshold)
        exclude = shared(exact)
        buckets = run(groups.band_buckets, [(files, b, exclude) for b in range(bands)])
        near = groups.near_duplicates([m for per_band in buckets for m in per_band])
    removed = {index: set() for index, _ in done}
    for order in np.concatenate([exact, near]).tolist():
        removed[order >> ROW_BITS].add(order & ((1 << ROW_BITS) - 1))
    for (index, _), (_, short, long) in zip(done, signed, strict=True):
        removed[index].update(short + long)
    run(_filter, [(store.folder, i, m, clean_dir, sorted(removed[i])) for i, m in done])
    shutil.rmtree(work)

    raw = sum(m["rows"] for _, m in done)
    return {
        "notes_raw": raw,
        "notes_clean": raw - sum(len(r) for r in removed.values()),
        "removed": {
            "too_short": sum(len(s) for _, s, _ in signed),
            "too_long": sum(len(lg) for _, _, lg in signed),
            "exact_duplicate": len(exact),
            "near_duplicate": len(near),
        },
    }


def _sign(folder, index: int, marker: dict, work: Path, rules):
    """Sign one raw shard; returns (signature file, rows too short, rows too long)."""
    import pyarrow.parquet as pq

    from sdeid.cleanup.signatures import TOO_LONG, TOO_SHORT, Signer
    from sdeid.shard_store import ShardStore

    texts = ShardStore(folder).read(index, marker, columns=["text"])["text"].to_pylist()
    table = Signer(*rules).sign(texts, index << ROW_BITS)
    path = Path(work) / f"sig-{index:05d}.parquet"
    pq.write_table(table, path)
    status = table["status"].to_pylist()
    return (
        path,
        [r for r, s in enumerate(status) if s == TOO_SHORT],
        [r for r, s in enumerate(status) if s == TOO_LONG],
    )


def _filter(folder, index: int, marker: dict, clean_dir: Path, rows: list[int]) -> int:
    """Write one raw shard less `rows` into clean_dir, from wherever this task runs."""
    import pyarrow as pa

    from sdeid.generate_job import EXTRA_COLUMNS
    from sdeid.parquet_io import table_to_notes
    from sdeid.shard_store import ShardStore

    table = ShardStore(folder).read(index, marker)
    keep = np.ones(table.num_rows, bool)
    keep[rows] = False
    table = table.filter(pa.array(keep))
    notes = table_to_notes(table, where=f"clean shard {index}", allow_overlap=True)
    extra = {c: table[c].to_pylist() for c in EXTRA_COLUMNS if c in table.column_names}
    ShardStore(clean_dir).write(index, notes, extra)
    return table.num_rows
