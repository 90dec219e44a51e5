"""After adaptation: the generator's canary exposure and membership-inference figures.

Runs as one Ray task with the adaptation workers' resources (a GPU where they had one), or in
this process when no Ray is running, and writes memorization.json into the adapt folder, where
the audit, the run report and the publish gate read it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from sdeid.memorization import attacks, canaries, scoring
from sdeid.tasks import task_runner

FILE = "memorization.json"


def measure_generator(cfg, out_dir) -> dict:
    """cfg: the AdaptConfig the generator in out_dir/merged was adapted with."""
    run = task_runner(cfg.cpus_per_worker, 1 if cfg.use_gpu else 0)
    [result] = run(_measure, [(cfg, str(out_dir))])
    tmp = Path(out_dir, f".{FILE}.tmp")  # whole or absent: the audit and the gate read it
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(Path(out_dir, FILE))
    return result


def _measure(cfg, out_dir: str) -> dict:
    import gc
    import time

    import torch

    if not cfg.use_gpu:
        torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
    t0 = time.time()
    model, tokenizer = scoring.load_lm(Path(out_dir) / "merged", cfg.use_gpu)
    result: dict = {}
    planted = canaries.read(out_dir)
    if planted:
        result["canaries"] = canary_exposure(model, tokenizer, planted, cfg)
    if cfg.membership:
        members, others = membership_notes(cfg)
        texts = [n.text for n in members + others]
        loss = note_losses(model, tokenizer, texts, cfg.context_length)
        # One model at a time: a 6B generator and its base do not both fit a 24 GB GPU.
        del model
        gc.collect()
        if cfg.use_gpu:
            torch.cuda.empty_cache()
        base_loss = None
        if cfg.membership_reference:
            base, base_tokenizer = scoring.load_lm(cfg.base_model, cfg.use_gpu)
            base_loss = note_losses(base, base_tokenizer, texts, cfg.context_length)
        result["membership"] = membership_figures(loss, len(members), base_loss)
    result["measure_s"] = time.time() - t0
    return result


def canary_exposure(model, tokenizer, planted, cfg) -> dict:
    """Each canary's rank and exposure among `canary_candidates` secrets of its format, and the
    median and max exposure per repetition count."""
    rows = []
    for c in planted:
        texts = [c.text(s) for s in canaries.candidates(c, cfg.canary_candidates, cfg.seed)]
        ids = scoring.token_ids(tokenizer, texts)
        sums, _ = scoring.logprob_sums(model, ids, cfg.context_length)
        figures = attacks.exposure(sums[0], sums[1:])
        rows.append({"canary_id": c.canary_id, "kind": c.kind, "repeats": c.repeats, **figures})
    by_repeats = {}
    for r in sorted({row["repeats"] for row in rows}):
        values = [row["exposure"] for row in rows if row["repeats"] == r]
        fits = [row["exposure_fit"] for row in rows if row["repeats"] == r]
        by_repeats[str(r)] = {
            "canaries": len(values),
            "median": median(values),
            "max": max(values),
            "fit_median": median(fits) if len(fits) == len(values) else None,
            "fit_max": max(fits) if len(fits) == len(values) else None,
        }
    return {
        "candidates": cfg.canary_candidates,
        "max_possible": math.log2(cfg.canary_candidates),
        "by_repeats": by_repeats,
        "max_exposure": max(row["exposure"] for row in rows),
        "per_canary": rows,
    }


def membership_notes(cfg) -> tuple[list, list]:
    """(members, non-members): the notes adapted on; dev, `membership_holdout` and any train
    notes data_fraction left out."""
    from sdeid.adapt import adapted_on
    from sdeid.corpus_io import read_corpus

    train = read_corpus(cfg.corpus)
    members = adapted_on(cfg, train)
    taken = {n.doc_id for n in members}
    others = [n for n in train if n.doc_id not in taken] + read_corpus(cfg.dev)
    if cfg.membership_holdout:
        others += read_corpus(cfg.membership_holdout)
    return members, others


def membership_figures(loss, n_members: int, base_loss=None) -> dict:
    """The loss attack (Yeom et al. 2018): a lower loss says member. Calibrated by the base
    model's loss (Carlini et al. 2021) when given: the score is how much adaptation lowered a
    note's loss, so notes that are easy for any model stop looking like members."""
    k = n_members
    result = {
        "loss": attacks.membership(-loss[:k], -loss[k:]),
        "member_loss_median": median(loss[:k]) if k else None,
        "non_member_loss_median": median(loss[k:]) if len(loss) > k else None,
    }
    if base_loss is not None:
        drop = base_loss - loss
        result["calibrated"] = attacks.membership(drop[:k], drop[k:])
    return result


def note_losses(model, tokenizer, texts, context: int) -> np.ndarray:
    """Mean negative log-likelihood per predicted token of each text."""
    sums, counts = scoring.logprob_sums(model, scoring.token_ids(tokenizer, texts), context)
    return -sums / np.maximum(counts, 1)


def median(values) -> float:
    return float(np.median(values))
