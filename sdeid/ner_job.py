"""`sdeid ner train`: fit the NER model, keep the best epoch, score it on test, write it all down.

Output folder:
  model/                best epoch's model and tokenizer (loadable with from_pretrained)
  metrics.json          per-epoch metrics, test scores, timings, throughput, peak memory
  test_predictions/     the test set tagged by the best model, as BRAT (for any BRAT scorer)
  report.md             the same numbers as a Markdown table
  _manifest.json        resolved config, input fingerprints, package version and commit
"""

from __future__ import annotations

import dataclasses
import json
import resource
import shutil
import time
from pathlib import Path

from sdeid.config import config_to_dict
from sdeid.manifest import fingerprint_path, write_manifest
from sdeid.ner_train import NerTrainConfig


def absolute(path: str | None) -> str | None:
    if path is None or "://" in path or path.startswith("package:"):
        return path
    return str(Path(path).resolve())


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def evaluate_model(model_dir, gold_notes, max_length=256, stride=64):
    """Tag the gold notes' texts and score them; returns (scores, predictions, docs/s)."""
    from sdeid.metrics import ner_scores
    from sdeid.ner_predict import NerTagger

    tagger = NerTagger(model_dir, max_length, stride)
    t0 = time.time()
    preds = tagger.tag(gold_notes)
    elapsed = time.time() - t0
    return ner_scores(gold_notes, preds), preds, len(gold_notes) / elapsed


def ner_plan(cfg: NerTrainConfig, where: str) -> dict:
    """What training will do, for --dry-run: the training notes and windows, the steps an
    epoch over the workers, and the epochs run (more than `epochs` where `min_steps` needs
    them). A run in which no worker gets a window is refused, naming `where`."""
    from sdeid.config import ConfigError
    from sdeid.ner_data import planned_windows
    from sdeid.ner_train import schedule, with_label_set

    counts = planned_windows(with_label_set(cfg))
    if counts is None:
        return {"train_windows": "counted when training starts (a large Parquet corpus)"}
    steps, epochs = schedule(cfg, counts["train_windows"], cfg.num_workers)
    if steps == 0:
        raise ConfigError(
            f"{where}: {counts['train_windows']} training windows over {cfg.num_workers} "
            "workers: no worker gets one, so nothing would train"
        )
    return {
        **counts,
        "workers": cfg.num_workers,
        "steps_per_epoch": steps,
        "epochs": epochs,
        "steps": steps * epochs,
    }


def run_ner_train(cfg: NerTrainConfig, out_dir, ray_address: str | None = None) -> dict:
    from sdeid.brat import write_brat
    from sdeid.metrics import per_label_table
    from sdeid.ner_data import training_data
    from sdeid.ner_train import fit, read_gold, resolve_model_dir, with_label_set
    from sdeid.ray_env import init_ray

    out_dir = Path(out_dir)
    # Ray workers do not share the driver's working directory: make local paths absolute.
    paths = ("train", "dev", "test", "base_model", "label_map")
    cfg = with_label_set(dataclasses.replace(cfg, **{k: absolute(getattr(cfg, k)) for k in paths}))
    resolve_model_dir(cfg.base_model)
    # The test set is a gold corpus (small): read once, here, to fail before training.
    gold = read_gold(cfg, cfg.test) if cfg.test else None
    t0 = time.time()
    init_ray(ray_address)
    # Every note checked and tokenized before any worker starts (and before anything is
    # written): a bad note is refused by name here.
    data, counts = training_data(cfg)
    prepare_s = time.time() - t0
    print(
        f"[ner] {counts['train_windows']} windows from {counts['train_notes']} training "
        f"notes, {counts['dev_notes']} dev notes ({prepare_s:.1f}s)",
        flush=True,
    )
    out_dir.mkdir(parents=True, exist_ok=True)  # only once the inputs are known to be good
    best, history = fit(cfg, out_dir, data, counts["train_windows"])
    train_wall = time.time() - t0
    model_dir = out_dir / "model"
    tmp = out_dir / ".model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    with best.as_directory() as d:
        shutil.copytree(Path(d) / "model", tmp)
    shutil.rmtree(model_dir, ignore_errors=True)
    tmp.rename(model_dir)

    best_epoch = max(history, key=lambda m: m["dev_f1"])
    result = {
        "epochs": history,
        "best_epoch": best_epoch["epoch"],
        "best_dev_f1": best_epoch["dev_f1"],
        "train_wall_s": train_wall,
        "prepare_s": prepare_s,
        **counts,
        "train_tokens_per_s": sum(m["train_tokens_per_s"] for m in history) / len(history),
        "worker_peak_rss_mb": max(m["peak_rss_mb"] for m in history),
    }
    if gold is not None:
        scores, preds, docs_per_s = evaluate_model(model_dir, gold, cfg.max_length, cfg.stride)
        write_brat(preds, out_dir / "test_predictions", overwrite=True)
        result.update(test=scores, inference_docs_per_s=docs_per_s)
        (out_dir / "report.md").write_text(
            f"# NER on {cfg.test}\n\nbest epoch {best_epoch['epoch']} (dev strict F1 "
            f"{best_epoch['dev_f1']:.4f})\n\nstrict micro: P {scores['strict']['precision']:.4f} "
            f"R {scores['strict']['recall']:.4f} F1 {scores['strict']['f1']:.4f}; token-level F1 "
            f"{scores['token']['f1']:.4f}\n\n{per_label_table(scores)}\n"
        )
    result["driver_peak_rss_mb"] = peak_rss_mb()
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2))
    inputs = {
        k: {"path": p, "sha256": fingerprint_path(p)}
        for k, p in (("train", cfg.train), ("dev", cfg.dev), ("test", cfg.test))
        + (("label_map", cfg.label_map),)
        if p
    }
    inputs["base_model"] = {
        "path": cfg.base_model,
        "sha256": fingerprint_path(resolve_model_dir(cfg.base_model)),
    }
    write_manifest(
        out_dir,
        "ner_train",
        config_to_dict(cfg),
        inputs,
        timings={"train_wall_s": train_wall},
        outputs=["model", "metrics.json"],
    )
    return result
