"""Shards damaged after they were written: each stage's `_done` markers carry the shard's row
count and sha256, and the next stage refuses a shard that does not match, or one that has no
marker (its stage never finished it), naming the file, before it starts any work."""

from __future__ import annotations

import json
import shutil

from conftest import toy_notes
from fault_log import first_error_line, record, sdeid

from sdeid.shard_store import ShardStore


def _flip_byte(path, at=100):
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def test_damaged_generate_shard_is_refused_by_annotate(annotator, tmp_path):
    notes = tmp_path / "notes"
    shutil.copytree(annotator / "notes", notes)
    _flip_byte(notes / "shard-00002.parquet")
    cfg = tmp_path / "ann.yaml"
    cfg.write_text(json.dumps(dict(notes=str(notes), model=str(annotator / "ner"))))
    run = sdeid("annotate", "--config", cfg, "--out", tmp_path / "ann")
    assert run.returncode == 2, run.stderr[-3000:]
    message = first_error_line(run.stderr)
    assert "shard-00002.parquet: checksum does not match its _done marker" in message
    assert not (tmp_path / "ann").exists()
    record(
        "a generated shard changed after it was written (1 byte flipped)",
        0,
        0,
        "annotate refuses it, exit 2 `" + message.split("/notes/", 1)[1] + "`",
    )


def _annotated(tmp_path):
    store = ShardStore(tmp_path / "annotated")
    notes = toy_notes(copies=4)
    for i in range(3):
        store.write(i, notes[i * 4 : (i + 1) * 4])
    return store


def _ner_train(tmp_path, train, tiny_bert):
    cfg = tmp_path / "ner.yaml"
    cfg.write_text(json.dumps(dict(train=str(train), base_model=str(tiny_bert), epochs=1)))
    return sdeid("ner", "train", "--config", cfg, "--out", tmp_path / "ner")


def test_damaged_annotated_shard_is_refused_by_ner_training(tiny_bert, tmp_path):
    store = _annotated(tmp_path)
    path = store.folder / "shard-00001.parquet"
    path.write_bytes(path.read_bytes()[:-40])  # truncated, as by a failed copy
    run = _ner_train(tmp_path, store.folder, tiny_bert)
    assert run.returncode == 2, run.stderr[-3000:]
    message = first_error_line(run.stderr)
    assert "shard-00001.parquet: checksum does not match its _done marker" in message
    assert not (tmp_path / "ner").exists()
    record(
        "an annotated shard truncated after it was written",
        0,
        0,
        "ner train refuses it, exit 2 `" + message.split("/annotated/", 1)[1] + "`",
    )


def test_shard_without_marker_is_refused_by_ner_training(tiny_bert, tmp_path):
    store = _annotated(tmp_path)
    (store.folder / "_done" / "shard-00002.json").unlink()  # as if the job died before the marker
    run = _ner_train(tmp_path, store.folder, tiny_bert)
    assert run.returncode == 2, run.stderr[-3000:]
    message = first_error_line(run.stderr)
    assert "shard-00002.parquet: no _done marker" in message
    record(
        "an annotated shard without its _done marker (job died between the two)",
        0,
        0,
        "ner train refuses it, exit 2 `" + message.split("/annotated/", 1)[1] + "`",
    )
