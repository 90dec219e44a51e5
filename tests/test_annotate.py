"""annotate: a Ray Data actor pool tags note shards; resume. Damaged shards: tests/faults."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from conftest import ROOT, toy_notes


def _config(root, **over):
    cfg = dict(
        notes=str(root / "notes"),
        model=str(root / "ner"),
        annotators=2,
        cpus_per_annotator=1.0,
        batch_size=2,
        max_length=24,
        stride=6,
        sample_brat=3,
    )
    cfg.update(over)
    path = root / "annotate.yaml"
    path.write_text(json.dumps(cfg))
    return path


def _sdeid(*args):
    return subprocess.run(
        [sys.executable, "-m", "sdeid.cli", *args], capture_output=True, text=True, cwd=ROOT
    )


def test_actor_pool_tags_every_shard_and_resumes_in_runs_of_whole_shards(annotator, tmp_path):
    out = tmp_path / "ann"
    run = _sdeid("annotate", "--config", str(_config(annotator)), "--out", str(out))
    assert run.returncode == 0, run.stderr[-3000:]
    table = pq.read_table(out / "shards")
    assert sorted(table["doc_id"].to_pylist()) == sorted(n.doc_id for n in toy_notes(copies=4))
    rows = table.to_pylist()
    assert all(r["annotator"].startswith("ner:") for r in rows)
    n_spans = sum(len(r["spans"]) for r in rows)
    assert n_spans > 0 and all(0 < s["score"] <= 1 for r in rows for s in r["spans"])
    assert len(list((out / "sample_brat").glob("*.ann"))) == 3
    manifest = json.loads((out / "_manifest.json").read_text())
    assert (
        manifest["counts"]["notes"] == 12
        and manifest["inputs"]["ner_manifest"]["stage"] == "ner_train"
    )
    # The rate counts from the Ray Data run; joining Ray is timed beside it, not in it.
    t = manifest["timings"]
    assert t["ray_start_s"] > 0 and 0 < t["first_shard_s"] <= t["annotate_s"]
    assert manifest["counts"]["notes_per_s"] == pytest.approx(12 / t["annotate_s"])

    # As if the job died before shards 0 and 2. The rerun also bounds its Ray Data runs (their
    # driver keeps a record of every block until a run ends): 2 notes a batch and 2 batches a
    # run make each missing shard of 4 notes a run of its own, with one annotator.
    shards = out / "shards"
    names = ("shard-00000.parquet", "shard-00002.parquet")
    lost = {name: pq.read_table(shards / name).to_pylist() for name in names}
    for name in lost:
        (shards / name).unlink()
    cfg = _config(annotator, annotators=1, window_batches=2)
    again = _sdeid("annotate", "--config", str(cfg), "--out", str(out))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "1 done, 2 to annotate" in again.stdout
    assert "Ray Data run 2 of 2" in again.stdout and "Ray Data run" not in run.stdout
    assert pq.read_table(shards).num_rows == 12
    for name, rows in lost.items():
        tagged = pq.read_table(shards / name).to_pylist()
        assert [r["doc_id"] for r in tagged] == [r["doc_id"] for r in rows]
        # Batches are cut differently, so padding differs: same spans, scores to float noise.
        for x, y in zip(tagged, rows, strict=True):
            assert [(s["start"], s["end"], s["label"]) for s in x["spans"]] == [
                (s["start"], s["end"], s["label"]) for s in y["spans"]
            ]
            assert [s["score"] for s in x["spans"]] == pytest.approx(
                [s["score"] for s in y["spans"]], abs=1e-4
            )


def test_shard_windows_are_consecutive_whole_shards():
    from sdeid.shard_writer import shard_windows

    rows = {0: 4, 1: 4, 2: 10, 3: 1, 4: 3}
    assert shard_windows([0, 1, 2, 3, 4], rows, 8) == [[0, 1], [2], [3, 4]]
    assert shard_windows([1, 3], rows, 100) == [[1, 3]]
    assert shard_windows([], rows, 8) == []


def test_encoder_without_head_is_refused(annotator, tiny_bert, tmp_path):
    run = _sdeid(
        "annotate",
        "--config",
        str(_config(annotator, model=str(tiny_bert))),
        "--out",
        str(tmp_path / "ann"),
    )
    assert run.returncode == 2 and "is not a token classifier" in run.stderr
