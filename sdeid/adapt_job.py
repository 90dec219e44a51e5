"""`sdeid adapt`: run the adaptation and lay out its output folder.

Output folder:
  adapter/          the LoRA adapter (PEFT format; method lora only)
  merged/           the full model with the adapter merged in, plus tokenizer: vLLM loads it
  metrics.json      training loss and tokens/s by step; dev loss, perplexity, bits/char by epoch
  _manifest.json    resolved config, corpus and base-model fingerprints, version, commit, timings
  ray/              Ray Train's checkpoints (a rerun of the same command resumes from them)
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

from sdeid.adapt import AdaptConfig
from sdeid.config import ConfigError, config_to_dict
from sdeid.manifest import fingerprint_path, write_manifest
from sdeid.ner_job import absolute


def check_causal_lm(path, role: str = "base model") -> None:
    """Refuse a folder that is not a causal LM (an encoder, a classifier) before any work."""
    cfg_file = Path(path) / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{role} {path}: no config.json (not a model folder)")
    archs = json.loads(cfg_file.read_text()).get("architectures") or []
    if not any(a.endswith("ForCausalLM") for a in archs):
        raise FileNotFoundError(
            f"{role} {path}: architectures {archs} has no *ForCausalLM; it must be a causal LM "
            f"(build one with `sdeid model init`)"
        )


def adapt_plan(cfg: AdaptConfig, notes=None, model_config=None) -> dict:
    """The memory and schedule plan (sdeid.adapt_plan) of `cfg` on its corpus. `model_config`
    stands in for a base model that does not exist yet (a preset's config in a dry run)."""
    from sdeid.adapt import adaptation_notes
    from sdeid.adapt_plan import count_tokens, plan_adapt
    from sdeid.corpus_io import read_corpus
    from sdeid.lm_arch import model_shape

    notes = adaptation_notes(cfg, read_corpus(cfg.corpus) if notes is None else notes)
    targets = cfg.lora_target_modules if cfg.method == "lora" else ()
    shape = model_shape(model_config or cfg.base_model, targets, cfg.lora_r)
    tokens, estimated = count_tokens(cfg.base_model, [n.text for n in notes])
    plan = plan_adapt(cfg, shape, tokens, estimated)
    if cfg.data_fraction == 0:  # nothing is trained: no schedule or memory to refuse
        plan["problems"] = []
        plan["warnings"] = ["data_fraction 0: no adaptation, the base model is the generator"]
    return plan


def refuse_bad_plan(plan: dict, where: str) -> None:
    if plan["problems"]:
        mem = plan["memory_gib_per_gpu"]
        raise ConfigError(
            f"{where}: " + "; ".join(plan["problems"]) + f". Per GPU without / with gradient "
            f"checkpointing: {mem['without_checkpointing']} / {mem['with_checkpointing']} GiB; "
            f"schedule: {plan['schedule']}"
        )


def run_adapt(cfg: AdaptConfig, out_dir, ray_address: str | None = None) -> dict:
    from sdeid.corpus_io import read_corpus
    from sdeid.ray_env import init_ray

    out_dir = Path(out_dir)
    cfg = dataclasses.replace(
        cfg, **{k: absolute(getattr(cfg, k)) for k in ("corpus", "dev", "base_model")}
    )
    if cfg.membership_holdout:
        cfg = dataclasses.replace(cfg, membership_holdout=absolute(cfg.membership_holdout))
        read_corpus(cfg.membership_holdout)
    check_causal_lm(cfg.base_model)
    corpus = read_corpus(cfg.corpus)
    read_corpus(cfg.dev)
    plan = adapt_plan(cfg, corpus)
    refuse_bad_plan(plan, "adapt")
    out_dir.mkdir(parents=True, exist_ok=True)

    t0 = time.time()
    if cfg.data_fraction == 0:
        result = base_as_generator(cfg, out_dir)
    else:
        init_ray(ray_address)
        result = fit_and_copy(cfg, out_dir)
    memorization = measure_memorization(cfg, out_dir)
    wall = time.time() - t0
    history = result["history"]
    epochs = [h for h in history if "dev_loss" in h]
    steps = [h for h in history if "tokens_per_s" in h]
    metrics = {
        "history": history,
        "dev_by_epoch": epochs,
        "train_tokens_per_s": (
            sorted(h["tokens_per_s"] for h in steps)[len(steps) // 2] if steps else None
        ),
        "trained_s": result["trained_s"],
        "wall_s": wall,
        "documents": len(corpus),
        "plan": plan,
    }
    if memorization:
        metrics["memorization"] = memorization
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    inputs = {
        "corpus": {"path": cfg.corpus, "sha256": fingerprint_path(cfg.corpus)},
        "dev": {"path": cfg.dev, "sha256": fingerprint_path(cfg.dev)},
        "base_model": {"path": cfg.base_model, "sha256": fingerprint_path(cfg.base_model)},
    }
    if cfg.membership_holdout:
        inputs["membership_holdout"] = {
            "path": cfg.membership_holdout,
            "sha256": fingerprint_path(cfg.membership_holdout),
        }
    write_manifest(
        out_dir,
        "adapt",
        config_to_dict(cfg),
        inputs,
        outputs=["merged"]
        + (["adapter"] if cfg.method == "lora" and cfg.data_fraction > 0 else [])
        + (["canaries.json"] if cfg.canaries else [])
        + (["memorization.json"] if memorization else []),
        timings={"wall_s": wall, "trained_s": result["trained_s"]},
    )
    return metrics


def measure_memorization(cfg: AdaptConfig, out_dir: Path) -> dict | None:
    """Canary exposure and membership inference on the adapted generator, when asked for."""
    from sdeid.memorization import canaries
    from sdeid.memorization.job import measure_generator

    if cfg.canaries:
        canaries.write(out_dir, canaries.make_canaries(cfg.canaries, cfg.canary_repeats, cfg.seed))
    if not (cfg.canaries or cfg.membership):
        return None
    return measure_generator(cfg, out_dir)


def base_as_generator(cfg: AdaptConfig, out_dir: Path) -> dict:
    """data_fraction 0: the base model, unchanged, is the generator (copied to merged/)."""
    tmp = out_dir / ".merged.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(cfg.base_model, tmp)
    shutil.rmtree(out_dir / "merged", ignore_errors=True)
    tmp.rename(out_dir / "merged")
    return {"history": [], "trained_s": 0.0}


def fit_and_copy(cfg: AdaptConfig, out_dir: Path) -> dict:
    from sdeid.adapt import fit

    result = fit(cfg, out_dir)
    with result.checkpoint.as_directory() as d:
        state = json.loads((Path(d) / "train_state.json").read_text())
        for name in ("adapter", "merged"):
            if (Path(d) / name).is_dir():
                tmp = out_dir / f".{name}.tmp"
                shutil.rmtree(tmp, ignore_errors=True)
                shutil.copytree(Path(d) / name, tmp)
                shutil.rmtree(out_dir / name, ignore_errors=True)
                tmp.rename(out_dir / name)
    return state
