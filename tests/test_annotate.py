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


def test_actor_pool_tags_every_shard_and_resumes(annotator, tmp_path):
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

    (out / "shards" / "shard-00001.parquet").unlink()  # as if the job died before shard 1
    again = _sdeid("annotate", "--config", str(_config(annotator)), "--out", str(out))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 done, 1 to annotate" in again.stdout
    assert pq.read_table(out / "shards").num_rows == 12


def test_encoder_without_head_is_refused(annotator, tiny_bert, tmp_path):
    run = _sdeid(
        "annotate",
        "--config",
        str(_config(annotator, model=str(tiny_bert))),
        "--out",
        str(tmp_path / "ann"),
    )
    assert run.returncode == 2 and "is not a token classifier" in run.stderr
