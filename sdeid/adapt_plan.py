"""The adaptation's memory and schedule, computed before a GPU is rented.

Per GPU, in bytes:
  weights      every parameter in the training dtype (bf16/fp16: 2 bytes, fp32: 4); ZeRO-3
               partitions them over the workers, ZeRO-2 and DDP keep a full copy on each
  gradients    trainable parameters (LoRA's, or all for `full`) in the training dtype;
               ZeRO-2/3 partition them
  optimizer    AdamW's two moments (8 bytes) plus an fp32 master copy (4) for 16-bit training,
               per trainable parameter; ZeRO-2/3 partition it; `offload_optimizer` moves it to
               host memory
  activations  kept for the backward pass: Korthikanti et al. 2022 (*Reducing Activation
               Recomputation in Large Transformer Models*), s*b*h*(34 + 5*a*s/h) bytes per layer
               at 16 bits (twice at fp32), where s is the context, b the micro-batch, h the hidden
               size and a the heads; with gradient checkpointing each layer keeps only its input
               (2*s*b*h) and one layer at a time is recomputed in full
  logits       s*b*vocab elements: 16-bit logits, their fp32 copy for the loss, the fp32 gradient
               (10 bytes; 12 at fp32)
  runtime      a fixed allowance of 1.5 GiB for the CUDA context, kernels' workspaces and the
               allocator's fragmentation
The schedule: packed blocks of `context_length` tokens from the corpus's token count; an
optimizer step takes workers x micro-batch x accumulation blocks (the last one of an epoch is
topped up from the epoch's start, so every block is seen once per epoch).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

GIB = 1024**3
RUNTIME_BYTES = int(1.5 * GIB)
# Used only when the base model folder has no tokenizer (a plan from a bare config.json):
# byte-level BPEs of 50k entries trained on Spanish or English average about 4 characters a token.
CHARS_PER_TOKEN_ESTIMATE = 4.0


@dataclass(frozen=True)
class MemoryPlan:
    weights: int
    gradients: int
    optimizer: int
    activations: int
    logits: int
    runtime: int

    @property
    def total(self) -> int:
        return sum(asdict(self).values())

    def gib(self) -> dict:
        return {k: round(v / GIB, 2) for k, v in {**asdict(self), "total": self.total}.items()}


def memory_per_gpu(cfg, shape, checkpointing: bool) -> MemoryPlan:
    """Bytes per GPU for the adapt config `cfg` on a model of `shape` (sdeid.lm_arch)."""
    wb = 4 if cfg.precision == "fp32" else 2
    world = cfg.num_workers
    trainable = shape.lora_params if cfg.method == "lora" else shape.params
    deepspeed = cfg.strategy == "deepspeed"
    weights = shape.params * wb
    if deepspeed and cfg.zero_stage == 3:
        weights //= world
    grads = trainable * wb // (world if deepspeed else 1)
    optim = trainable * (8 + (4 if wb == 2 else 0)) // (world if deepspeed else 1)
    if deepspeed and cfg.offload_optimizer:
        optim = 0
    s, b, h, a = cfg.context_length, cfg.micro_batch_size, shape.hidden, shape.heads
    act_scale = wb / 2
    per_layer = s * b * h * (34 + 5 * a * s / h) * act_scale
    if checkpointing:
        activations = shape.layers * 2 * s * b * h * act_scale + per_layer
    else:
        activations = shape.layers * per_layer
    logits = s * b * shape.vocab * (10 if wb == 2 else 12)
    return MemoryPlan(weights, grads, optim, int(activations), logits, RUNTIME_BYTES)


@dataclass(frozen=True)
class Schedule:
    tokens: int
    tokens_estimated: bool
    blocks: int
    blocks_per_step: int
    steps_per_epoch: int
    total_steps: int


def schedule(cfg, tokens: int, estimated: bool = False) -> Schedule:
    blocks = tokens // cfg.context_length
    per_step = cfg.num_workers * cfg.micro_batch_size * cfg.gradient_accumulation
    per_epoch = max(1, math.ceil(blocks / per_step))
    total = per_epoch * cfg.epochs
    if cfg.max_steps > 0:
        total = min(total, cfg.max_steps)
    return Schedule(tokens, estimated, blocks, per_step, per_epoch, total)


def count_tokens(model_dir, texts) -> tuple[int, bool]:
    """Tokens of the corpus as adaptation packs them (<s> text </s>), or an estimate from
    characters when the model folder has no tokenizer."""
    from pathlib import Path

    texts = list(texts)
    names = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
    if not any((Path(model_dir) / n).is_file() for n in names):
        return int(sum(len(t) for t in texts) / CHARS_PER_TOKEN_ESTIMATE), True
    from transformers import AutoTokenizer

    from sdeid.lm_data import tokenize_documents

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return sum(len(d) for d in tokenize_documents(tokenizer, texts)), False


def plan_adapt(cfg, shape, tokens: int, estimated: bool = False) -> dict:
    """The whole plan as a dict (what `--dry-run` prints), with `problems`: why it cannot run."""
    sched = schedule(cfg, tokens, estimated)
    memory = {
        ckpt: memory_per_gpu(cfg, shape, ckpt).gib() for ckpt in (False, True)
    }  # both, so a refused config shows what checkpointing would save
    used = memory[cfg.gradient_checkpointing]["total"]
    problems = []
    if cfg.gpu_memory_gib > 0 and used > cfg.gpu_memory_gib:
        hint = (
            f" (gradient_checkpointing: true would need {memory[True]['total']} GiB)"
            if not cfg.gradient_checkpointing
            else ""
        )
        problems.append(
            f"needs {used} GiB per GPU, more than gpu_memory_gib {cfg.gpu_memory_gib}{hint}"
        )
    warnings = []
    if cfg.warmup_steps > sched.total_steps:  # the peak is reached at step warmup_steps
        # From an estimated token count (a base model not built yet, or a config.json with no
        # tokenizer) this is a warning; adapt checks again with the real count and refuses.
        (warnings if estimated else problems).append(
            f"warmup_steps {cfg.warmup_steps} > the run's {sched.total_steps} optimizer steps "
            f"({sched.blocks} blocks of {cfg.context_length} tokens, {sched.blocks_per_step} "
            "blocks a step): the learning rate never reaches its peak"
        )
    return {
        "model": asdict(shape),
        "schedule": asdict(sched),
        "memory_gib_per_gpu": {
            "without_checkpointing": memory[False],
            "with_checkpointing": memory[True],
        },
        "gradient_checkpointing": cfg.gradient_checkpointing,
        "gpu_memory_gib": cfg.gpu_memory_gib,
        "fits": cfg.gpu_memory_gib <= 0 or used <= cfg.gpu_memory_gib,
        "problems": problems,
        "warnings": warnings,
    }
