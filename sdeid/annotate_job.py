"""`sdeid annotate`: tag note shards with the machine annotator into resumable shards.

Output folder:
  shards/           annotated notes, one shard per input shard, with _done markers
  sample_brat/      a few annotated notes as BRAT, for a person to look at
  _manifest.json    config, lineage (the generate and ner_train manifests), counts, timings
Input shards are verified against their checksums; a shard damaged after it was written is
refused by name.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from sdeid.annotate import AnnotateConfig
from sdeid.config import config_to_dict
from sdeid.errors import RunFolderError
from sdeid.manifest import MANIFEST, fingerprint_path, write_manifest
from sdeid.ner_job import absolute


def resolve_inputs(cfg: AnnotateConfig):
    """(input ShardStore, its stage manifest or None, model dir, ner manifest or None)."""
    from sdeid.shard_store import ShardStore

    notes = Path(cfg.notes)
    store = ShardStore(notes / "clean") if (notes / "clean").is_dir() else ShardStore(notes)
    if not store.done():
        raise RunFolderError(f"{cfg.notes}: no completed note shards (is `generate` finished?)")
    upstream = json.loads((notes / MANIFEST).read_text()) if (notes / MANIFEST).is_file() else None
    model = Path(cfg.model)
    ner_manifest = None
    if (model / "model" / "config.json").is_file():
        ner_manifest = (
            json.loads((model / MANIFEST).read_text()) if (model / MANIFEST).is_file() else None
        )
        model = model / "model"
    config = model / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"annotator {cfg.model}: no config.json (not a model folder)")
    archs = json.loads(config.read_text()).get("architectures") or []
    if not any(a.endswith("ForTokenClassification") for a in archs):
        raise FileNotFoundError(
            f"annotator {cfg.model}: architectures {archs} is not a token "
            "classifier (train one with `sdeid ner train`)"
        )
    return store, upstream, model, ner_manifest


def run_annotate(cfg: AnnotateConfig, out_dir, ray_address: str | None = None) -> dict:
    import ray

    from sdeid.annotate import annotate_dataset
    from sdeid.brat import write_brat
    from sdeid.parquet_io import table_to_notes
    from sdeid.ray_env import init_ray
    from sdeid.shard_store import ShardStore, shard_name

    cfg = dataclasses.replace(cfg, notes=absolute(cfg.notes), model=absolute(cfg.model))
    src, upstream, model_dir, ner_manifest = resolve_inputs(cfg)
    out_dir = Path(out_dir)
    dst = ShardStore(out_dir / "shards")
    markers, finished = src.done(), dst.done()  # each reads every marker: read them once
    expected = {i: m["rows"] for i, m in markers.items()}
    todo = [i for i in sorted(expected) if i not in finished]
    blocks = _input_blocks(src, todo, markers, cfg.batch_size)  # refuses damaged shards
    dst.folder.mkdir(parents=True, exist_ok=True)
    dst.clear_temporaries()
    print(
        f"[annotate] {sum(expected.values())} notes in {len(expected)} shards; "
        f"{len(expected) - len(todo)} done, {len(todo)} to annotate",
        flush=True,
    )
    name = f"ner:{fingerprint_path(model_dir)[:16]}"
    t0, written, ray_start_s = time.time(), 0, 0.0
    first_batch_s = None  # actor start + model load + one batch: the run's start-up cost
    if todo:
        init_ray(ray_address)
        # Rates count from here: joining (or starting) Ray is paid once per job, not per note;
        # the actors' start and model load are counted.
        ray_start_s, t0 = time.time() - t0, time.time()
        n_notes = sum(expected[i] for i in todo)
        ds = ray.data.from_arrow(blocks)
        buffers: dict[int, list] = {}
        for batch in annotate_dataset(ds, cfg, str(model_dir), name).iter_batches(
            batch_format="pyarrow", batch_size=None
        ):
            first_batch_s = first_batch_s or time.time() - t0
            for index, rows in _split_by_shard(batch).items():
                buf = buffers.setdefault(index, [])
                buf.append(rows)
                if sum(t.num_rows for t in buf) == expected[index]:
                    _write(dst, index, buffers.pop(index))
                    written += expected[index]
                    el = time.time() - t0
                    print(
                        f"[annotate] {shard_name(index)} done: {written}/{n_notes} notes, "
                        f"{written / el:.1f} notes/s",
                        flush=True,
                    )
        if buffers:
            raise RuntimeError(f"annotation returned incomplete shards {sorted(buffers)}")
    elapsed = time.time() - t0
    n_notes, n_spans = _count(dst)
    if cfg.sample_brat:  # from the first shard: a person looks at a few notes, not all
        first, marker = min(dst.done().items())
        sample = dst.read(first, marker).slice(0, cfg.sample_brat)
        write_brat(table_to_notes(sample, allow_overlap=True), out_dir / "sample_brat", True)
    inputs = {
        "notes": {"path": str(src.folder)},
        "model": {"path": str(model_dir), "sha256": fingerprint_path(model_dir)},
    }
    if upstream:
        inputs["notes_manifest"] = upstream
    if ner_manifest:
        inputs["ner_manifest"] = ner_manifest
    counts = {
        "notes": n_notes,
        "spans": n_spans,
        "annotated_this_run": written,
        "notes_per_s": written / elapsed if written else None,
    }
    write_manifest(
        out_dir,
        "annotate",
        config_to_dict(cfg),
        inputs,
        counts=counts,
        timings={
            "ray_start_s": ray_start_s,
            "first_batch_s": first_batch_s,
            "annotate_s": elapsed,
        },
    )
    return counts


def _count(store) -> tuple[int, int]:
    """(notes, spans) over every shard, by Arrow compute on the spans column alone."""
    import pyarrow.compute as pc

    notes = spans = 0
    for index, marker in sorted(store.done().items()):
        column = store.read(index, marker, columns=["spans"])["spans"]
        notes += len(column)
        spans += pc.sum(pc.list_value_length(column)).as_py() or 0
    return notes, spans


def _input_blocks(store, todo: list[int], markers: dict, batch_size: int) -> list:
    """The notes to tag as Arrow tables of one batch each, with a `_shard` column.

    The driver reads the shards itself (once each: checksum and Parquet from the same bytes), while
    Ray Data's Parquet reader starts a listing task, a pool of footer-reading actors and read
    tasks, and then needs an all-to-all repartition into batch-sized blocks; on 2 cores that was
    10 s before the first note was tagged. A block per batch gives each actor call a full batch
    and spreads even a single shard over the whole pool. The notes sit in Ray's object store
    until tagged (about 3 GB per million notes; Ray spills to disk beyond its store), as they
    did behind the repartition.
    """
    import pyarrow as pa

    blocks = []
    for index in todo:
        table = store.read(index, markers[index])
        table = table.append_column("_shard", pa.array([index] * table.num_rows, pa.int64()))
        blocks += [table.slice(s, batch_size) for s in range(0, table.num_rows, batch_size)]
    return blocks


def _split_by_shard(batch) -> dict:
    """Group a batch's rows by the input shard they came from."""
    import pyarrow.compute as pc

    return {
        index: batch.filter(pc.equal(batch["_shard"], index)).drop_columns(["_shard"])
        for index in sorted(set(batch["_shard"].to_pylist()))
    }


def _write(store, index: int, tables: list) -> None:
    import pyarrow as pa

    from sdeid.parquet_io import table_to_notes

    table = pa.concat_tables(tables)
    table = table.take(pa.compute.sort_indices(table, [("doc_id", "ascending")]))
    notes = table_to_notes(table, where=f"annotated shard {index}", allow_overlap=False)
    extra = {
        c: table[c]
        for c in table.column_names
        if c not in ("doc_id", "text", "spans", "source", "annotator")
    }
    store.write(index, notes, extra)
