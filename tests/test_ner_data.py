"""The NER trainer's data on a local Ray: notes checked and tokenized once in Ray Data tasks,
dev held out by a hash of the note id, a bad note refused by file and id before training."""

from __future__ import annotations

import dataclasses

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sdeid import ner_data
from sdeid.ner_data import dev_shards, note_role, training_data
from sdeid.ner_train import NerTrainConfig, with_label_set
from sdeid.parquet_io import write_notes_parquet
from sdeid.schema import Note, NoteError, Span

TEXT = "Ana vive en Madrid."


def _notes(n):
    spans = [Span(0, 3, "NOMBRE_SUJETO_ASISTENCIA", 0.95), Span(12, 18, "TERRITORIO", 0.4)]
    return [Note(f"n{i:03d}", TEXT, spans) for i in range(n)]


def _config(path, tiny_bert, **over):
    settings = dict(train=str(path), base_model=str(tiny_bert), dev_holdout=0.25)
    return with_label_set(NerTrainConfig(**{**settings, "min_confidence": 0.5, **over}))


def _doc_ids(ds):
    return sorted(set(ds.select_columns(["doc_id"]).to_pandas()["doc_id"]))


def test_holdout_by_note_id_threshold_and_windows(tmp_path, tiny_bert, local_ray, monkeypatch):
    path = write_notes_parquet(_notes(80), str(tmp_path / "notes.parquet"))
    cfg = _config(path, tiny_bert)
    local, local_counts = training_data(cfg)  # 80 notes: the driver reads and tokenizes them
    monkeypatch.setattr(ner_data, "LOCAL_NOTES", 0)  # Ray Data tasks do
    data, counts = training_data(cfg)
    assert counts == local_counts and _doc_ids(local["dev"]) == _doc_ids(data["dev"])
    assert data["train"].take_all() == local["train"].take_all()

    dev_ids, train_ids = _doc_ids(data["dev"]), _doc_ids(data["train"])
    assert dev_ids == sorted(f"n{i:03d}" for i in range(80) if note_role(f"n{i:03d}", cfg) == "dev")
    assert 10 <= len(dev_ids) <= 30 and not set(dev_ids) & set(train_ids)
    assert counts == {"train_notes": 80 - len(dev_ids), "train_windows": data["train"].count(),
                      "dev_notes": len(dev_ids)}  # fmt: skip
    # The span scored 0.4 is gone from both sides: no TERRITORIO tag in any window.
    spans = data["dev"].take_all()
    assert all([s["label"] for s in r["spans"]] == ["NOMBRE_SUJETO_ASISTENCIA"] for r in spans)
    from sdeid.bio import bio_label_names

    names = bio_label_names(cfg.labels)
    tags = {names[t] for r in data["train"].take_all() for t in r["labels"] if t >= 0}
    assert tags == {"O", "B-NOMBRE_SUJETO_ASISTENCIA"}

    # Half the training notes with train_fraction 0.5, and the same dev notes.
    half, half_counts = training_data(dataclasses.replace(cfg, train_fraction=0.5))
    assert _doc_ids(half["dev"]) == dev_ids
    assert 0.3 < half_counts["train_notes"] / counts["train_notes"] < 0.7

    # dev cut into one share per worker: every dev note in exactly one share.
    shares = dev_shards(data["dev"], 2)
    ids = [_doc_ids(shares[f"dev_{r}"]) for r in range(2)]
    assert sorted(ids[0] + ids[1]) == dev_ids and ids[0] and ids[1]


@pytest.mark.parametrize("where", ["driver", "tasks"])
def test_a_bad_note_is_named_before_training(where, tmp_path, tiny_bert, local_ray, monkeypatch):
    if where == "tasks":
        monkeypatch.setattr(ner_data, "LOCAL_NOTES", 0)
    path = write_notes_parquet(_notes(40), str(tmp_path / "notes.parquet"))
    recs = pq.read_table(path).to_pylist()
    recs[17]["spans"][0]["end"] = 10_000
    pq.write_table(pa.Table.from_pylist(recs, schema=pq.read_schema(path)), path)
    with pytest.raises(NoteError, match=r"notes.parquet: note n017: span .* is not inside"):
        training_data(_config(path, tiny_bert, dev_holdout=0.5))


def test_a_few_notes_still_give_one_dev_and_one_training_note(tmp_path, tiny_bert, local_ray):
    """Thresholds no note's hash falls below are lifted to the lowest hash (logged)."""
    path = write_notes_parquet(_notes(3), str(tmp_path / "notes.parquet"))
    _, counts = training_data(_config(path, tiny_bert, dev_holdout=1e-9, train_fraction=1e-9))
    assert counts["dev_notes"] == 1 and counts["train_notes"] == 1


def test_a_damaged_shard_is_named_by_the_checking_tasks(
    tmp_path, tiny_bert, local_ray, monkeypatch
):
    """A shard folder too large for the driver: tasks check every shard's checksum first."""
    from sdeid.shard_store import ShardStore

    monkeypatch.setattr(ner_data, "LOCAL_NOTES", 0)
    store = ShardStore(tmp_path / "annotated")
    notes = _notes(12)
    for i in range(3):
        store.write(i, notes[i * 4 : (i + 1) * 4])
    read = ner_data.read_notes(_config(store.folder, tiny_bert), str(store.folder))
    assert read.count() == 12  # every shard checked and read
    path = store.folder / "shard-00001.parquet"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(NoteError, match=r"shard-00001.parquet: checksum does not match"):
        ner_data.read_notes(_config(store.folder, tiny_bert), str(store.folder))
