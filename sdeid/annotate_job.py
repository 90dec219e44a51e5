"""`sdeid annotate`: tag note shards with the machine annotator into resumable shards.

Output folder:
  shards/           annotated notes, one shard per input shard, with _done markers
  sample_brat/      a few annotated notes as BRAT, for a person to look at
  _manifest.json    config, lineage (the generate and ner_train manifests), counts, timings
Input shards are verified against their checksums; a shard damaged after it was written is
refused by name. A corpus of more than `window_batches` batches is tagged in consecutive Ray
Data runs of whole shards (sdeid.shard_writer.shard_windows).
"""

from __future__ import annotations

import dataclasses
import json
import time
from functools import partial
from pathlib import Path

from sdeid.annotate import AnnotateConfig
from sdeid.config import config_to_dict
from sdeid.errors import RunFolderError
from sdeid.manifest import MANIFEST, fingerprint_path, write_manifest
from sdeid.ner_job import absolute
from sdeid.schema import NoteError


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
    from sdeid.brat import write_brat
    from sdeid.parquet_io import table_to_notes
    from sdeid.ray_env import init_ray
    from sdeid.shard_store import ShardStore, shard_name
    from sdeid.shard_writer import WRITER_CPUS, in_windows
    from sdeid.tasks import task_runner

    cfg = dataclasses.replace(cfg, notes=absolute(cfg.notes), model=absolute(cfg.model))
    src, upstream, model_dir, ner_manifest = resolve_inputs(cfg)
    out_dir = Path(out_dir)
    dst = ShardStore(out_dir / "shards")
    markers, finished = src.done(), dst.done()  # each reads every marker: read them once
    expected = {i: m["rows"] for i, m in markers.items()}
    todo = [i for i in sorted(expected) if i not in finished]
    t0, ray_start_s = time.time(), 0.0
    if todo:
        init_ray(ray_address)
        # Rates count from the tagging: joining (or starting) Ray is paid once per job, not
        # per note; the actors' start and model load are counted.
        ray_start_s = time.time() - t0
        # Every input shard's checksum, in tasks on the workers, before anything is written:
        # a damaged shard is refused by name, not found after others were tagged.
        task_runner(WRITER_CPUS)(_verify, [(src.folder, i, markers[i]) for i in todo])
    dst.create()
    print(
        f"[annotate] {sum(expected.values())} notes in {len(expected)} shards; "
        f"{len(expected) - len(todo)} done, {len(todo)} to annotate",
        flush=True,
    )
    name = f"ner:{fingerprint_path(model_dir)[:16]}"
    t0, written = time.time(), 0
    first_shard_s = None  # actor start + model load + the first shard tagged and written
    if todo:
        n_notes = sum(expected[i] for i in todo)
        # Consecutive Ray Data runs of whole shards: the driver's record of blocks is a run's.
        window = partial(_annotate_window, cfg, src, markers, expected, dst, model_dir, name)
        max_rows = cfg.window_batches * cfg.batch_size
        for s in in_windows("annotate", todo, expected, max_rows, window):
            first_shard_s = first_shard_s or time.time() - t0
            if s["error"]:
                raise NoteError(s["error"])
            written += s["rows"]
            print(
                f"[annotate] {shard_name(s['shard'])} done: {written}/{n_notes} notes, "
                f"{written / (time.time() - t0):.1f} notes/s",
                flush=True,
            )
        if written != n_notes:
            raise RuntimeError(f"annotation returned {written} of {n_notes} notes")
    elapsed = time.time() - t0
    # Counted in a task per shard (in order, in this process, when nothing ran on Ray): the
    # driver never decodes a span, whatever the corpus size.
    shard_counts = task_runner(WRITER_CPUS)(
        _shard_counts, [(dst.folder, i, m) for i, m in sorted(dst.done().items())]
    )
    n_notes, n_spans = (sum(c[k] for c in shard_counts) for k in (0, 1))
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
            "first_shard_s": first_shard_s,
            "annotate_s": elapsed,
        },
    )
    return counts


def _annotate_window(cfg, src, markers, rows, dst, model_dir, name, shards):
    """One Ray Data run: read `shards`, tag them, write them; yields a summary per shard."""
    import ray

    from sdeid.annotate import annotate_dataset
    from sdeid.shard_writer import WRITER_CPUS, write_shards

    parts = _read_parts(shards, rows, cfg.annotators, cfg.batch_size)
    ds = ray.data.from_items(parts, override_num_blocks=len(parts))
    ds = ds.map_batches(
        partial(_read_part, src.folder, {i: markers[i] for i in shards}),
        batch_format="pyarrow",
        batch_size=1,
        num_cpus=WRITER_CPUS,
    )
    ds = annotate_dataset(ds, cfg, str(model_dir), name)
    sizes = {i: rows[i] for i in shards}
    yield from write_shards(ds, dst.folder, sizes, _annotated_table, "_shard").iter_rows()


def _shard_counts(folder, index: int, marker: dict) -> tuple[int, int]:
    """(notes, spans) of one annotated shard, by Arrow compute on its spans column alone."""
    import pyarrow.compute as pc

    from sdeid.shard_store import ShardStore

    column = ShardStore(folder).read(index, marker, columns=["spans"])["spans"]
    return len(column), pc.sum(pc.list_value_length(column)).as_py() or 0


def _read_parts(shards: list[int], rows: dict, annotators: int, batch_size: int) -> list:
    """Read tasks: one per shard, or where there are fewer shards than annotators, each shard
    in as many parts (of at least a batch) as keep every annotator busy."""
    per_shard = -(-annotators // len(shards))
    out = []
    for index in shards:
        parts = max(1, min(per_shard, rows[index] // batch_size))
        out += [{"shard": index, "part": p, "parts": parts} for p in range(parts)]
    return out


def _verify(folder, index: int, marker: dict) -> None:
    from sdeid.shard_store import ShardStore

    ShardStore(folder).read(index, marker, columns=[])


def _read_part(folder, markers: dict, item):
    """A read task, on a worker: one part of an input shard, its checksum verified, with a
    `_shard` column that carries the shard's number to the writer."""
    import pyarrow as pa

    from sdeid.shard_store import ShardStore

    index, part, parts = (item[c][0].as_py() for c in ("shard", "part", "parts"))
    table = ShardStore(folder).read(index, markers[index])
    size = -(-table.num_rows // parts)
    table = table.slice(part * size, size)
    return table.append_column("_shard", pa.array([index] * table.num_rows, pa.int64()))


def _annotated_table(index: int, table):
    """A shard's tagged rows, in doc_id order and checked, as the table that is written."""
    import pyarrow as pa

    from sdeid.parquet_io import notes_to_table, table_to_notes

    table = table.drop_columns(["_shard"])
    table = table.take(pa.compute.sort_indices(table, [("doc_id", "ascending")]))
    notes = table_to_notes(table, where=f"annotated shard {index}", allow_overlap=False)
    extra = {
        c: table[c]
        for c in table.column_names
        if c not in ("doc_id", "text", "spans", "source", "annotator")
    }
    return notes_to_table(notes, extra)
