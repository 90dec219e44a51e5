"""Domain-adapt a causal LM on the private corpus: Ray Train + DeepSpeed ZeRO or DDP, LoRA or full.

One straight-line loop runs in every Ray Train worker, on CPU (gloo) or GPU (NCCL). With
`strategy: deepspeed` the model is wrapped by a DeepSpeed engine (ZeRO stage 2 or 3, optional
optimizer offload to CPU); with `strategy: ddp` by torch DDP. Every `checkpoint_every` optimizer
steps and at each epoch end the workers report a Ray Train checkpoint; a killed run restarted
with the same output folder resumes from the last one at the same step, skipping the batches it
already trained on (the data order is a pure function of seed and epoch).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class AdaptConfig:
    corpus: str
    """Private training corpus: a BRAT folder or Parquet notes."""
    dev: str
    """Held-out corpus for dev loss, perplexity and bits per character."""
    base_model: str
    """Causal LM folder (any Hugging Face causal LM on local disk), e.g. from `sdeid model init`."""
    method: str = "lora"
    """`lora` (PEFT adapter, base frozen) or `full` (every weight trains)."""
    lora_r: int = 8
    """LoRA rank (the paper: 8)."""
    lora_alpha: int = 32
    """LoRA alpha (the paper: 32)."""
    lora_dropout: float = 0.05
    lora_target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    strategy: str = "deepspeed"
    """`deepspeed` (ZeRO) or `ddp`."""
    zero_stage: int = 2
    """DeepSpeed ZeRO stage: 2 or 3."""
    offload_optimizer: bool = False
    """ZeRO optimizer state offload to CPU (DeepSpeedCPUAdam)."""
    data_fraction: float = 1.0
    """Share of corpus documents adapted on: the paper's adaptation-data ablation. A note is in
    when a hash of its id and the seed falls below it, the rule `ner train`'s train_fraction
    uses, so equal fractions and seeds pick the same notes for both. 0: no adaptation (the
    base model is the generator, the ablation's starting point)."""
    seed: int = 0
    context_length: int = 512
    """Tokens per packed training block."""
    epochs: int = 1
    max_steps: int = 0
    """If > 0, train at most this many optimizer steps (the schedule spans them)."""
    max_minutes: float = 0.0
    """If > 0, stop training after this many minutes (a time budget; the schedule does not
    shrink to fit, so prefer epochs or max_steps sized from a measured tokens/s)."""
    micro_batch_size: int = 8
    gradient_accumulation: int = 1
    learning_rate: float = 2.0e-4
    min_lr_ratio: float = 0.1
    """Cosine decay ends at learning_rate * min_lr_ratio."""
    warmup_steps: int = 20
    weight_decay: float = 0.0
    precision: str = "fp32"
    """`fp32`, `bf16` or `fp16` (the latter two where the hardware has them; fp16 needs
    DeepSpeed's loss scaling, so `strategy: deepspeed`). The frozen base model is loaded in it."""
    gradient_checkpointing: bool = False
    """Recompute each layer's activations in the backward pass instead of keeping them: about
    a third more compute for a fraction of the activation memory (on in the GPU configs)."""
    gpu_memory_gib: float = 0.0
    """Memory of one GPU; when > 0 a config whose plan needs more is refused before any work
    (`sdeid adapt --dry-run` prints the plan, sdeid/adapt_plan.py)."""
    num_workers: int = 1
    cpus_per_worker: float = 2.0
    use_gpu: bool = False
    checkpoint_every: int = 100
    """Optimizer steps between checkpoints (also one at each epoch end)."""
    log_every: int = 10
    canaries: int = 0
    """Canary notes per repetition count planted in the adaptation notes, and only there
    (sdeid.memorization); 0 plants none. Their exposure is measured after adaptation."""
    canary_repeats: tuple[int, ...] = (1, 4, 16)
    """How many copies of a canary are planted."""
    canary_candidates: int = 4096
    """R, the random secrets each canary's secret is ranked among: exposure tops out at log2 R."""
    membership: bool = False
    """After adaptation, the membership-inference attack on the generator's loss: the notes
    adapted on against dev, `membership_holdout` and unsampled train notes."""
    membership_holdout: str | None = None
    """More notes the generator never saw (the pipeline sets the test split)."""
    membership_reference: bool = True
    """Also the attack calibrated by the base model's loss; only meaningful when the base is a
    pretrained LM (the pipeline turns it off for an `init:` base)."""

    def check(self):
        if self.method not in ("lora", "full"):
            raise ValueError(f"method must be 'lora' or 'full', got {self.method!r}")
        if self.strategy not in ("deepspeed", "ddp"):
            raise ValueError(f"strategy must be 'deepspeed' or 'ddp', got {self.strategy!r}")
        if self.zero_stage not in (2, 3):
            raise ValueError(f"zero_stage must be 2 or 3, got {self.zero_stage}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be fp32, bf16 or fp16, got {self.precision!r}")
        if self.precision == "fp16" and self.strategy == "ddp":
            raise ValueError(
                "precision fp16 needs loss scaling, which sdeid gets from DeepSpeed: use "
                "strategy deepspeed, or precision bf16 with ddp"
            )
        if self.canaries < 0:
            raise ValueError(f"canaries must be >= 0, got {self.canaries}")
        if self.canaries and (not self.canary_repeats or min(self.canary_repeats) < 1):
            raise ValueError(f"canary_repeats must be positive, got {self.canary_repeats}")
        if self.canary_candidates < 2:
            raise ValueError(f"canary_candidates must be >= 2, got {self.canary_candidates}")
        if self.lora_r <= 0:
            raise ValueError(f"lora_r must be positive, got {self.lora_r}")
        if not 0 <= self.data_fraction <= 1:
            raise ValueError(f"data_fraction must be in [0, 1], got {self.data_fraction}")
        for name in (
            "epochs",
            "micro_batch_size",
            "gradient_accumulation",
            "num_workers",
            "context_length",
            "checkpoint_every",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


def deepspeed_config(cfg: AdaptConfig, world: int) -> dict:
    ds = {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation,
        "train_batch_size": cfg.micro_batch_size * cfg.gradient_accumulation * world,
        "gradient_clipping": 1.0,
        "zero_optimization": {"stage": cfg.zero_stage},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if cfg.offload_optimizer:
        ds["zero_optimization"]["offload_optimizer"] = {"device": "cpu"}
    if cfg.precision == "bf16":
        ds["bf16"] = {"enabled": True}
    elif cfg.precision == "fp16":
        ds["fp16"] = {"enabled": True}
    return ds


def _dev_metrics(model, blocks, n_chars, device, batch_size, rank, world):
    """Mean loss per token, perplexity and bits per character over the dev blocks.

    Every rank scores its share of the blocks and the sums are all-reduced. Under ZeRO-3 every
    forward pass gathers parameters from all ranks, so a forward on rank 0 alone would hang;
    the ranks also run the same number of forward passes (a rank short of blocks runs a
    padding batch that is not counted)."""
    import torch
    import torch.distributed as dist

    # Full blocks share a length and go in batches; only the last block may be shorter.
    full = [b for b in blocks if len(b) == len(blocks[0])]
    batches = [full[i : i + batch_size] for i in range(0, len(full), batch_size)]
    batches += [[b] for b in blocks[len(full) :]]
    n_rounds = -(-len(batches) // world)
    totals = torch.zeros(2, dtype=torch.float64, device=device)  # nats, tokens
    model.eval()
    with torch.no_grad():
        for r in range(n_rounds):
            i = r * world + rank
            batch = batches[i] if i < len(batches) else batches[0]
            ids = torch.tensor(batch, device=device)
            loss = model(input_ids=ids, labels=ids).loss  # mean over len(batch) * (L - 1)
            if i < len(batches):
                n = len(batch) * (ids.shape[1] - 1)
                totals += torch.tensor([float(loss) * n, n], dtype=torch.float64, device=device)
    model.train()
    if dist.is_initialized() and world > 1:
        dist.all_reduce(totals)
    total_nats, total_tokens = float(totals[0]), int(totals[1])
    mean = total_nats / max(1, total_tokens)
    return {
        "dev_loss": mean,
        "dev_perplexity": math.exp(min(mean, 50)),
        "dev_bits_per_char": total_nats / math.log(2) / max(1, n_chars),
    }


def adapted_on(cfg: AdaptConfig, corpus) -> list:
    """The corpus notes in the data_fraction sample (at least one unless it is 0)."""
    from sdeid.ner_data import hashed_unit

    if cfg.data_fraction >= 1 or not corpus:
        return list(corpus)
    if cfg.data_fraction == 0:
        return []
    units = [hashed_unit(n.doc_id, cfg.seed, "train") for n in corpus]
    cut = max(cfg.data_fraction, math.nextafter(min(units), 1))  # a tiny corpus keeps one
    return [n for n, u in zip(corpus, units, strict=True) if u < cut]


def adaptation_notes(cfg: AdaptConfig, corpus) -> list:
    """What the generator is adapted on: the data_fraction sample, and the canaries if any."""
    from sdeid.memorization import canaries

    notes = adapted_on(cfg, corpus)
    if not cfg.canaries or not notes:
        return notes
    planted = canaries.make_canaries(cfg.canaries, cfg.canary_repeats, cfg.seed)
    return canaries.plant(notes, planted, cfg.seed)


def train_loop(cfg_dict: dict):
    import os
    import random
    import tempfile

    import ray.train
    import ray.train.torch
    import torch

    cfg = AdaptConfig(**cfg_dict)
    if not cfg.use_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
    from transformers import AutoTokenizer

    from sdeid.corpus_io import read_corpus
    from sdeid.lm_data import pack_blocks, tokenize_documents

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg.seed)

    tokenizer = AutoTokenizer.from_pretrained(cfg.base_model)
    notes = adaptation_notes(cfg, read_corpus(cfg.corpus))
    blocks = pack_blocks(tokenize_documents(tokenizer, [n.text for n in notes]), cfg.context_length)
    dev_notes = read_corpus(cfg.dev)
    dev_blocks = pack_blocks(
        tokenize_documents(tokenizer, [n.text for n in dev_notes]),
        cfg.context_length,
        keep_last=True,
    )
    dev_chars = sum(len(n.text) for n in dev_notes)

    model = build_model(cfg)
    params = [p for p in model.parameters() if p.requires_grad]

    from sdeid.adapt_plan import schedule

    sched = schedule(cfg, len(blocks) * cfg.context_length)
    steps_per_epoch, total_steps = sched.steps_per_epoch, sched.total_steps
    clock = TrainClock()
    if cfg.strategy == "deepspeed":
        import deepspeed

        if cfg.offload_optimizer:
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            optimizer = DeepSpeedCPUAdam(
                params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay
            )
        else:
            optimizer = torch.optim.AdamW(
                params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay
            )
        scheduler = _cosine_schedule(optimizer, cfg, total_steps, clock)
        engine, optimizer, _, scheduler = deepspeed.initialize(
            model=model,
            optimizer=optimizer,
            lr_scheduler=scheduler,
            config=deepspeed_config(cfg, world),
            dist_init_required=False,
        )
        module = engine.module
    else:
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        scheduler = _cosine_schedule(optimizer, cfg, total_steps, clock)
        engine = ray.train.torch.prepare_model(model)
        module = model

    step, history = 0, []
    resume = ray.train.get_checkpoint()
    if resume is not None:
        with resume.as_directory() as d:
            state = json.loads((Path(d) / "train_state.json").read_text())
            if cfg.strategy == "deepspeed":
                # The checkpoint holds only trainable weights (see save_checkpoint).
                engine.load_checkpoint(d, tag="engine", load_module_strict=cfg.method == "full")
            else:
                sd = torch.load(Path(d) / "trainer.pt", map_location=device, weights_only=False)
                module.load_state_dict(sd["model"], strict=False)
                optimizer.load_state_dict(sd["optimizer"])
                scheduler.load_state_dict(sd["scheduler"])
        step, history = state["step"], state["history"]
        clock.before = state["trained_s"]
        if rank == 0:
            print(f"[adapt] resumed at optimizer step {step}", flush=True)

    def save_checkpoint(metrics, epoch_end, final=False):
        with tempfile.TemporaryDirectory() as d:
            if final:
                export_models(cfg, module, tokenizer, Path(d), rank)
            if cfg.strategy == "deepspeed":
                # Every rank writes its ZeRO shard; the frozen base is not written (it is
                # the base model folder: 12 GB per checkpoint for a 6B model under LoRA).
                engine.save_checkpoint(d, tag="engine", exclude_frozen_parameters=True)
            elif rank == 0:
                trainable = {
                    k: v
                    for k, v in module.state_dict().items()
                    if cfg.method == "full" or "lora_" in k
                }
                torch.save(
                    {
                        "model": trainable,
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                    },
                    Path(d) / "trainer.pt",
                )
            if rank == 0:
                (Path(d) / "train_state.json").write_text(
                    json.dumps(
                        {
                            "step": step,
                            "history": history,
                            "trained_s": clock.elapsed(),
                            "epoch_end": epoch_end,
                        }
                    )
                )
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))

    # Packed blocks are full: no padding and no attention mask.
    stop = False
    tokens_seen, t_last, loss_acc, logged_steps = 0, time.time(), 0.0, 0
    for epoch in range(step // steps_per_epoch, cfg.epochs):
        clock.go()
        order = list(range(len(blocks)))
        random.Random(cfg.seed * 1000 + epoch).shuffle(order)
        # Every block once per epoch: the last step is topped up from the epoch's start.
        need = steps_per_epoch * sched.blocks_per_step
        order = (order * (need // max(1, len(order)) + 1))[:need]
        mine = order[rank::world]
        first = step - epoch * steps_per_epoch  # optimizer steps already done this epoch
        for s in range(first, steps_per_epoch):
            for a in range(cfg.gradient_accumulation):
                k = (s * cfg.gradient_accumulation + a) * cfg.micro_batch_size
                ids = torch.tensor(
                    [blocks[i] for i in mine[k : k + cfg.micro_batch_size]], device=device
                )
                with torch.autocast(
                    device.type,
                    dtype=torch.bfloat16,
                    enabled=cfg.precision == "bf16" and cfg.strategy == "ddp",
                ):
                    loss = engine(input_ids=ids, labels=ids).loss
                if cfg.strategy == "deepspeed":
                    engine.backward(loss)
                    engine.step()
                else:
                    (loss / cfg.gradient_accumulation).backward()
                loss_acc += float(loss) / cfg.gradient_accumulation
                tokens_seen += ids.numel()
            if cfg.strategy == "ddp":
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            step += 1
            logged_steps += 1
            # Log every log_every steps and at the last step, so a short run logs its loss.
            if step % cfg.log_every == 0 or step == total_steps:
                el = time.time() - t_last
                if rank == 0:
                    print(
                        f"[adapt] epoch {epoch + 1} step {step}/{total_steps} loss "
                        f"{loss_acc / logged_steps:.4f} lr {scheduler.get_last_lr()[0]:.2e} "
                        f"{tokens_seen * world / el:.0f} tok/s",
                        flush=True,
                    )
                    history.append(
                        {
                            "step": step,
                            "train_loss": loss_acc / logged_steps,
                            "tokens_per_s": tokens_seen * world / el,
                        }
                    )
                tokens_seen, t_last, loss_acc, logged_steps = 0, time.time(), 0.0, 0
            out_of_time = cfg.max_minutes > 0 and (clock.elapsed() > cfg.max_minutes * 60)
            stop = step >= total_steps or _all_agree(out_of_time, device)
            if step % cfg.checkpoint_every == 0 and s + 1 < steps_per_epoch and not stop:
                save_checkpoint({"step": step, "trained_s": clock.elapsed()}, False)
            if stop:
                break
        clock.pause()
        metrics = {"step": step, "epoch": epoch + 1, "trained_s": clock.elapsed()}
        metrics.update(
            _dev_metrics(
                engine if cfg.strategy == "deepspeed" else module,
                dev_blocks,
                dev_chars,
                device,
                cfg.micro_batch_size,
                rank,
                world,
            )
        )
        if rank == 0:
            print(
                f"[adapt] epoch {epoch + 1}: dev loss {metrics['dev_loss']:.4f} perplexity "
                f"{metrics['dev_perplexity']:.1f} bits/char {metrics['dev_bits_per_char']:.4f}",
                flush=True,
            )
            history.append(metrics)
        final = stop or epoch + 1 == cfg.epochs
        save_checkpoint(metrics, True, final)
        if final:
            break


def _all_agree(flag: bool, device) -> bool:
    """True on every rank when any rank says True (so all ranks stop at the same step)."""
    import torch
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


class TrainClock:
    """Seconds spent training, across resumes, not counting dev evaluation."""

    def __init__(self, before: float = 0.0):
        self.before, self.since = before, time.time()

    def elapsed(self) -> float:
        return self.before + (time.time() - self.since if self.since is not None else 0.0)

    def pause(self):
        self.before, self.since = self.elapsed(), None

    def go(self):
        if self.since is None:
            self.since = time.time()


def _cosine_schedule(optimizer, cfg: AdaptConfig, total_steps: int, clock: TrainClock):
    """Linear warm-up, then cosine decay to `min_lr_ratio` of the peak.

    With a time budget (`max_minutes`) the decay follows whichever runs out first, steps or
    time, so a budgeted run still ends at the low learning rate.
    """
    import torch

    def factor(step):
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
        if cfg.max_minutes > 0:
            progress = max(progress, min(1.0, clock.elapsed() / (cfg.max_minutes * 60)))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def load_dtype(cfg: AdaptConfig) -> str:
    """The dtype the base model is loaded in for training.

    16-bit where the frozen base (LoRA) or DeepSpeed (which keeps fp32 master weights) makes it
    safe: a 6.3B model is 12.6 GB instead of 25 GB on every worker. Full training under DDP
    keeps fp32 weights and uses autocast, since AdamW on 16-bit weights loses small updates.
    """
    if cfg.precision == "fp32" or (cfg.method == "full" and cfg.strategy == "ddp"):
        return "float32"
    return {"bf16": "bfloat16", "fp16": "float16"}[cfg.precision]


def build_model(cfg: AdaptConfig, dtype: str | None = None):
    """The base causal LM (in `dtype`, by default the training dtype), wrapped with a fresh
    LoRA adapter for method `lora` (PEFT keeps the adapter's weights in fp32)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(cfg.base_model, dtype=dtype or load_dtype(cfg))
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if cfg.method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                r=cfg.lora_r,
                lora_alpha=cfg.lora_alpha,
                lora_dropout=cfg.lora_dropout,
                target_modules=list(cfg.lora_target_modules),
                task_type="CAUSAL_LM",
            ),
        )
    return model


def export_models(cfg: AdaptConfig, module, tokenizer, out: Path, rank: int) -> None:
    """Write `adapter/` (LoRA only) and `merged/`, a plain model folder vLLM loads directly.

    Under ZeRO-3 every rank must take part in gathering the partitioned weights; rank 0 then
    rebuilds the model on CPU from the base folder and loads the trained weights into it.
    """
    import contextlib

    gather = contextlib.nullcontext()
    if cfg.strategy == "deepspeed" and cfg.zero_stage == 3:
        import deepspeed

        gather = deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None)
    with gather:
        state = (
            {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
            if rank == 0
            else None
        )
    if rank != 0:
        return
    # merged/ is written in the base model's own dtype (`auto`: what its config.json says),
    # the dtype vLLM then serves, not in the training dtype or fp32.
    model = build_model(dataclasses.replace(cfg, gradient_checkpointing=False), dtype="auto")
    model.load_state_dict(state)
    if cfg.method == "lora":
        model.save_pretrained(out / "adapter")
        tokenizer.save_pretrained(out / "adapter")
        model = model.merge_and_unload()
    model.save_pretrained(out / "merged")
    tokenizer.save_pretrained(out / "merged")


def fit(cfg: AdaptConfig, run_dir: Path):
    import ray.train

    from sdeid.ray_env import torch_trainer

    trainer = torch_trainer(
        train_loop, cfg, "adapt", run_dir, ray.train.CheckpointConfig(num_to_keep=1)
    )
    return trainer.fit()
