"""The last step of a streaming stage: shards written by a worker, never by the driver.

Rows reach the writer in batches, each row tagged with the shard it belongs to (`shard`, or
`_shard` for a stage that carries its input's numbering). The writer gathers a shard's rows, and
once all of them are in it makes the shard's table and writes it through a ShardStore, on
whatever node Ray put it, to the stage's folder (shared storage on a cluster). Only one small
summary row per written shard goes back to the driver, which coordinates: it counts, reports
progress and raises a failed write's message.

One writer actor takes a stage's whole stream, so a shard's rows never split between two
writers; writing Parquet costs a small fraction of what made the rows (an engine or a tagger).
If the writer's process dies, the shards it was still gathering are never written: the stage
ends with "incomplete shards", and the same command reruns only those (each shard is written
once, or not at all).
"""

from __future__ import annotations

SUMMARY = {"shard": "int64", "rows": "int64", "tokens": "int64", "error": "string"}
WRITER_CPUS = 0.1  # Parquet writes: a little CPU; must not hold a core an engine needs
WINDOW_BATCHES = 4096
"""Batches in one Ray Data run of a streaming stage. Ray Data keeps a record of every block it
made in the driver until the run ends (MapOperator._output_blocks_stats, Ray 2.60), about 25 KB
a batch over annotate's operators: a stage of millions of notes runs as consecutive runs of
whole shards, each starting its actors anew (annotators reload the tagger, engines the LLM)."""


class ShardWriter:
    """A Ray Data callable (`map_batches(ShardWriter, compute=ActorPoolStrategy(size=1))`).

    `sizes` is {shard: rows it will have}; `make_table(index, table)` turns a shard's gathered
    rows into the table that is written (sorted, validated, with the stage's columns).
    """

    def __init__(self, folder: str, sizes: dict, make_table, key: str = "shard"):
        from sdeid.shard_store import ShardStore

        self.store, self.sizes, self.make_table, self.key = (
            ShardStore(folder),
            sizes,
            make_table,
            key,
        )
        self.parts: dict[int, list] = {}

    def __call__(self, batch):
        import pyarrow as pa
        import pyarrow.compute as pc

        from sdeid.errors import SdeidError

        out = []
        for index in sorted(set(batch[self.key].to_pylist())):
            parts = self.parts.setdefault(index, [])
            parts.append(batch.filter(pc.equal(batch[self.key], index)))
            if sum(t.num_rows for t in parts) < self.sizes[index]:
                continue
            rows = pa.concat_tables(self.parts.pop(index), promote_options="default")
            try:
                table = self.make_table(index, rows)
                self.store.write_table(index, table)
            except SdeidError as e:
                # Sent on as data, not raised: a raised error would be retried and reach the
                # driver wrapped in Ray's; the driver raises this message as it is.
                out.append({"shard": index, "rows": 0, "tokens": 0, "error": str(e)})
                continue
            tokens = (
                pc.sum(rows["output_tokens"]).as_py() if "output_tokens" in rows.column_names else 0
            )
            out.append({"shard": index, "rows": rows.num_rows, "tokens": tokens or 0, "error": ""})
        schema = pa.schema([(name, getattr(pa, kind)()) for name, kind in SUMMARY.items()])
        return pa.Table.from_pylist(out, schema=schema)


def write_shards(ds, folder, sizes: dict, make_table, key: str = "shard"):
    """`ds` ending in one ShardWriter actor; iterate it for the summaries (one row per shard)."""
    from ray.data import ActorPoolStrategy

    return ds.map_batches(
        ShardWriter,
        fn_constructor_kwargs=dict(folder=str(folder), sizes=sizes, make_table=make_table, key=key),
        batch_format="pyarrow",
        batch_size=None,
        compute=ActorPoolStrategy(size=1),
        num_cpus=WRITER_CPUS,
    )


def shard_windows(shards: list[int], rows: dict, max_rows: int) -> list[list[int]]:
    """`shards` in order, cut into consecutive runs of at most `max_rows` rows (a shard
    bigger than that is a run alone): one Ray Data run each, so the driver's record of blocks
    is bounded by a run, not by the corpus."""
    windows, current, size = [], [], 0
    for index in shards:
        if current and size + rows[index] > max_rows:
            windows.append(current)
            current, size = [], 0
        current.append(index)
        size += rows[index]
    return windows + [current] if current else windows


def in_windows(stage: str, shards: list[int], rows: dict, max_rows: int, run_window):
    """The summaries of `run_window(window)` (one Ray Data run) for each window of `shards`
    (shard_windows), in order."""
    windows = shard_windows(shards, rows, max_rows)
    for n, window in enumerate(windows, 1):
        if len(windows) > 1:
            print(f"[{stage}] Ray Data run {n} of {len(windows)}", flush=True)
        yield from run_window(window)
