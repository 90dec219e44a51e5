"""Train a token-classification NER model on notes with Ray Train, choosing the best epoch on dev.

The data arrive through Ray Data (sdeid.ner_data): windows tokenized once, before training,
and split among the workers; dev cut into one share per worker. One short loop runs in every
Ray Train worker (set-up, then per epoch: train, evaluate, checkpoint): CPU workers talk over
gloo, GPU workers over NCCL, and `prepare_model` wraps the model in DDP when there is more than
one. Each worker tags its share of dev and the counts are summed over workers; rank 0 reports a
checkpoint holding the model and the optimizer state. Ray keeps the best one by dev F1 and the
latest one, so a killed run resumes from its last finished epoch.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path

from sdeid.schema import MEDDOCAN_LABELS


@dataclass(frozen=True)
class NerTrainConfig:
    train: str
    """Training corpus: a BRAT folder or Parquet notes (file or folder of shards)."""
    base_model: str
    """Encoder folder to fine-tune, or `package:MODULE/SUBDIR` for a model shipped in a package."""
    dev: str | None = None
    """Dev corpus, used to choose the best epoch. None: hold out `dev_holdout` of train instead
    (the synthetic NER model: no private note takes part in training or model selection)."""
    dev_holdout: float = 0.1
    """Share of training documents held out as dev when `dev` is None: a note is dev when a
    hash of its id and the seed falls below this (sdeid.ner_data.note_role)."""
    min_confidence: float = 0.0
    """Drop machine-annotated spans scored below this (gold spans carry no score and stay)."""
    test: str | None = None
    """Gold test corpus; when given, the best model is scored on it after training."""
    labels: tuple[str, ...] | None = None
    """PHI label set; spans with other labels are an error. None: the label map's labels, or
    MEDDOCAN's 22 without a map."""
    label_map: str | None = None
    """A label map YAML (sdeid.label_map) applied to every corpus this reads."""
    discontinuous: str = "split"
    """A discontinuous BRAT span: split into one span per fragment, or refuse the corpus."""
    train_fraction: float = 1.0
    """Share of training documents used, for the annotator-fraction ablation: a note is used
    when a hash of its id and the seed falls below this (so about this share, not exactly)."""
    max_length: int = 256
    """Subwords per window, with [CLS] and [SEP]."""
    stride: int = 64
    """Subwords shared by consecutive windows of a long document."""
    epochs: int = 6
    min_steps: int = 0
    """Train at least this many optimizer steps in all: when `epochs` full epochs fall short (a
    small share of train, a few windows an epoch), more epochs run. 0: exactly `epochs`."""
    batch_size: int = 16
    learning_rate: float = 1.0e-4
    warmup_ratio: float = 0.06
    """Share of steps with linear warm-up; then linear decay to zero."""
    weight_decay: float = 0.01
    num_workers: int = 1
    """Ray Train workers (data-parallel replicas)."""
    cpus_per_worker: float = 2.0
    use_gpu: bool = False
    precision: str = "fp32"
    """fp32, or bf16: mixed precision, the forward pass under torch.autocast in bfloat16 with
    weights, gradients and optimizer state in float32 (as `adapt`'s bf16 under DDP). Faster on
    GPUs and on CPUs with AVX512-BF16 (benchmarks/results/ner_precision.md), far slower on CPUs
    without it; `auto` takes bf16 where the worker's device has it natively (sdeid.hardware)."""
    max_steps: int | None = None
    """Stop each epoch after this many optimizer steps (a benchmark's fixed amount of training);
    None: every epoch in full."""
    shuffle_buffer: int = 4096
    """Windows each worker shuffles among per epoch (Ray Data's local shuffle buffer)."""
    seed: int = 0
    log_every: int = 25
    """Print a progress line every this many optimizer steps."""

    def check(self):
        if not 0 < self.train_fraction <= 1:
            raise ValueError(f"train_fraction must be in (0, 1], got {self.train_fraction}")
        if self.dev is None and not 0 < self.dev_holdout < 1:
            raise ValueError(f"dev_holdout must be in (0, 1), got {self.dev_holdout}")
        if not 0 <= self.min_confidence < 1:
            raise ValueError(f"min_confidence must be in [0, 1), got {self.min_confidence}")
        if self.max_length <= self.stride + 2:
            raise ValueError(f"max_length {self.max_length} must exceed stride + 2")
        for name in ("epochs", "batch_size", "num_workers", "max_length", "shuffle_buffer"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.min_steps < 0:
            raise ValueError(f"min_steps must be 0 or more, got {self.min_steps}")
        if self.max_steps is not None and self.max_steps <= 0:
            raise ValueError(f"max_steps must be positive, got {self.max_steps}")
        if self.precision not in ("fp32", "bf16", "auto"):
            raise ValueError(f"precision must be fp32, bf16 or auto, got {self.precision!r}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.discontinuous not in ("split", "refuse"):
            raise ValueError(f"discontinuous must be split or refuse, got {self.discontinuous!r}")


def with_label_set(cfg: NerTrainConfig) -> NerTrainConfig:
    """The config with its label set spelled out (from the label map, or MEDDOCAN's)."""
    if cfg.labels is not None:
        return cfg
    if cfg.label_map is None:
        return dataclasses.replace(cfg, labels=MEDDOCAN_LABELS)
    from sdeid.label_map import load_label_map

    return dataclasses.replace(cfg, labels=load_label_map(cfg.label_map).labels)


def read_gold(cfg: NerTrainConfig, path: str):
    """A corpus as this config reads it: label map applied, labels checked."""
    from sdeid.corpus_io import read_corpus

    return read_corpus(
        path, with_label_set(cfg).labels, label_map=cfg.label_map, discontinuous=cfg.discontinuous
    )


def resolve_model_dir(name: str) -> Path:
    """A local folder, or `package:MODULE/SUBDIR` inside an installed package."""
    if name.startswith("package:"):
        module, _, sub = name[len("package:") :].partition("/")
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            raise FileNotFoundError(f"base model {name}: package {module!r} is not installed")
        path = Path(spec.origin).parent / sub
    else:
        path = Path(name)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"base model {name}: no config.json in {path}")
    archs = json.loads((path / "config.json").read_text()).get("architectures") or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        raise FileNotFoundError(
            f"base model {name}: architectures {archs} is a causal LM; the NER trainer "
            "fine-tunes an encoder (a BERT-like model)"
        )
    return path


@dataclass
class _Run:
    """What one worker holds between the phases of the loop."""

    rank: int
    world: int
    device: object
    tokenizer: object
    model: object
    raw_model: object
    optimizer: object
    scheduler: object
    steps_per_epoch: int
    epochs: int
    """`epochs`, or more to reach `min_steps`."""
    bf16: bool = False
    """Autocast in bfloat16: `precision` bf16, or auto where this worker has it natively."""
    start_epoch: int = 0
    best_f1: float = -1.0
    history: list = field(default_factory=list)


def train_loop(config: dict):
    """The per-worker loop: each epoch trains on this worker's share of the windows, scores
    this worker's share of dev, and reports a checkpoint (rank 0 writes it)."""
    cfg = with_label_set(NerTrainConfig(**config["cfg"]))
    run = _set_up(cfg, config["train_windows"])
    for epoch in range(run.start_epoch, run.epochs):
        metrics = _train_epoch(cfg, run, epoch)
        metrics.update(_evaluate(cfg, run))
        _checkpoint(cfg, run, epoch, metrics)


def epochs_to_run(cfg: NerTrainConfig, steps_per_epoch: int) -> int:
    """`epochs`, or as many more as `min_steps` needs: a fixed number of epochs over a small
    share of train is too few steps to learn anything (the 5 % annotator's 2 epochs are 30)."""
    return max(cfg.epochs, -(-cfg.min_steps // max(1, steps_per_epoch)))


def schedule(cfg: NerTrainConfig, train_windows: int, world: int) -> tuple[int, int]:
    """(optimizer steps an epoch, epochs) for this many training windows over `world` workers."""
    # Ray Train's split gives every worker train_windows // world windows: equal step counts
    # keep the DDP ranks in lockstep.
    steps_per_epoch = -(-(train_windows // world) // cfg.batch_size)
    steps_per_epoch = min(steps_per_epoch, cfg.max_steps or steps_per_epoch)
    return steps_per_epoch, epochs_to_run(cfg, steps_per_epoch)


def _set_up(cfg: NerTrainConfig, train_windows: int) -> _Run:
    """The model, optimizer and schedule, restored from the last checkpoint when resuming."""
    import ray.train
    import ray.train.torch
    import torch
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        get_linear_schedule_with_warmup,
    )

    from sdeid.bio import bio_label_names
    from sdeid.hardware import resolve_precision

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if not cfg.use_gpu:
        torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
    torch.manual_seed(cfg.seed)
    base = resolve_model_dir(cfg.base_model)
    names = bio_label_names(cfg.labels)
    model = AutoModelForTokenClassification.from_pretrained(
        base,
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
    )
    model = ray.train.torch.prepare_model(model)
    steps_per_epoch, epochs = schedule(cfg, train_windows, world)
    total_steps = steps_per_epoch * epochs
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay
    )
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(cfg.warmup_ratio * total_steps), total_steps
    )
    run = _Run(
        rank,
        world,
        ray.train.torch.get_device(),
        AutoTokenizer.from_pretrained(base),
        model,
        model.module if hasattr(model, "module") else model,
        optimizer,
        scheduler,
        steps_per_epoch,
        epochs,
        bf16=resolve_precision(cfg.precision, cfg.use_gpu) == "bf16",
    )
    if rank == 0 and epochs > cfg.epochs:
        print(f"[ner] {epochs} epochs of {steps_per_epoch} steps to reach min_steps", flush=True)
    if rank == 0 and cfg.precision == "auto":
        print(f"[ner] precision auto: {'bf16' if run.bf16 else 'fp32'} on this device", flush=True)
    resume = ray.train.get_checkpoint()
    if resume is not None:
        with resume.as_directory() as d:
            state = torch.load(Path(d) / "train_state.pt", map_location="cpu", weights_only=False)
            run.raw_model.load_state_dict(
                AutoModelForTokenClassification.from_pretrained(Path(d) / "model").state_dict()
            )
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        run.start_epoch, run.best_f1 = state["epoch"] + 1, state["best_dev_f1"]
        run.history = state["history"]
        if rank == 0:
            print(f"[ner] resumed after epoch {state['epoch'] + 1}", flush=True)
    return run


def _batch_tensors(batch, pad: int, device):
    """A batch of windows (Arrow) padded to its longest: ids, labels, attention mask."""
    import torch

    from sdeid.bio import IGNORE

    ids, labels = batch["input_ids"].to_pylist(), batch["labels"].to_pylist()
    width = max(len(x) for x in ids)
    lengths = torch.tensor([len(x) for x in ids])
    mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
    ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids])
    labels = torch.tensor([y + [IGNORE] * (width - len(y)) for y in labels])
    return ids.to(device), labels.to(device), mask.to(device)


def _train_epoch(cfg: NerTrainConfig, run: _Run, epoch: int) -> dict:
    """One pass over this worker's share of the windows (shuffled in a buffer, seeded by the
    epoch); returns the epoch's training metrics, with every worker's counts."""
    import resource
    import time

    import ray.train
    import torch

    run.model.train()
    shard = ray.train.get_dataset_shard("train")
    t0, tokens, windows, loss_sum, step = time.time(), 0, 0, 0.0, 0
    for batch in shard.iter_batches(
        batch_size=cfg.batch_size,
        batch_format="pyarrow",
        local_shuffle_buffer_size=cfg.shuffle_buffer,
        local_shuffle_seed=cfg.seed * 1000 + epoch,
    ):
        ids, labels, mask = _batch_tensors(batch, run.tokenizer.pad_token_id, run.device)
        with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.bf16):
            loss = run.model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), 1.0)
        run.optimizer.step()
        run.scheduler.step()
        run.optimizer.zero_grad(set_to_none=True)
        step, windows, tokens = step + 1, windows + len(ids), tokens + int(mask.sum())
        loss_sum += loss.item()
        last = step == run.steps_per_epoch
        if run.rank == 0 and (step % cfg.log_every == 0 or last):
            el = time.time() - t0
            eta = el / step * max(0, run.steps_per_epoch - step)
            print(
                f"[ner] epoch {epoch + 1}/{run.epochs} step {step}/{run.steps_per_epoch} "
                f"loss {loss_sum / step:.4f} {tokens * run.world / el:.0f} tok/s "
                f"epoch ETA {eta:.0f}s",
                flush=True,
            )
        if last:
            break  # max_steps (every worker has the same steps_per_epoch)
    train_s = time.time() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    per_worker = _gather(run, [windows, tokens, rss])
    return {
        "epoch": epoch + 1,
        "train_loss": loss_sum / max(1, step),
        "train_tokens_per_s": sum(w[1] for w in per_worker) / train_s,
        "train_s": train_s,
        "steps": step,
        "windows_per_worker": [int(w[0]) for w in per_worker],
        "peak_rss_mb": max(w[2] for w in per_worker),
        "worker_peak_rss_mb": [round(w[2], 1) for w in per_worker],
    }


def _evaluate(cfg: NerTrainConfig, run: _Run) -> dict:
    """Every worker tags its share of dev; the counts are summed over workers, so the F1s are
    those of the whole dev set."""
    import time

    import ray.train

    from sdeid.metrics import ner_scores, prf
    from sdeid.ner_data import notes_from_rows
    from sdeid.ner_predict import NerTagger

    t0 = time.time()
    run.model.eval()
    tagger = NerTagger(
        None,
        cfg.max_length,
        cfg.stride,
        model=run.raw_model,
        tokenizer=run.tokenizer,
        device=str(run.device),
    )
    counts = [0] * 7  # strict tp, pred, gold; token tp, pred, gold; notes
    dev = ray.train.get_dataset_shard(f"dev_{run.rank}")
    for batch in dev.iter_batches(batch_size=cfg.batch_size, batch_format="pyarrow"):
        notes = notes_from_rows(batch)
        scores = ner_scores(notes, tagger.tag(notes))
        strict, token = scores["strict"], scores["token"]
        mine = [strict["tp"], strict["pred"], strict["gold"], token["tp"], token["pred"]]
        mine += [token["gold"], len(notes)]
        counts = [a + b for a, b in zip(counts, mine, strict=True)]
    per_worker = _gather(run, counts)
    total = [int(sum(w[i] for w in per_worker)) for i in range(7)]
    return {
        "dev_f1": prf(*total[0:3])["f1"],
        "dev_token_f1": prf(*total[3:6])["f1"],
        "dev_notes_per_worker": [int(w[6]) for w in per_worker],
        "dev_s": time.time() - t0,
    }


def _gather(run: _Run, values: list) -> list[list[float]]:
    """Every worker's `values`, on every worker (one all-reduce of a world x k table)."""
    import torch
    import torch.distributed as dist

    table = torch.zeros(run.world, len(values), dtype=torch.float64, device=run.device)
    table[run.rank] = torch.tensor(values, dtype=torch.float64, device=run.device)
    if run.world > 1:
        dist.all_reduce(table)
    return table.cpu().tolist()


def _checkpoint(cfg: NerTrainConfig, run: _Run, epoch: int, metrics: dict) -> None:
    """Rank 0 writes the model and the optimizer state; every rank reports."""
    import json
    import os
    import tempfile

    import ray.train
    import torch

    run.best_f1 = max(run.best_f1, metrics["dev_f1"])
    run.history.append(metrics)
    if run.rank != 0:
        ray.train.report(metrics)
        return
    print(
        f"[ner] epoch {epoch + 1}: dev strict F1 {metrics['dev_f1']:.4f} "
        f"token F1 {metrics['dev_token_f1']:.4f}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as d:
        run.raw_model.save_pretrained(Path(d) / "model")
        run.tokenizer.save_pretrained(Path(d) / "model")
        torch.save(
            {
                "optimizer": run.optimizer.state_dict(),
                "scheduler": run.scheduler.state_dict(),
                "epoch": epoch,
                "best_dev_f1": run.best_f1,
                "history": run.history,
            },
            Path(d) / "train_state.pt",
        )
        (Path(d) / "history.json").write_text(json.dumps(run.history, indent=1))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
    os.sync()


def fit(cfg: NerTrainConfig, run_dir: Path, data: dict, train_windows: int):
    """Run the Ray Train job on the prepared datasets (sdeid.ner_data.training_data); returns
    (best checkpoint, per-epoch metrics)."""
    import ray.train

    from sdeid.ner_data import dev_shards
    from sdeid.ray_env import torch_trainer

    # Keep the best epoch by dev F1 (Ray always keeps the latest too, for resuming).
    trainer = torch_trainer(
        train_loop,
        cfg,
        "ner",
        run_dir,
        ray.train.CheckpointConfig(
            num_to_keep=1, checkpoint_score_attribute="dev_f1", checkpoint_score_order="max"
        ),
        loop_config={"cfg": dataclasses.asdict(cfg), "train_windows": train_windows},
        datasets={"train": data["train"], **dev_shards(data["dev"], cfg.num_workers)},
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
    )
    result = trainer.fit()
    best = result.get_best_checkpoint("dev_f1", "max")
    # The latest checkpoint carries every epoch's metrics, including those before a resume.
    with result.checkpoint.as_directory() as d:
        history = json.loads((Path(d) / "history.json").read_text())
    return best, history
