"""`sdeid generate`: run the prompt plan through an engine into resumable Parquet shards.

Output folder:
  shards/             raw generated notes, shard-NNNNN.parquet, each with a _done marker
  clean/              the same notes after the length filter and duplicate removal
  _manifest.json      config, lineage (the adapt manifest), counts, removals, timings

A rerun after a crash generates only the shards that are not done; note ids and seeds are fixed
by the plan, so the final id set is the same as an uninterrupted run's.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from sdeid.adapt_job import check_causal_lm
from sdeid.config import config_to_dict
from sdeid.errors import RunFolderError, SdeidError
from sdeid.generate import GenerateConfig
from sdeid.lm_arch import context_length, read_model_config, vllm_max_lora_rank
from sdeid.manifest import MANIFEST, fingerprint_path, write_manifest
from sdeid.ner_job import absolute
from sdeid.schema import Note

EXTRA_COLUMNS = (
    "prompt_id",
    "prompt",
    "sample_index",
    "seed",
    "finish_reason",
    "prompt_tokens",
    "output_tokens",
)


def resolve_generator(model: str, use_adapter: bool = False):
    """(model folder, LoRA adapter folder or None, the adapt manifest it came from, if any)."""
    path = Path(model)
    if use_adapter:
        if not (path / "adapter" / "adapter_config.json").is_file():
            raise FileNotFoundError(
                f"generator {model}: use_adapter needs an adapt output "
                "folder made with method lora (no adapter/ found)"
            )
        manifest = json.loads((path / MANIFEST).read_text())
        return Path(manifest["config"]["base_model"]), path / "adapter", manifest
    if (path / MANIFEST).is_file() and (path / "merged" / "config.json").is_file():
        return path / "merged", None, json.loads((path / MANIFEST).read_text())
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"generator {model}: neither an adapt output folder (with "
            "merged/) nor a model folder (with config.json)"
        )
    check_causal_lm(path, "generator model")
    return path, None, None


def check_vllm_lora(model_config: dict, model_dir, lora_r: int) -> None:
    """Refuse `use_adapter` before any engine starts where vLLM cannot serve the adapter."""
    from sdeid.lm_arch import vllm_serves_lora

    arch = (model_config.get("architectures") or [""])[0]
    if not vllm_serves_lora(arch):
        raise SdeidError(
            f"generator {model_dir}: vLLM serves no LoRA adapters for {arch or 'this model'}; "
            "set use_adapter: false to generate from the merged model (adapt writes merged/)"
        )
    vllm_max_lora_rank(lora_r)  # raises above the largest rank vLLM takes


def plan_rows(cfg: GenerateConfig, tokenizer, max_model_len: int) -> list[dict]:
    from sdeid.corpus_io import read_corpus
    from sdeid.prompt_plan import build_plan, prompts_from_corpus, prompts_from_file

    if cfg.prompts_from:
        prompts = prompts_from_corpus(read_corpus(cfg.prompts_from), cfg.prompt_words)
    elif cfg.prompt_file:
        prompts = prompts_from_file(cfg.prompt_file)
    else:
        prompts = [("uncond", "")]
    if cfg.num_prompts:
        prompts = prompts[: cfg.num_prompts]
    rows = [
        dataclasses.asdict(r)
        for r in build_plan(prompts, cfg.samples_per_prompt, cfg.seed, cfg.notes_per_shard)
    ]
    lengths = {p: len(tokenizer(t)["input_ids"]) for p, t in prompts}
    for r in rows:
        room = max_model_len - lengths[r["prompt_id"]]
        if room < 1:
            raise SdeidError(
                f"prompt {r['prompt_id']}: {lengths[r['prompt_id']]} tokens leave no "
                f"room in the model's context of {max_model_len}"
            )
        r["max_tokens"] = min(cfg.max_new_tokens, room)
    return rows


def run_generate(cfg: GenerateConfig, out_dir, ray_address: str | None = None) -> dict:
    from transformers import AutoTokenizer

    from sdeid.cleanup import clean_shards
    from sdeid.generate import hf_generate, vllm_generate
    from sdeid.shard_store import ShardStore

    out_dir = Path(out_dir)
    cfg = dataclasses.replace(
        cfg,
        model=absolute(cfg.model),
        prompts_from=absolute(cfg.prompts_from),
        prompt_file=absolute(cfg.prompt_file),
    )
    model_dir, adapter_dir, adapt_manifest = resolve_generator(cfg.model, cfg.use_adapter)
    model_config = read_model_config(model_dir)
    if adapter_dir is not None and cfg.backend == "vllm":
        rank = json.loads((adapter_dir / "adapter_config.json").read_text())["r"]
        check_vllm_lora(model_config, model_dir, rank)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    max_model_len = context_length(model_config, cfg.max_model_len, f"generator {model_dir}")
    rows = plan_rows(cfg, tokenizer, max_model_len)
    store = ShardStore(out_dir / "shards")
    store.folder.mkdir(parents=True, exist_ok=True)
    store.clear_temporaries()
    expected = {}
    for r in rows:
        expected[r["shard"]] = expected.get(r["shard"], 0) + 1
    done = store.done()
    for index, marker in done.items():
        if marker["rows"] != expected.get(index):
            raise RunFolderError(
                f"{store.folder}: shard {index} has {marker['rows']} rows but this "
                f"plan puts {expected.get(index, 0)} there: the folder was made with "
                "another plan; use a new output folder"
            )
    todo = [r for r in rows if r["shard"] not in done]
    print(
        f"[generate] {len(rows)} notes in {len(expected)} shards; {len(done)} shards done, "
        f"{len(todo)} notes to generate",
        flush=True,
    )

    t0 = time.time()
    tokens, written = 0, 0
    if todo:
        if cfg.backend == "vllm":
            from sdeid.ray_env import init_ray

            init_ray(ray_address)
            stream = vllm_generate(
                cfg, str(model_dir), todo, max_model_len, adapter_dir, out_dir / "engine_logs"
            )
        else:
            stream = hf_generate(cfg, str(model_dir), todo, max_model_len, adapter_dir)
        fingerprint = fingerprint_path(adapter_dir or model_dir)[:16]
        buffers: dict[int, list] = {}
        for row in stream:
            buf = buffers.setdefault(row["shard"], [])
            buf.append(row)
            tokens += row["output_tokens"]
            if len(buf) == expected[row["shard"]]:
                _write_shard(store, row["shard"], buffers.pop(row["shard"]), fingerprint)
                written += len(buf)
                el = time.time() - t0
                eta = el / written * (len(todo) - written)
                print(
                    f"[generate] shard {row['shard']} done: {written}/{len(todo)} notes, "
                    f"{tokens} tokens, {tokens / el:.0f} tokens/s, ETA {eta:.0f}s",
                    flush=True,
                )
        if buffers:
            raise RuntimeError(f"engine returned incomplete shards {sorted(buffers)}")
    gen_s = time.time() - t0
    clean = clean_shards(cfg, store, out_dir / "clean")
    inputs = {"model": {"path": str(model_dir), "sha256": fingerprint_path(model_dir)}}
    if adapter_dir is not None:
        inputs["adapter"] = {"path": str(adapter_dir), "sha256": fingerprint_path(adapter_dir)}
    if adapt_manifest is not None:
        inputs["adapt_manifest"] = adapt_manifest
    if cfg.prompts_from:
        inputs["prompts_from"] = {
            "path": cfg.prompts_from,
            "sha256": fingerprint_path(cfg.prompts_from),
        }
    summary = {
        "notes_planned": len(rows),
        "notes_generated_this_run": written,
        "output_tokens_this_run": tokens,
        "generate_s": gen_s,
        "tokens_per_s": tokens / gen_s if written else None,
        **clean,
    }
    write_manifest(
        out_dir,
        "generate",
        config_to_dict(cfg),
        inputs,
        counts=summary,
        timings={"generate_s": gen_s},
    )
    return summary


def _write_shard(store, index: int, rows: list[dict], fingerprint: str) -> None:
    rows.sort(key=lambda r: (r["prompt_id"], r["sample_index"]))
    notes = [
        Note(r["note_id"], r["text"], [], source=f"generator:{fingerprint}", annotator="")
        for r in rows
    ]
    store.write(index, notes, {c: [r[c] for r in rows] for c in EXTRA_COLUMNS})
