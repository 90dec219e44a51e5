"""Annotation throughput: `sdeid annotate` vs the transformers token-classification pipeline.

    .venv/bin/python benchmarks/annotate.py [--model runs/ner-meddocan] [--notes 250]

The same model (the gold NER from `sdeid ner train`), the same notes (MEDDOCAN dev texts,
written as one note shard, so the notes have real length: 2.8k characters on average), the same
256-subword windows with 64 of overlap. The baseline is what a first script would write:
`pipeline("token-classification", aggregation_strategy="first", stride=64)` over the notes,
timed once the pipeline is built; it is run with batch_size 1 (its default) and 16. sdeid is the
real `sdeid annotate` command (Ray Data actor pool, windows of many notes batched longest
first), timed by its manifest from the start of the Ray Data run, actor start and model load
included. Notes/s, medians of 3 repeats. Writes benchmarks/results/annotate.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "annotate.json"
SDEID = str(Path(sys.executable).parent / "sdeid")
MEDDOCAN_DEV = ROOT.parent / "shared" / "data" / "meddocan" / "dev"
WORK = ROOT / "runs" / "bench-annotate"


def write_notes(n: int) -> Path:
    from sdeid.parquet_io import read_corpus
    from sdeid.schema import Note
    from sdeid.shard_store import ShardStore

    notes = [
        Note(d.doc_id, d.text, [], source="meddocan-dev") for d in read_corpus(str(MEDDOCAN_DEV))
    ]
    store = ShardStore(WORK / "notes")
    if not store.done():
        store.write(0, notes[:n])
    return store.folder


def hf_pipeline(model_dir: Path, texts: list[str], batch_size: int, dtype: str):
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.model_max_length = 256  # the windows sdeid uses
    model = AutoModelForTokenClassification.from_pretrained(model_dir, dtype=getattr(torch, dtype))
    pipe = pipeline(
        "token-classification",
        model=model,
        tokenizer=tok,
        aggregation_strategy="first",
        stride=64,
        device="cpu",
    )
    t0 = time.time()
    out = pipe(texts, batch_size=batch_size)
    return len(texts) / (time.time() - t0), sum(len(x) for x in out)


def sdeid_annotate(notes: Path, model: Path, dtype: str) -> tuple[float, int]:
    out = WORK / f"out-{dtype}"
    subprocess.run(["rm", "-rf", str(out)])
    cfg = WORK / f"annotate-{dtype}.yaml"
    cfg.write_text(
        json.dumps(
            dict(
                notes=str(notes),
                model=str(model),
                annotators=1,
                cpus_per_annotator=2,
                batch_size=64,
                dtype=dtype,
                sample_brat=0,
            )
        )
    )
    run = subprocess.run(
        [SDEID, "annotate", "--config", str(cfg), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if run.returncode:
        sys.exit(run.stderr[-3000:])
    counts = json.loads((out / "_manifest.json").read_text())["counts"]
    return counts["notes_per_s"], counts["spans"]


def main(model: Path, n_notes: int, repeats: int = 3):
    from sdeid.parquet_io import read_notes_parquet

    WORK.mkdir(parents=True, exist_ok=True)
    notes = write_notes(n_notes)
    texts = [n.text for n in read_notes_parquet(str(notes))]
    model_dir = model / "model" if (model / "model").is_dir() else model
    rows = {
        "hf_pipeline_batch1_float32": [],
        "hf_pipeline_batch16_float32": [],
        "sdeid_annotate_float32": [],
        "sdeid_annotate_bfloat16": [],
    }
    spans = {}
    for _ in range(repeats):
        for bs in (1, 16):
            rate, n = hf_pipeline(model_dir, texts, bs, "float32")
            rows[f"hf_pipeline_batch{bs}_float32"].append(rate)
            spans[f"hf_pipeline_batch{bs}_float32"] = n
        for dtype in ("float32", "bfloat16"):
            rate, n = sdeid_annotate(notes, model, dtype)
            rows[f"sdeid_annotate_{dtype}"].append(rate)
            spans[f"sdeid_annotate_{dtype}"] = n
        print({k: round(v[-1], 2) for k, v in rows.items()}, flush=True)
    med = {k: statistics.median(v) for k, v in rows.items()}
    baseline = max(("hf_pipeline_batch1_float32", "hf_pipeline_batch16_float32"), key=med.get)
    result = {
        "model": str(model_dir),
        "notes": len(texts),
        "mean_chars": sum(map(len, texts)) / len(texts),
        "notes_per_s": rows,
        "median_notes_per_s": med,
        "spans_found_last_repeat": spans,
        "baseline": baseline,
        "sdeid_float32_vs_baseline": med["sdeid_annotate_float32"] / med[baseline],
        "sdeid_bfloat16_vs_baseline": med["sdeid_annotate_bfloat16"] / med[baseline],
    }
    print(json.dumps(result, indent=2))
    RESULTS.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "runs" / "ner-meddocan"))
    ap.add_argument("--notes", type=int, default=250)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    main(Path(args.model), args.notes, args.repeats)
