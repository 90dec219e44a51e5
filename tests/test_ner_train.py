"""Real Ray Train runs of a tiny BERT built from a config: 2 workers (gloo, DDP); bf16 autocast."""

from __future__ import annotations

import dataclasses
import json

import pyarrow.parquet as pq
import pytest
from conftest import toy_notes

from sdeid.brat import read_brat, write_brat
from sdeid.config import ConfigError
from sdeid.manifest import read_manifest
from sdeid.ner_job import ner_plan, run_ner_train
from sdeid.ner_train import NerTrainConfig
from sdeid.parquet_io import notes_to_table
from sdeid.schema import Note, NoteError, Span


def toy_config(tmp_path, tiny_bert, **over) -> NerTrainConfig:
    """12 epochs of the tiny BERT on the toy notes, dev = test = one copy of them."""
    train = write_brat(toy_notes(copies=8), tmp_path / "train")
    dev = write_brat(toy_notes(), tmp_path / "dev")
    settings = dict(
        train=str(train),
        dev=str(dev),
        test=str(dev),
        base_model=str(tiny_bert),
        epochs=12,
        batch_size=4,
        learning_rate=5e-3,
        warmup_ratio=0.0,
        max_length=24,
        stride=6,
        log_every=1000,
    )
    return NerTrainConfig(**{**settings, **over})


def test_two_bf16_workers_learn_the_toy_corpus_and_keep_float32_weights(
    tmp_path, tiny_bert, local_ray
):
    """Two Ray Train workers (DDP over gloo) in bf16 mixed precision: the loss falls, dev
    picks the best epoch, and the saved weights are float32."""
    import torch
    from transformers import AutoModelForTokenClassification

    cfg = toy_config(tmp_path, tiny_bert, num_workers=2, cpus_per_worker=1, precision="bf16")
    result = run_ner_train(cfg, tmp_path / "out")

    losses = [m["train_loss"] for m in result["epochs"]]
    assert len(losses) == 12 and losses[-1] < 0.5 * losses[0]
    best = max(result["epochs"], key=lambda m: m["dev_f1"])
    assert result["best_epoch"] == best["epoch"] and best["dev_f1"] > 0.5
    assert result["test"]["strict"]["f1"] == best["dev_f1"]  # dev == test here: same best model

    out = tmp_path / "out"
    assert json.loads((out / "metrics.json").read_text())["best_epoch"] == result["best_epoch"]
    preds = read_brat(out / "test_predictions")
    assert [n.doc_id for n in preds] == sorted(n.doc_id for n in toy_notes())
    manifest = read_manifest(out)
    assert manifest["stage"] == "ner_train" and manifest["config"]["num_workers"] == 2
    assert len(manifest["inputs"]["train"]["sha256"]) == 64
    model = AutoModelForTokenClassification.from_pretrained(out / "model", dtype="auto")
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # as stored


def test_min_steps_adds_epochs_to_a_small_share(tmp_path, tiny_bert, local_ray):
    """Half the notes, epochs of 2 steps (max_steps), 1 epoch asked and at least 5 steps: 3
    epochs of 2 steps run, dev picks among the three, and the dry-run plan said so before."""
    cfg = toy_config(
        tmp_path, tiny_bert, epochs=1, max_steps=2, min_steps=5, cpus_per_worker=1,
        train_fraction=0.5,
    )  # fmt: skip
    plan = ner_plan(cfg, "toy")
    result = run_ner_train(cfg, tmp_path / "out")

    assert [(m["epoch"], m["steps"]) for m in result["epochs"]] == [(1, 2), (2, 2), (3, 2)]
    assert result["best_epoch"] in (1, 2, 3)
    assert (plan["steps_per_epoch"], plan["epochs"], plan["steps"]) == (2, 3, 6)
    counts = (result["train_notes"], result["train_windows"])
    assert (plan["train_notes"], plan["train_windows"]) == counts
    assert 0 < counts[0] < len(toy_notes(copies=8))  # a share, not every note


def test_plan_counts_windows_and_refuses_a_run_with_idle_workers(tmp_path, tiny_bert):
    """The dry-run plan without Ray: every training window counted (one per note here, the
    notes being short), epochs of ceil(windows / workers / batch) steps; more workers than
    windows is refused by name, as is a note that training would refuse."""
    cfg = toy_config(tmp_path, tiny_bert, max_length=512, num_workers=2)
    plan = ner_plan(cfg, "toy.yaml")
    notes = len(toy_notes(copies=8))
    assert (plan["train_notes"], plan["train_windows"]) == (notes, notes)
    assert plan["steps_per_epoch"] == -(-(notes // 2) // 4) and plan["epochs"] == 12

    with pytest.raises(ConfigError, match=f"toy.yaml: {notes} training windows over 99 workers"):
        ner_plan(dataclasses.replace(cfg, num_workers=99), "toy.yaml")
    bad = tmp_path / "bad.parquet"  # Parquet notes are checked as they are tokenized
    pq.write_table(notes_to_table([Note("bad-1", "Ana vino.", [Span(0, 30, "FECHAS")])]), bad)
    with pytest.raises(NoteError, match="bad.parquet: note bad-1"):
        ner_plan(dataclasses.replace(cfg, train=str(bad)), "toy.yaml")


def test_epochs_to_run_reaches_min_steps_only_when_short():
    from sdeid.ner_train import epochs_to_run

    cfg = NerTrainConfig(train="t", base_model="m", epochs=2, min_steps=160)
    assert epochs_to_run(cfg, steps_per_epoch=15) == 11  # the 5 % share: 165 steps
    assert epochs_to_run(cfg, steps_per_epoch=88) == 2  # the 25 % share: 176 already
    assert epochs_to_run(NerTrainConfig(train="t", base_model="m", epochs=2), 15) == 2
