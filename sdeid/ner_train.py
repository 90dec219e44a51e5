"""Train a token-classification NER model on notes with Ray Train, choosing the best epoch on dev.

One straight-line loop runs in every Ray Train worker: CPU workers talk over gloo, GPU workers
over NCCL, and `prepare_model` wraps the model in DDP when there is more than one. Each epoch
rank 0 scores dev (strict entity F1) and reports a checkpoint holding the model and the
optimizer state; Ray keeps the best one by dev F1 and the latest one, so a killed run resumes
from its last finished epoch.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
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
    """Share of training documents held out as dev when `dev` is None (a seeded sample)."""
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
    """Share of training documents used (a seeded sample), for the annotator-fraction ablation."""
    max_length: int = 256
    """Subwords per window, with [CLS] and [SEP]."""
    stride: int = 64
    """Subwords shared by consecutive windows of a long document."""
    epochs: int = 6
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
    GPUs and on CPUs with AVX512-BF16 (benchmarks/results/ner_precision.md)."""
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
        for name in ("epochs", "batch_size", "num_workers", "max_length"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16, got {self.precision!r}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.discontinuous not in ("split", "refuse"):
            raise ValueError(f"discontinuous must be split or refuse, got {self.discontinuous!r}")


def with_label_set(cfg: NerTrainConfig) -> NerTrainConfig:
    """The config with its label set spelled out (from the label map, or MEDDOCAN's)."""
    import dataclasses

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


def sample_fraction(notes, fraction: float, seed: int):
    import random

    if fraction >= 1:
        return list(notes)
    k = max(1, round(len(notes) * fraction))
    return sorted(random.Random(seed).sample(list(notes), k), key=lambda n: n.doc_id)


def load_train_dev(cfg: NerTrainConfig):
    """(train notes, dev notes): the configured fraction of train, spans below the confidence
    threshold dropped; dev from its own corpus or held out of train."""
    import dataclasses
    import random

    notes = read_gold(cfg, cfg.train)
    if cfg.min_confidence > 0:
        notes = [
            dataclasses.replace(
                n,
                spans=[s for s in n.spans if s.score is None or s.score >= cfg.min_confidence],
            )
            for n in notes
        ]
    if cfg.dev is not None:
        return sample_fraction(notes, cfg.train_fraction, cfg.seed), read_gold(cfg, cfg.dev)
    if len(notes) < 2:
        raise ValueError(f"{cfg.train}: {len(notes)} notes, too few to hold out a dev set")
    order = sorted(notes, key=lambda n: n.doc_id)
    random.Random(cfg.seed + 1).shuffle(order)
    n_dev = max(1, round(len(order) * cfg.dev_holdout))
    train = sorted(order[n_dev:], key=lambda n: n.doc_id)
    return sample_fraction(train, cfg.train_fraction, cfg.seed), order[:n_dev]


def train_loop(cfg_dict: dict):
    """The per-worker loop. Reads the corpora itself so nothing large travels through Ray."""
    import json
    import os
    import random
    import resource
    import tempfile
    import time

    import ray.train
    import ray.train.torch
    import torch
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        get_linear_schedule_with_warmup,
    )

    from sdeid.bio import (
        IGNORE,
        bio_label_names,
        encode_document,
        training_examples,
        word_labels_from_spans,
    )
    from sdeid.metrics import ner_scores
    from sdeid.ner_predict import NerTagger

    cfg = with_label_set(NerTrainConfig(**cfg_dict))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if not cfg.use_gpu:
        torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
    torch.manual_seed(cfg.seed)
    device = ray.train.torch.get_device()

    base = resolve_model_dir(cfg.base_model)
    tokenizer = AutoTokenizer.from_pretrained(base)
    names = bio_label_names(cfg.labels)
    label_ids = {n: i for i, n in enumerate(names)}
    train_notes, dev_notes = load_train_dev(cfg)
    dev_notes = dev_notes if rank == 0 else []
    examples = []
    for note in train_notes:
        doc = encode_document(tokenizer, note.text)
        tags = word_labels_from_spans(doc, note.spans)
        examples += training_examples(
            doc,
            tags,
            label_ids,
            tokenizer.cls_token_id,
            tokenizer.sep_token_id,
            cfg.max_length,
            cfg.stride,
        )

    model = AutoModelForTokenClassification.from_pretrained(
        base, num_labels=len(names), id2label=dict(enumerate(names)), label2id=label_ids
    )
    model = ray.train.torch.prepare_model(model)
    raw_model = model.module if hasattr(model, "module") else model
    per_rank = len(examples) // world
    steps_per_epoch = -(-per_rank // cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay
    )
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(cfg.warmup_ratio * total_steps), total_steps
    )

    start_epoch, best_f1, history = 0, -1.0, []
    resume = ray.train.get_checkpoint()
    if resume is not None:
        with resume.as_directory() as d:
            state = torch.load(Path(d) / "train_state.pt", weights_only=False)
            raw_model.load_state_dict(
                AutoModelForTokenClassification.from_pretrained(Path(d) / "model").state_dict()
            )
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, best_f1, history = state["epoch"] + 1, state["best_dev_f1"], state["history"]
        if rank == 0:
            print(f"[ner] resumed after epoch {state['epoch'] + 1}", flush=True)

    pad = tokenizer.pad_token_id
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        order = list(range(len(examples)))
        random.Random(cfg.seed * 1000 + epoch).shuffle(order)
        mine = order[rank::world][:per_rank]  # equal step counts keep DDP ranks in lockstep
        t0, tokens, loss_sum = time.time(), 0, 0.0
        for step in range(steps_per_epoch):
            batch = [examples[i] for i in mine[step * cfg.batch_size : (step + 1) * cfg.batch_size]]
            width = max(len(ids) for ids, _ in batch)
            ids = torch.tensor([x + [pad] * (width - len(x)) for x, _ in batch], device=device)
            labels = torch.tensor(
                [y + [IGNORE] * (width - len(y)) for _, y in batch], device=device
            )
            mask = (
                torch.arange(width, device=device)[None, :]
                < torch.tensor([len(x) for x, _ in batch], device=device)[:, None]
            ).long()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            tokens += int(mask.sum())
            loss_sum += loss.item()
            if rank == 0 and ((step + 1) % cfg.log_every == 0 or step + 1 == steps_per_epoch):
                el = time.time() - t0
                eta = el / (step + 1) * (steps_per_epoch - step - 1)
                print(
                    f"[ner] epoch {epoch + 1}/{cfg.epochs} step {step + 1}/{steps_per_epoch} "
                    f"loss {loss_sum / (step + 1):.4f} {tokens * world / el:.0f} tok/s "
                    f"epoch ETA {eta:.0f}s",
                    flush=True,
                )
        train_s = time.time() - t0
        metrics = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / max(1, steps_per_epoch),
            "train_tokens_per_s": tokens * world / train_s,
            "train_s": train_s,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
        if rank == 0:
            t1 = time.time()
            model.eval()
            tagger = NerTagger(
                None,
                cfg.max_length,
                cfg.stride,
                model=raw_model,
                tokenizer=tokenizer,
                device=str(device),
            )
            scores = ner_scores(dev_notes, tagger.tag(dev_notes))
            metrics.update(
                dev_f1=scores["strict"]["f1"],
                dev_token_f1=scores["token"]["f1"],
                dev_s=time.time() - t1,
            )
            best_f1 = max(best_f1, metrics["dev_f1"])
            history.append(metrics)
            print(
                f"[ner] epoch {epoch + 1}: dev strict F1 {metrics['dev_f1']:.4f} "
                f"token F1 {metrics['dev_token_f1']:.4f}",
                flush=True,
            )
            with tempfile.TemporaryDirectory() as d:
                raw_model.save_pretrained(Path(d) / "model")
                tokenizer.save_pretrained(Path(d) / "model")
                torch.save(
                    {
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "epoch": epoch,
                        "best_dev_f1": best_f1,
                        "history": history,
                    },
                    Path(d) / "train_state.pt",
                )
                (Path(d) / "history.json").write_text(json.dumps(history, indent=1))
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
        else:
            ray.train.report(metrics)
        os.sync()


def fit(cfg: NerTrainConfig, run_dir: Path):
    """Run the Ray Train job; returns (best checkpoint, per-epoch metrics)."""
    import ray.train

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
    )
    result = trainer.fit()
    best = result.get_best_checkpoint("dev_f1", "max")
    # The latest checkpoint carries every epoch's metrics, including those before a resume.
    with result.checkpoint.as_directory() as d:
        history = json.loads((Path(d) / "history.json").read_text())
    return best, history
