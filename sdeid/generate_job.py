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
from functools import partial
from pathlib import Path

from sdeid.adapt_job import check_causal_lm
from sdeid.config import config_to_dict
from sdeid.errors import RunFolderError, SdeidError
from sdeid.generate import GenerateConfig
from sdeid.lm_arch import context_length, read_model_config, vllm_max_lora_rank
from sdeid.manifest import MANIFEST, fingerprint_path, write_manifest
from sdeid.ner_job import absolute
from sdeid.schema import Note, NoteError, validate_note

# The plan's and the engine's columns kept beside each generated note, with their types.
EXTRA_COLUMNS = {
    "prompt_id": "string",
    "prompt": "string",
    "sample_index": "int64",
    "seed": "int64",
    "finish_reason": "string",
    "prompt_tokens": "int64",
    "output_tokens": "int64",
}


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


def make_plan(cfg: GenerateConfig, tokenizer, max_model_len: int):
    """The run's Plan: its prompts, and the tokens each prompt leaves its notes."""
    from sdeid.corpus_io import read_corpus
    from sdeid.prompt_plan import Plan, prompts_from_corpus, prompts_from_file

    if cfg.prompts_from:
        prompts = prompts_from_corpus(read_corpus(cfg.prompts_from), cfg.prompt_words)
    elif cfg.prompt_file:
        prompts = prompts_from_file(cfg.prompt_file)
    else:
        prompts = [("uncond", "")]
    if cfg.num_prompts:
        prompts = prompts[: cfg.num_prompts]
    lengths = [len(ids) for ids in tokenizer([t for _, t in prompts])["input_ids"]]
    for (prompt_id, _), n in zip(prompts, lengths, strict=True):
        if max_model_len - n < 1:
            raise SdeidError(
                f"prompt {prompt_id}: {n} tokens leave no room in the model's context of "
                f"{max_model_len}"
            )
    room = tuple(min(cfg.max_new_tokens, max_model_len - n) for n in lengths)
    return Plan(tuple(prompts), cfg.samples_per_prompt, cfg.seed, cfg.notes_per_shard, room)


def run_generate(cfg: GenerateConfig, out_dir, ray_address: str | None = None) -> dict:
    from transformers import AutoTokenizer

    from sdeid.cleanup import clean_shards
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
    plan = make_plan(cfg, tokenizer, max_model_len)
    store = ShardStore(out_dir / "shards")
    store.create()
    done = store.done()
    for index, marker in done.items():
        if marker["rows"] != plan.shard_size(index):
            raise RunFolderError(
                f"{store.folder}: shard {index} has {marker['rows']} rows but this "
                f"plan puts {plan.shard_size(index)} there: the folder was made with "
                "another plan; use a new output folder"
            )
    todo = [k for k in range(plan.shards) if k not in done]
    n_todo = sum(map(plan.shard_size, todo))
    print(
        f"[generate] {plan.notes} notes in {plan.shards} shards; {len(done)} shards done, "
        f"{n_todo} notes to generate",
        flush=True,
    )

    t0 = time.time()
    tokens, written = 0, 0
    if todo:
        fingerprint = fingerprint_path(adapter_dir or model_dir)[:16]
        make_table = partial(generated_table, fingerprint=fingerprint)
        if cfg.backend == "vllm":
            from sdeid.generate import vllm_generate
            from sdeid.ray_env import init_ray
            from sdeid.shard_writer import in_windows, write_shards

            init_ray(ray_address)
            sizes = {k: plan.shard_size(k) for k in todo}
            # Consecutive Ray Data runs of whole shards: the driver's record of blocks is a
            # run's, not the plan's (each run starts its engines anew).
            summaries = in_windows(
                "generate",
                todo,
                sizes,
                cfg.window_batches * cfg.batch_size,
                lambda window: vllm_generate(
                    cfg,
                    str(model_dir),
                    plan,
                    window,
                    max_model_len,
                    adapter_dir,
                    out_dir / "engine_logs",
                    write=partial(
                        write_shards,
                        folder=store.folder,
                        sizes={k: sizes[k] for k in window},
                        make_table=make_table,
                    ),
                ),
            )
        else:
            summaries = _hf_shards(
                cfg, str(model_dir), plan, todo, max_model_len, adapter_dir, store, make_table
            )
        finished = set()
        for s in summaries:
            if s["error"]:
                raise NoteError(s["error"])
            finished.add(s["shard"])
            written += s["rows"]
            tokens += s["tokens"]
            el = time.time() - t0
            print(
                f"[generate] shard {s['shard']} done: {written}/{n_todo} notes, "
                f"{tokens} tokens, {tokens / el:.0f} tokens/s, "
                f"ETA {el / written * (n_todo - written):.0f}s",
                flush=True,
            )
        if finished != set(todo):
            raise RuntimeError(f"engine returned incomplete shards {sorted(set(todo) - finished)}")
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
        "notes_planned": plan.notes,
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


def _hf_shards(cfg, model_dir, plan, shards, max_model_len, adapter_dir, store, make_table):
    """The hf backend, in this process: generate the shards' rows in plan order and write each
    shard when its last row is out; yields the same summaries as the Ray writer."""
    import itertools

    import pyarrow as pa

    from sdeid.generate import hf_generate

    rows = (dataclasses.asdict(r) for k in shards for r in plan.rows(*plan.shard_range(k)))
    stream = hf_generate(cfg, model_dir, rows, max_model_len, adapter_dir)
    for index, group in itertools.groupby(stream, key=lambda r: r["shard"]):
        table = pa.Table.from_pylist(list(group))
        store.write_table(index, make_table(index, table))
        yield {
            "shard": index,
            "rows": table.num_rows,
            "tokens": sum(table["output_tokens"].to_pylist()),
            "error": "",
        }


def generated_table(index: int, rows, fingerprint: str):
    """One shard of generated notes (no spans yet), in plan order, with the plan's columns."""

    from sdeid.parquet_io import notes_to_table

    rows = rows.sort_by([("prompt_id", "ascending"), ("sample_index", "ascending")])
    notes = [
        Note(i, t, [], source=f"generator:{fingerprint}", annotator="")
        for i, t in zip(rows["note_id"].to_pylist(), rows["text"].to_pylist(), strict=True)
    ]
    for note in notes:
        validate_note(note, allow_overlap=True)
    return notes_to_table(notes, {c: rows[c].cast(t) for c, t in EXTRA_COLUMNS.items()})
