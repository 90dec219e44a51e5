"""kill -9 of a whole job (driver and every Ray process it started) at a random point of
generate, annotate, adapt and NER training, then the same command again.

Generation and annotation must end with exactly the notes an uninterrupted run has: none lost,
none twice. Training must resume from a checkpoint it saved and end with every epoch once.
"""

from __future__ import annotations

import json
import re

import pyarrow.parquet as pq
import pytest
from fault_log import (
    GENERATED_IDS,
    annotate_job,
    generate_config,
    kill_when,
    lost_and_duplicated,
    record,
    registered_metric,
    rng,
    sdeid,
)

from sdeid.shard_store import ShardStore


def _done(folder):
    return len(list(folder.glob("_done/*.json")))


def test_kill_generate_then_rerun(generator, tmp_path):
    cfg = generate_config(generator, tmp_path)
    out = tmp_path / "gen"
    at = rng("generate").randint(2, 9)  # of 15 shards
    kill_when(["generate", "--config", cfg, "--out", out], lambda: _done(out / "shards") >= at)
    before = _done(out / "shards")
    run = sdeid("generate", "--config", cfg, "--out", out)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"{before} shards done" in run.stdout
    ids = pq.read_table(out / "shards", columns=["doc_id"])["doc_id"].to_pylist()
    lost, dup = lost_and_duplicated(ids, GENERATED_IDS)
    assert (lost, dup) == (0, 0) and sorted(ids) == GENERATED_IDS
    assert not list((out / "shards").glob(".*"))  # no temporaries left
    record(
        f"kill -9 of generate after {before}/15 shards, same command again",
        lost,
        dup,
        f"rerun: `{before} shards done, {60 - 4 * before} notes to generate`; 60/60 ids",
    )


def test_kill_annotate_then_rerun(annotator, tmp_path):
    cfg, want = annotate_job(annotator, tmp_path, shards=12)
    out = tmp_path / "ann"
    at = rng("annotate").randint(2, 7)  # of 12 shards
    kill_when(["annotate", "--config", cfg, "--out", out], lambda: _done(out / "shards") >= at)
    before = _done(out / "shards")
    run = sdeid("annotate", "--config", cfg, "--out", out)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"{before} done, {12 - before} to annotate" in run.stdout
    ids = ShardStore(out / "shards").read_table(columns=["doc_id"])["doc_id"].to_pylist()
    lost, dup = lost_and_duplicated(ids, want)
    assert (lost, dup) == (0, 0) and sorted(ids) == want
    record(
        f"kill -9 of annotate after {before}/12 shards, same command again",
        lost,
        dup,
        f"rerun: `{before} done, {12 - before} to annotate`; 24/24 notes once",
    )


def test_kill_ner_training_then_rerun(annotator, tiny_bert, tmp_path):
    cfg = json.loads((annotator / "ner.yaml").read_text())
    cfg.update(epochs=4)
    path = tmp_path / "ner.yaml"
    path.write_text(json.dumps(cfg))
    out = tmp_path / "ner"
    r = rng("ner")
    at, delay = r.randint(1, 2), r.uniform(0.0, 1.0)
    snapshot = out / "ray" / "ner" / "checkpoint_manager_snapshot.json"
    kill_when(
        ["ner", "train", "--config", path, "--out", out],
        lambda: registered_metric(snapshot, "epoch") >= at,
        delay=delay,
    )
    assert not (out / "model").exists() and not (out / "_manifest.json").exists()
    run = sdeid("ner", "train", "--config", path, "--out", out)
    assert run.returncode == 0, run.stderr[-3000:]
    resumed = re.search(r"\[ner\] resumed after epoch (\d+)", run.stdout + run.stderr)
    assert resumed, "the rerun did not resume"
    epochs = [e["epoch"] for e in json.loads((out / "metrics.json").read_text())["epochs"]]
    assert epochs == [1, 2, 3, 4]  # every epoch once, those before the kill included
    record(
        f"kill -9 of NER training {delay:.1f} s after epoch {at}'s checkpoint, same command again",
        "0 epochs",
        "0 epochs",
        f"rerun: `[ner] resumed after epoch {resumed.group(1)}`; epochs 1-4 each once",
    )


# In CI, adapt's kill -9 and resume is the BLOOM/ZeRO-3 cell of tests/test_architectures.py
# (LoRA under DeepSpeed); this full-model DDP variant runs with `pytest -m slow` and in the
# fault campaign (benchmarks/faults.py).
@pytest.mark.slow
def test_kill_adapt_then_rerun(lm_corpus, tmp_path):
    root, train, dev, base = lm_corpus
    cfg = tmp_path / "adapt.yaml"
    cfg.write_text(
        json.dumps(
            dict(
                corpus=str(train),
                dev=str(dev),
                base_model=str(base),
                method="full",
                strategy="ddp",
                num_workers=1,
                cpus_per_worker=2.0,
                context_length=64,
                epochs=3,
                micro_batch_size=2,
                learning_rate=1e-2,
                warmup_steps=2,
                checkpoint_every=3,
                log_every=2,
            )
        )
    )
    out = tmp_path / "adapt"
    r = rng("adapt")
    at, delay = 3 * r.randint(1, 3), r.uniform(0.0, 1.0)
    snapshot = out / "ray" / "adapt" / "checkpoint_manager_snapshot.json"
    kill_when(
        ["adapt", "--config", cfg, "--out", out],
        lambda: registered_metric(snapshot, "step") >= at,
        delay=delay,
    )
    registered = registered_metric(snapshot, "step")
    saved = {
        json.loads(p.read_text())["step"]
        for p in out.glob("ray/adapt/checkpoint_*/train_state.json")
    }
    assert registered > 0 and not (out / "merged").exists()
    run = sdeid("adapt", "--config", cfg, "--out", out)
    assert run.returncode == 0, run.stderr[-3000:]
    resumed = re.search(r"\[adapt\] resumed at optimizer step (\d+)", run.stdout + run.stderr)
    assert resumed, "the rerun did not resume"
    step = int(resumed.group(1))
    assert step in saved and step >= registered
    metrics = json.loads((out / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["dev_by_epoch"]] == [1, 2, 3]  # history survives
    assert (out / "merged" / "config.json").exists()
    record(
        f"kill -9 of adaptation {delay:.1f} s after step {at}'s checkpoint, same command again",
        "0 steps",
        "0 steps",
        f"rerun: `[adapt] resumed at optimizer step {step}`; dev loss for epochs 1-3 each once",
    )
