"""Sample synthetic notes: Ray Data + vLLM engine actors, or a plain transformers backend.

Both backends take prompt-plan rows and yield one dict per note with the same fields. The vLLM
backend is `ray.data.llm`'s processor: engine replicas as an actor pool, per-row sampling
parameters (each note's own seed), tokenizer and detokenizer stages on fractional CPUs so a
2-core machine does not deadlock. The transformers backend (`backend: hf`) is for machines
without vLLM and is the benchmark's baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

from sdeid.shard_writer import WINDOW_BATCHES


@dataclass(frozen=True)
class GenerateConfig:
    model: str
    """An `sdeid adapt` output folder (its merged/ model is used) or any causal-LM folder."""
    prompts_from: str | None = None
    """Corpus whose documents' first words are the prompts (the paper: held-out documents)."""
    prompt_file: str | None = None
    """Or a text file with one prompt per line."""
    unconditional: bool = False
    """Or no prompt at all (the model starts from <s>)."""
    num_prompts: int = 0
    """Use only the first N prompts (0: all)."""
    prompt_words: int = 3
    """Words taken from the start of each document (the paper: 3)."""
    samples_per_prompt: int = 80
    """Notes sampled per prompt (the paper: 80, a corpus 4x the original)."""
    seed: int = 0
    """Run seed; each note's seed derives from it, its prompt id and sample index."""
    max_new_tokens: int = 480
    max_model_len: int = 2048
    """The engine's context: the model's own (max_position_embeddings, n_positions, ...) capped
    at this, or this where the model has none (BLOOM). 0: the model's own, uncapped. A cap keeps
    a long-context model (131k) from reserving KV cache for contexts no note needs."""
    temperature: float = 1.0
    top_p: float = 0.95
    backend: str = "vllm"
    """`vllm` (Ray Data + vLLM engine actors) or `hf` (transformers generate)."""
    use_adapter: bool = False
    """Serve the base model plus the LoRA adapter (vLLM LoRA) instead of the merged model."""
    notes_per_shard: int = 1000
    engine_replicas: int = 1
    """vLLM engines, a fixed pool (one per GPU x tensor_parallel_size): every engine gets work."""
    engine_max_restarts: int = 2
    """Times a dead engine replica is restarted (its batch retried) before the stage fails with
    the engine's own error; an engine that cannot serve would otherwise be restarted forever."""
    seed_per_note: bool = True
    """Each note sampled with its own seed (from the plan), so a rerun after a crash redoes a
    shard with the same texts. On GPU a per-request seed moves vLLM from its fused top-p kernel
    to the PyTorch sampler; false trades note-level reproducibility for that speed."""
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    max_num_seqs: int = 64
    """Sequences an engine decodes at once. On 2 CPU cores, 256 with batch_size 64 ran 1.2x
    the tokens/s of 128 with batch_size 32 (benchmarks/results/generate.md)."""
    enable_prefix_caching: bool = True
    """Samples of one prompt share its prefix: cache it."""
    batch_size: int = 64
    """Rows per Ray Data batch sent to an engine."""
    window_batches: int = WINDOW_BATCHES
    """Batches in one Ray Data run: a bigger plan is generated in consecutive runs of whole
    shards, each starting its engines anew, so the driver's memory stays bounded
    (sdeid.shard_writer.WINDOW_BATCHES)."""
    use_gpu: bool = False
    cpus_per_engine: float = 1.0
    kv_cache_gib: int = 1
    """vLLM CPU KV-cache size (VLLM_CPU_KVCACHE_SPACE), CPU only."""
    cpu_threads_bind: str = "auto"
    """CPU only: vLLM's VLLM_CPU_OMP_THREADS_BIND. "auto" leaves a core to other processes;
    on a machine given to one engine, naming its cores ("0-1") ran 1.75k instead of 1.0k
    tokens/s on 2 cores. "nobind": no pinning."""
    dtype: str = "float32"
    """bfloat16 is faster on CPUs with AVX512-BF16 (1.25x measured there), far slower on CPUs
    without it. `auto`: bfloat16 where the driver's device has it natively, else float32
    (sdeid.hardware; not vLLM's own `auto`, the checkpoint's dtype)."""
    hf_batch_size: int = 16
    min_chars: int = 100
    """Clean-up: drop notes shorter than this."""
    max_chars: int = 0
    """Clean-up: drop notes longer than this (0: no limit)."""
    near_dup_threshold: float = 0.8
    """Clean-up: MinHash Jaccard above which a note is a near-duplicate of an earlier one
    (0 disables near-duplicate removal; exact duplicates are always removed)."""

    def check(self):
        sources = [self.prompts_from is not None, self.prompt_file is not None, self.unconditional]
        if sum(sources) != 1:
            raise ValueError("give exactly one of prompts_from, prompt_file, unconditional")
        if self.backend not in ("vllm", "hf"):
            raise ValueError(f"backend must be 'vllm' or 'hf', got {self.backend!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        for name in (
            "samples_per_prompt",
            "max_new_tokens",
            "notes_per_shard",
            "engine_replicas",
            "max_num_seqs",
            "batch_size",
            "window_batches",
            "hf_batch_size",
            "prompt_words",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.engine_max_restarts < 0:
            raise ValueError(f"engine_max_restarts must be >= 0, got {self.engine_max_restarts}")
        if self.max_model_len < 0:
            raise ValueError(f"max_model_len must be >= 0, got {self.max_model_len}")
        if not 0 <= self.near_dup_threshold <= 1:
            raise ValueError(f"near_dup_threshold must be in [0, 1], got {self.near_dup_threshold}")


def _finish_reason(n_tokens: int, max_tokens: int) -> str:
    # The Ray Data vLLM stage does not pass vLLM's finish_reason on; at the token cap it was
    # cut ("length"), below it the model ended the note ("stop").
    return "length" if n_tokens >= max_tokens else "stop"


def _engine_env(cfg: GenerateConfig) -> dict:
    if cfg.use_gpu:
        return {}
    # Ray sets OMP_NUM_THREADS=1 in actors with fractional CPUs; the engine's top-p sort and
    # matmuls want every core it was given.
    return {
        "VLLM_CPU_KVCACHE_SPACE": str(cfg.kv_cache_gib),
        "VLLM_CPU_OMP_THREADS_BIND": cfg.cpu_threads_bind,
        "OMP_NUM_THREADS": str(max(1, int(cfg.cpus_per_engine))),
    }


def engine_bundles(cfg: GenerateConfig) -> dict:
    """What one engine replica holds: a GPU and `cpus_per_engine` CPUs per tensor/pipeline
    rank, packed on one node; on CPU one bundle of `cpus_per_engine` CPUs. Stated here, not
    left to Ray Data's defaults, so the cluster fit (sdeid/cluster_fit.py) is computed from it."""
    if not cfg.use_gpu:
        return {"bundles": [{"CPU": cfg.cpus_per_engine}]}
    ranks = cfg.tensor_parallel_size * cfg.pipeline_parallel_size
    return {"bundles": [{"GPU": 1, "CPU": cfg.cpus_per_engine}] * ranks, "strategy": "STRICT_PACK"}


def vllm_generate(
    cfg: GenerateConfig,
    model_dir: str,
    plan,
    shards: list[int],
    max_model_len: int,
    adapter_dir=None,
    log_dir="engine_logs",
    write=None,
):
    """Generate the notes of `shards` of `plan` (a prompt_plan.Plan) on Ray Data.

    The pipeline starts from plan ranges, one per engine batch; workers compute the rows
    (ids, seeds, prompts, each row's `max_tokens`) from the plan. `write` turns the dataset of
    generated rows into the dataset that is iterated here (sdeid.shard_writer.write_shards:
    shards written by a worker, a summary row each); without it the generated rows themselves
    are yielded. Engine errors are logged under `log_dir`; an engine that keeps dying fails
    with its own error."""
    from functools import partial
    from pathlib import Path

    import ray
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    from sdeid.engine_errors import bound_restarts, engine_failure, engine_logging
    from sdeid.hardware import resolve_dtype

    ray.data.DataContext.get_current().execution_options.preserve_order = True
    engine_kwargs = dict(
        dtype=resolve_dtype(cfg.dtype, cfg.use_gpu),
        max_model_len=max_model_len,
        max_num_seqs=cfg.max_num_seqs,
        enable_prefix_caching=cfg.enable_prefix_caching,
        tensor_parallel_size=cfg.tensor_parallel_size,
        pipeline_parallel_size=cfg.pipeline_parallel_size,
        # torch.compile and CUDA graphs cost ~90 s of start-up on CPU for no gain at this size
        enforce_eager=not cfg.use_gpu,
    )
    # On CPU, vLLM's top-p sorts every row of the vocabulary, over half of a step for a small
    # model; sdeid's processor gives the same nucleus for a fraction (sdeid/nucleus.py). GPUs
    # keep vLLM's fused kernels.
    if not cfg.use_gpu and cfg.top_p < 1:
        from sdeid.nucleus import EXTRA_ARG, NucleusLogitsProcessor

        engine_kwargs["logits_processors"] = [NucleusLogitsProcessor.FQCN]
        top_p_args = dict(top_p=1.0, extra_args={EXTRA_ARG: cfg.top_p})
    else:
        top_p_args = dict(top_p=cfg.top_p)
    if adapter_dir is not None:
        import json

        from sdeid.lm_arch import vllm_max_lora_rank

        rank = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())["r"]
        engine_kwargs.update(enable_lora=True, max_lora_rank=vllm_max_lora_rank(rank), max_loras=1)
    light = {"num_cpus": 0.1}  # tokenizer stages: tiny work, must not hold a whole core
    proc_cfg = vLLMEngineProcessorConfig(
        model_source=model_dir,
        engine_kwargs=engine_kwargs,
        # A fixed pool: an int n would be an autoscaling pool of 1..n that can leave GPUs idle.
        concurrency=(cfg.engine_replicas, cfg.engine_replicas),
        # Engine metrics would go to Ray's Prometheus exporter; nothing here reads them.
        log_engine_metrics=False,
        batch_size=cfg.batch_size,
        chat_template_stage=False,
        tokenize_stage=light,
        detokenize_stage=light,
        runtime_env={"env_vars": {**_engine_env(cfg), **engine_logging(Path(log_dir))}},
        placement_group_config=engine_bundles(cfg),
    )

    def preprocess(row):
        if adapter_dir is not None:
            row = dict(row, model=str(adapter_dir))  # a row naming another model is a LoRA request
        return dict(
            row,
            sampling_params=dict(
                temperature=cfg.temperature,
                **top_p_args,
                max_tokens=int(row["max_tokens"]),
                **({"seed": int(row["seed"])} if cfg.seed_per_note else {}),
                # The detokenize stage decodes each note whole and its text is the one kept;
                # vLLM's own incremental decoding in the engine actor would be the same work
                # twice, on the cores the engine needs (steady rate +5 % on 2 cores).
                detokenize=False,
            ),
        )

    def postprocess(row):
        n_out = int(row["num_generated_tokens"])
        return dict(
            note_id=row["note_id"],
            prompt_id=row["prompt_id"],
            prompt=row["prompt"],
            sample_index=int(row["sample_index"]),
            seed=int(row["seed"]),
            shard=int(row["shard"]),
            text=row["prompt"] + row["generated_text"],
            finish_reason=_finish_reason(n_out, int(row["max_tokens"])),
            prompt_tokens=int(row["num_input_tokens"]),
            output_tokens=n_out,
        )

    processor = build_processor(
        proc_cfg,
        preprocess=preprocess,
        postprocess=postprocess,
        preprocess_map_kwargs=light,
        postprocess_map_kwargs=light,
    )
    bound_restarts(processor, cfg.engine_max_restarts)
    # One block per engine batch: blocks cut at other sizes reach the engine as a full batch
    # plus a 1-2 row remainder, and each remainder costs a whole batch slot.
    pieces = plan.pieces(shards, cfg.batch_size)
    ranges = [{"start": a, "stop": b} for a, b in pieces]
    ds = ray.data.from_items(ranges, override_num_blocks=len(ranges))
    ds = processor(ds.flat_map(partial(_plan_rows, plan), **light))
    try:
        yield from (write(ds) if write else ds).iter_rows()
    except (ray.exceptions.RayError, RuntimeError) as e:
        raise engine_failure(Path(log_dir), cfg.engine_max_restarts, e) from e


def _plan_rows(plan, piece: dict) -> list[dict]:
    from dataclasses import asdict

    return [asdict(r) for r in plan.rows(piece["start"], piece["stop"])]


def hf_generate(cfg: GenerateConfig, model_dir: str, rows, max_model_len: int, adapter_dir=None):
    """transformers `generate`, batched, in this process; seeds per batch (not per note).
    `rows` is any iterable of plan rows; results come out in its order."""
    from itertools import islice

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sdeid.hardware import resolve_dtype

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    device = "cuda" if cfg.use_gpu else "cpu"
    dtype = resolve_dtype(cfg.dtype, cfg.use_gpu)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir).eval()
    model = model.to(device)
    rows = iter(rows)
    while batch := list(islice(rows, cfg.hf_batch_size)):
        enc = tok([r["prompt"] for r in batch], return_tensors="pt", padding=True).to(device)
        max_tokens = min(r["max_tokens"] for r in batch)
        torch.manual_seed(batch[0]["seed"])
        with torch.inference_mode():
            out = model.generate(
                **enc,
                do_sample=True,
                top_p=cfg.top_p,
                temperature=cfg.temperature,
                max_new_tokens=max_tokens,
                pad_token_id=tok.pad_token_id,
            )
        width = enc["input_ids"].shape[1]
        for r, seq, mask in zip(batch, out, enc["attention_mask"], strict=True):
            new = seq[width:]
            ended = (new == tok.eos_token_id).nonzero()
            n_out = int(ended[0]) + 1 if len(ended) else int((new != tok.pad_token_id).sum())
            text = tok.decode(new[:n_out], skip_special_tokens=True)
            yield dict(
                r,
                text=r["prompt"] + text,
                finish_reason=_finish_reason(n_out, max_tokens),
                prompt_tokens=int(mask.sum()),
                output_tokens=n_out,
            )
