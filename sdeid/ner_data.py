"""The NER trainer's data as Ray Datasets: notes in, BIO-labelled windows out, tokenized once.

The driver looks at a large Parquet corpus (the synthetic one, which may hold millions of
notes) without reading its notes: each file's footer, or a shard folder's `_done` markers, with
every shard's checksum checked in tasks. The other formats hold the small private corpora; the
driver reads and checks those whole, as before, and Parquet of at most LOCAL_NOTES notes too.
Ray Data tasks (or the driver, for those) then check each note, apply the label map and the
confidence threshold, and cut the training notes into windows. Both datasets are materialized
once, before Ray Train starts: a bad note is refused (by file and note id) before any worker
runs, and no epoch tokenizes again. Each Ray Train worker iterates its own share of the
windows and tags its own share of dev (sdeid.ner_train).

Which notes are dev (when dev is held out of train) and which are in a `train_fraction`
sample is decided by a hash of the note id and the seed: each task decides alone, the same way
on every run and for any number of workers or shards.
"""

from __future__ import annotations

import functools
import hashlib

from sdeid.schema import NOTE_COLUMNS, Note, NoteError, Span, validate_note

NOTES_PER_BATCH = 64
"""Notes a tokenizing task takes at a time: small enough for even shares of a small corpus."""

LOCAL_NOTES = 20_000
"""A Parquet corpus of at most this many notes is read and tokenized by the driver (seconds):
Ray Data tasks would each import transformers first, which costs more at this size."""


def hashed_unit(doc_id: str, seed: int, purpose: str) -> float:
    """A number in [0, 1) fixed by the note id, the seed and what it decides."""
    digest = hashlib.blake2b(f"{purpose}:{seed}:{doc_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def note_role(doc_id: str, cfg) -> str:
    """'dev' (held out of train), 'train', or 'unused' (outside the train_fraction sample)."""
    if cfg.dev is None and hashed_unit(doc_id, cfg.seed, "dev") < cfg.dev_holdout:
        return "dev"
    if hashed_unit(doc_id, cfg.seed, "train") < cfg.train_fraction:
        return "train"
    return "unused"


def window_schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("doc_id", pa.string()),
            ("input_ids", pa.list_(pa.int32())),
            ("labels", pa.list_(pa.int32())),
            ("error", pa.string()),
        ]
    )


def dev_schema():
    import pyarrow as pa

    span = pa.struct([("start", pa.int32()), ("end", pa.int32()), ("label", pa.string())])
    return pa.schema(
        [
            ("doc_id", pa.string()),
            ("text", pa.string()),
            ("spans", pa.list_(span)),
            ("error", pa.string()),
        ]
    )


def read_notes(cfg, path: str):
    """The notes of `path`, with a `path` column (the file each came from, for error
    messages): a pyarrow Table where the driver reads them (the other formats, which hold the
    small private corpora, and Parquet of at most LOCAL_NOTES notes), else a Ray Dataset whose
    tasks read one file each."""
    import pyarrow as pa
    import ray

    from sdeid.corpus_io import detect_format
    from sdeid.parquet_io import notes_to_table
    from sdeid.tasks import task_runner

    if detect_format(path) != "parquet":
        from sdeid.ner_train import read_gold

        table = notes_to_table(read_gold(cfg, path))
        return table.append_column("path", pa.array([path] * table.num_rows, pa.string()))
    files, markers = parquet_files(path)
    if sum(f["rows"] for f in files) <= LOCAL_NOTES:
        return pa.concat_tables(
            _read_file(f["file"], f["index"], markers.get(f["index"])) for f in files
        )
    # Every shard's checksum, in tasks, before any note is read: a damaged shard is refused
    # by name (an error inside a Ray Data task reaches the driver without its message).
    checks = [(f["file"], f["index"], markers[f["index"]]) for f in files if markers]
    task_runner(0.1)(_check_file, checks)
    # One read task per file (as annotate reads its shards): Ray Data's read_parquet samples
    # and plans on every execution, seconds each even for a small corpus.
    items = ray.data.from_items([f["file"] for f in files], override_num_blocks=len(files))
    return items.map_batches(_read_item, batch_format="pyarrow", batch_size=1)


def parquet_files(path: str):
    """([{"file", "rows", "index"}], {shard index: `_done` marker}) for a Parquet file, a
    folder of them, or a shard folder. A shard folder's rows come from its markers (its
    checksums and columns are checked as its shards are read); other files' footers are read
    here, for their rows and columns."""
    from pathlib import Path

    import pyarrow.parquet as pq

    from sdeid.shard_store import ShardStore, shard_name

    folder = Path(path)
    if folder.is_dir() and (folder / "_done").is_dir():
        markers = ShardStore(folder).complete()
        if not markers:
            raise NoteError(f"{path}: no completed note shards")
        files = [
            {"file": str(folder / shard_name(i)), "rows": m["rows"], "index": i}
            for i, m in sorted(markers.items())
        ]
        return files, markers
    if folder.is_dir():
        names = [str(f) for f in sorted(folder.glob("*.parquet")) if f.name[0] != "."]
        if not names:
            raise NoteError(f"{path}: no .parquet shards in this folder")
    else:
        names = [str(folder)]
    files = []
    for name in names:
        try:
            meta = pq.read_metadata(name)
        except Exception as e:  # pyarrow raises several types for a damaged file
            raise NoteError(
                f"{name}: not a readable Parquet file ({type(e).__name__}: {e})"
            ) from None
        _check_columns(name, meta.schema.to_arrow_schema().names)
        files.append({"file": name, "rows": meta.num_rows, "index": -1})
    return files, {}


def _check_columns(name: str, columns) -> None:
    missing = [c for c in NOTE_COLUMNS if c not in columns]
    if missing:
        raise NoteError(f"{name}: missing note column(s) {missing}; has {list(columns)}")


def _read_file(path: str, index: int = -1, marker: dict | None = None):
    """One Parquet file's note columns and its name on every row; a shard's checksum is
    checked against its marker on the way."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sdeid.shard_store import ShardStore

    if marker is None:
        table = pq.read_table(path, columns=list(NOTE_COLUMNS))
    else:
        table = ShardStore(path.rsplit("/", 1)[0]).read(index, marker)
        _check_columns(path, table.column_names)
        table = table.select(list(NOTE_COLUMNS))
    return table.append_column("path", pa.array([path] * table.num_rows, pa.string()))


def _check_file(path: str, index: int, marker: dict) -> int:
    """A shard's checksum and columns checked in a task; only its row count comes back (its
    notes would all pass through the driver)."""
    return _read_file(path, index, marker).num_rows


def _read_item(item):
    """A Ray Data read task: the file named by the one row of `item`."""
    return _read_file(item["item"][0].as_py())


def _apply(notes, fn, batch_size, **kwargs):
    """fn over the notes: in this process for a Table, in Ray Data tasks for a Dataset."""
    import pyarrow as pa

    if isinstance(notes, pa.Table):
        return fn(notes, **kwargs)
    return notes.map_batches(fn, batch_format="pyarrow", batch_size=batch_size, fn_kwargs=kwargs)


def _rows(data):
    import pyarrow as pa

    return data.to_pylist() if isinstance(data, pa.Table) else data.iter_rows()


@functools.lru_cache(maxsize=2)
def _tokenizer(base_model: str):
    from transformers import AutoTokenizer

    from sdeid.ner_train import resolve_model_dir

    return AutoTokenizer.from_pretrained(resolve_model_dir(base_model))


@functools.lru_cache(maxsize=2)
def _label_map(path: str):
    from sdeid.label_map import load_label_map

    return load_label_map(path)


def _note(rec: dict, cfg) -> Note:
    """One row as a checked note: label map applied, low-confidence spans dropped."""
    where = f"{rec['path']}: note {rec['doc_id']}"
    if rec["doc_id"] is None or rec["text"] is None or rec["spans"] is None:
        raise NoteError(f"{where}: doc_id, text and spans must not be null")
    from sdeid.label_map import DROP

    spans = []
    mapping = _label_map(cfg.label_map).mapping if cfg.label_map else {}
    for s in rec["spans"]:
        label = mapping.get(s["label"], s["label"])
        if label == DROP or (s["score"] is not None and s["score"] < cfg.min_confidence):
            continue
        spans.append(Span(s["start"], s["end"], label, s["score"]))
    note = Note(rec["doc_id"], rec["text"], sorted(spans))
    validate_note(note, cfg.labels, where=where)
    return note


def prepare_batch(table, cfg_dict: dict, want: str):
    """A map_batches step: note rows in; out, for `want` "train", the windows of the notes
    whose role is train; for "holdout", the notes whose role is dev; for "all", every note.
    A bad note becomes a row with its error, so the driver can name it (Ray Data does not
    carry a task's exception back)."""
    import pyarrow as pa

    from sdeid.bio import (
        bio_label_names,
        encode_document,
        training_examples,
        word_labels_from_spans,
    )
    from sdeid.ner_train import NerTrainConfig

    cfg = NerTrainConfig(**cfg_dict)
    out = {name: [] for name in (window_schema() if want == "train" else dev_schema()).names}
    for rec in table.to_pylist():
        if want != "all" and note_role(rec["doc_id"], cfg) != (
            "dev" if want == "holdout" else want
        ):
            continue
        try:
            note = _note(rec, cfg)
        except NoteError as e:
            for name in out:
                out[name].append(str(e) if name == "error" else None)
            continue
        if want != "train":
            out["doc_id"].append(note.doc_id)
            out["text"].append(note.text)
            out["spans"].append([dict(start=s.start, end=s.end, label=s.label) for s in note.spans])
            out["error"].append(None)
            continue
        tokenizer = _tokenizer(cfg.base_model)
        label_ids = {n: i for i, n in enumerate(bio_label_names(cfg.labels))}
        doc = encode_document(tokenizer, note.text)
        examples = training_examples(
            doc,
            word_labels_from_spans(doc, note.spans),
            label_ids,
            tokenizer.cls_token_id,
            tokenizer.sep_token_id,
            cfg.max_length,
            cfg.stride,
        )
        for ids, labels in examples:
            out["doc_id"].append(note.doc_id)
            out["input_ids"].append(ids)
            out["labels"].append(labels)
            out["error"].append(None)
    schema = window_schema() if want == "train" else dev_schema()
    return pa.Table.from_pydict(out, schema=schema)


def _summary(table):
    """One row per block: its rows, its distinct notes, and its first error."""
    import pyarrow as pa
    import pyarrow.compute as pc

    errors = table.filter(pc.is_valid(table["error"]))["error"]
    good = table.filter(pc.is_null(table["error"]))
    return pa.table(
        {
            "rows": [good.num_rows],
            "notes": [pc.count_distinct(good["doc_id"]).as_py()],
            "error": [errors[0].as_py() if len(errors) else None],
        }
    )


def materialize(notes, cfg, want: str):
    """(the prepared dataset in Ray's object store, its rows, its notes), or NoteError naming
    the first bad note. One more pass over the blocks, reading two columns, finds errors and
    counts notes (a note's windows stay in one block)."""
    import dataclasses

    import ray

    kwargs = {"cfg_dict": dataclasses.asdict(cfg), "want": want}
    prepared = _apply(notes, prepare_batch, NOTES_PER_BATCH, **kwargs)
    if isinstance(prepared, ray.data.Dataset):
        ds = prepared.materialize()
        summary = ds.select_columns(["doc_id", "error"])
        summary = summary.map_batches(_summary, batch_format="pyarrow", batch_size=None)
    else:
        ds, summary = ray.data.from_arrow(prepared), _summary(prepared)
    rows = n_notes = 0
    for block in _rows(summary):
        if block["error"] is not None:
            raise NoteError(block["error"])
        rows, n_notes = rows + block["rows"], n_notes + block["notes"]
    return ds, rows, n_notes


def _hash_summary(table, cfg_dict: dict):
    """One row per block, from the note ids alone: how many notes fall below the dev and
    train thresholds, and the smallest hashes (to lift a threshold that takes no note)."""
    import pyarrow as pa

    from sdeid.ner_train import NerTrainConfig

    cfg = NerTrainConfig(**cfg_dict)
    dev = [
        hashed_unit(d, cfg.seed, "dev") if cfg.dev is None else 1.0
        for d in table["doc_id"].to_pylist()
    ]
    rest = [
        hashed_unit(d, cfg.seed, "train")
        for d, h in zip(table["doc_id"].to_pylist(), dev, strict=True)
        if h >= cfg.dev_holdout
    ]
    return pa.table(
        {
            "dev": [sum(h < cfg.dev_holdout for h in dev)],
            "min_dev": [min(dev, default=1.0)],
            "train": [sum(h < cfg.train_fraction for h in rest)],
            "min_train": [min(rest, default=1.0)],
        }
    )


def effective_thresholds(notes, cfg):
    """The config with dev_holdout and train_fraction lifted, where no note's hash falls below
    them (a corpus of a few notes), to just above the smallest hash: at least one note is held
    out and at least one trained on, as the seeded samples they replace did."""
    import dataclasses
    import math

    if cfg.dev is not None and cfg.train_fraction >= 1:
        return cfg  # nothing to decide
    summary = _apply(notes, _hash_summary, None, cfg_dict=dataclasses.asdict(cfg))
    dev = train = 0
    min_dev = min_train = 1.0
    for row in _rows(summary):
        dev, train = dev + row["dev"], train + row["train"]
        min_dev, min_train = min(min_dev, row["min_dev"]), min(min_train, row["min_train"])
    if cfg.dev is None and dev == 0 and min_dev < 1:
        cfg = dataclasses.replace(cfg, dev_holdout=math.nextafter(min_dev, 1))
        print("[ner] no note hashed below dev_holdout; holding out the lowest", flush=True)
    if train == 0 and min_train < 1:
        cfg = dataclasses.replace(cfg, train_fraction=math.nextafter(min_train, 1))
        print("[ner] no note hashed below train_fraction; training on the lowest", flush=True)
    return cfg


def training_data(cfg):
    """{"train": windows, "dev": dev notes} materialized, and their counts."""
    train_notes = read_notes(cfg, cfg.train)
    cfg = effective_thresholds(train_notes, cfg)
    train, windows, n_train = materialize(train_notes, cfg, "train")
    if cfg.dev is not None:
        dev, _, n_dev = materialize(read_notes(cfg, cfg.dev), cfg, "all")
    else:
        dev, _, n_dev = materialize(train_notes, cfg, "holdout")
    if windows == 0:
        raise NoteError(f"{cfg.train}: no training notes (train_fraction {cfg.train_fraction})")
    if n_dev == 0:
        raise NoteError(
            f"{cfg.dev or cfg.train}: no dev notes (dev_holdout {cfg.dev_holdout} of "
            f"{n_train} training notes)"
        )
    return {"train": train, "dev": dev}, {
        "train_notes": n_train,
        "train_windows": windows,
        "dev_notes": n_dev,
    }


PREP_FIELDS = (
    "train", "base_model", "labels", "label_map", "discontinuous", "min_confidence",
    "max_length", "stride",
)  # fmt: skip
"""The fields that decide a note's windows (the others decide only which notes train)."""

_WINDOWS_BY_NOTE: dict[tuple, dict] = {}


def planned_windows(cfg) -> dict | None:
    """{"train_notes", "train_windows"} as training_data will count them, counted in this
    process before anything runs (for --dry-run); None for a Parquet corpus of more than
    LOCAL_NOTES notes (counted by Ray Data when it is trained on). A bad note that training
    would read is refused here as training refuses it."""
    import dataclasses

    import pyarrow as pa

    from sdeid.corpus_io import detect_format

    if detect_format(cfg.train) == "parquet":
        if sum(f["rows"] for f in parquet_files(cfg.train)[0]) > LOCAL_NOTES:
            return None
    key = tuple(str(getattr(cfg, name)) for name in PREP_FIELDS)
    if key not in _WINDOWS_BY_NOTE:  # an ablation's points share one corpus: tokenize it once
        every_note = dataclasses.replace(cfg, dev=cfg.dev or "-", train_fraction=1.0)
        _WINDOWS_BY_NOTE[key] = _windows_by_note(read_notes(cfg, cfg.train), every_note)
    by_note = _WINDOWS_BY_NOTE[key]
    cfg = effective_thresholds(pa.table({"doc_id": pa.array(list(by_note), pa.string())}), cfg)
    roles = {doc_id: note_role(doc_id, cfg) for doc_id in by_note}
    for doc_id, (_, error) in by_note.items():
        if error is not None and roles[doc_id] != "unused":
            raise NoteError(error)
    train = [doc_id for doc_id, role in roles.items() if role == "train"]
    return {"train_notes": len(train), "train_windows": sum(by_note[d][0] for d in train)}


def _windows_by_note(notes, cfg) -> dict[str, tuple[int, str | None]]:
    """{doc_id: (windows, error)} for every note of a Table, `cfg` making them all train."""
    import dataclasses

    cfg_dict = dataclasses.asdict(cfg)
    by_note = {}
    for i in range(notes.num_rows):
        windows = prepare_batch(notes.slice(i, 1), cfg_dict, "train")
        error = windows["error"][0].as_py() if windows.num_rows else None
        by_note[notes["doc_id"][i].as_py()] = (windows.num_rows, error)
    return by_note


def dev_shards(dev, world: int) -> dict:
    """dev cut into one dataset per worker ("dev_0", ...), as even as its notes allow: Ray
    Train's own split would drop rows to make the shares equal, and dev must be scored whole."""
    parts = dev.repartition(world).materialize().split(world)
    return {f"dev_{rank}": part for rank, part in enumerate(parts)}


def notes_from_rows(table) -> list[Note]:
    """A worker's dev rows back into notes, for the tagger and the scorer."""
    return [
        Note(r["doc_id"], r["text"], [Span(s["start"], s["end"], s["label"]) for s in r["spans"]])
        for r in table.select(["doc_id", "text", "spans"]).to_pylist()
    ]
