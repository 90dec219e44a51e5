"""Tag synthetic notes for PHI with the gold-trained NER model, on a Ray Data actor pool.

Each actor holds one `NerTagger`; a batch of notes is cut into windows that are sorted by
length before they reach the model, so padding stays small. Spans carry the model's confidence
(the lowest word probability in the span), which `min_score` can threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

from sdeid.shard_writer import WINDOW_BATCHES


@dataclass(frozen=True)
class AnnotateConfig:
    notes: str
    """A `generate` output folder (its clean/ shards are read) or a folder of note shards."""
    model: str
    """An `ner train` output folder (its model/ is used) or a token-classification model."""
    annotators: int = 1
    """Actors in the pool, each holding a copy of the model."""
    cpus_per_annotator: float = 2.0
    use_gpu: bool = False
    batch_size: int = 64
    """Notes per batch sent to an actor."""
    max_length: int = 256
    stride: int = 64
    """Subwords shared by consecutive windows. Less overlap is faster and loses entities at
    window edges (benchmarks/results/annotator_knobs.md)."""
    min_score: float = 0.0
    """Drop predicted spans whose confidence is below this."""
    dtype: str = "float32"
    """Model weights' type: bfloat16 is faster on CPUs with AVX512-BF16 (2x on MEDDOCAN test, same
    F1) and on GPUs, far slower on CPUs without it; `auto` takes bfloat16 where the annotator's
    device has it natively, else float32 (sdeid.hardware)."""
    sample_brat: int = 20
    """Also export this many annotated notes as BRAT for inspection (0: none)."""
    window_batches: int = WINDOW_BATCHES
    """Batches in one Ray Data run: a bigger corpus is tagged in consecutive runs of whole
    shards, so the driver's memory stays bounded (sdeid.shard_writer.WINDOW_BATCHES)."""

    def check(self):
        for name in ("annotators", "batch_size", "max_length", "window_batches"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.min_score < 1:
            raise ValueError(f"min_score must be in [0, 1), got {self.min_score}")
        if self.dtype not in ("float32", "bfloat16", "float16", "auto"):
            raise ValueError(
                f"dtype must be float32, bfloat16, float16 or auto, got {self.dtype!r}"
            )


class NerAnnotator:
    """The actor's callable: a pyarrow batch of notes in, the same batch with spans out."""

    def __init__(
        self,
        model_dir: str,
        name: str,
        max_length: int,
        stride: int,
        threads: int,
        min_score: float,
        use_gpu: bool,
        dtype: str = "float32",
    ):
        import os

        import torch

        from sdeid.hardware import resolve_dtype
        from sdeid.ner_predict import NerTagger

        # The tokenizer encodes each batch in one call. On its Rust thread pool the actor kept
        # about 4 KB more a note for as long as it lived (1 to 2 GB over the 262k notes of one
        # Ray Data run), 0.6 KB sequentially; parallel was 11 % faster on 2 cores
        # (benchmarks/results/annotate_memory.md). Memory wins: an actor lives for
        # hours on a GPU node. annotate_cpu.md's per-note time, which the extrapolation
        # uses, was measured sequential.
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        if not use_gpu:
            torch.set_num_threads(max(1, threads))
        device = "cuda" if use_gpu else "cpu"
        dtype = resolve_dtype(dtype, use_gpu)  # here: the actor's node, not the driver's
        self.tagger = NerTagger(model_dir, max_length, stride, device=device, dtype=dtype)
        self.name, self.min_score = name, min_score

    def __call__(self, batch):
        from sdeid.parquet_io import notes_to_table
        from sdeid.schema import Note

        notes = [
            Note(i, t)
            for i, t in zip(batch["doc_id"].to_pylist(), batch["text"].to_pylist(), strict=True)
        ]
        tagged = self.tagger.tag(notes, annotator=self.name)
        for note in tagged:
            note.spans = [s for s in note.spans if s.score is None or s.score >= self.min_score]
        for note, source in zip(tagged, batch["source"].to_pylist(), strict=True):
            note.source = source
        extra = {
            c: batch[c]
            for c in batch.column_names
            if c not in ("doc_id", "text", "spans", "source", "annotator")
        }
        return notes_to_table(tagged, extra)


def annotate_dataset(ds, cfg: AnnotateConfig, model_dir: str, name: str):
    """The Ray Data step: `ds` of notes -> `ds` of annotated notes (no I/O of its own)."""
    from ray.data import ActorPoolStrategy

    return ds.map_batches(
        NerAnnotator,
        fn_constructor_kwargs=dict(
            model_dir=model_dir,
            name=name,
            max_length=cfg.max_length,
            stride=cfg.stride,
            threads=int(cfg.cpus_per_annotator),
            min_score=cfg.min_score,
            use_gpu=cfg.use_gpu,
            dtype=cfg.dtype,
        ),
        batch_format="pyarrow",
        batch_size=cfg.batch_size,
        compute=ActorPoolStrategy(size=cfg.annotators),
        num_cpus=cfg.cpus_per_annotator,
        num_gpus=1 if cfg.use_gpu else 0,
    )
