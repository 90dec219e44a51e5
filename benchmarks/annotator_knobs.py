"""What the annotator's cheap speed knobs cost in quality: number type and window overlap.

    .venv/bin/python benchmarks/annotator_knobs.py [--model runs/ner-meddocan] [--cores N]

At scale the annotate stage is pure model time, so a knob that cuts FLOPs or uses faster
arithmetic is worth having only if the annotator's F1 survives it: the synthetic NER follows the
annotator (the paper's central finding). Each variant tags the MEDDOCAN test set with sdeid's
`NerTagger` (the gold NER model, 256-subword windows, one process on `--cores` threads), timed
after one warm-up note batch, and is scored against the gold spans (strict entity and token F1,
from the last repeat). Variants: float32 (the default), bfloat16, bfloat16 with less window
overlap (`stride` 32 and 0: fewer subwords through the model, less context at window edges), and
int8 (torch's dynamic quantisation of the linear layers; AnnotateConfig does not offer it).
Notes/s, medians of 3 repeats. Writes benchmarks/results/annotator_knobs.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from md_table import rate_rows  # benchmarks/, beside this script

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "annotator_knobs.json"
MEDDOCAN_TEST = ROOT.parent / "shared" / "data" / "meddocan" / "test"
MAX_LENGTH = 256
VARIANTS = {  # name -> (number type, stride)
    "float32_stride64": ("float32", 64),
    "bfloat16_stride64": ("bfloat16", 64),
    "bfloat16_stride32": ("bfloat16", 32),
    "bfloat16_stride0": ("bfloat16", 0),
    "int8_dynamic_stride64": ("int8", 64),
}


def make_tagger(model_dir: Path, dtype: str, stride: int):
    import torch
    from transformers import AutoModelForTokenClassification

    from sdeid.ner_predict import NerTagger

    if dtype != "int8":
        return NerTagger(model_dir, MAX_LENGTH, stride, dtype=dtype)
    model = AutoModelForTokenClassification.from_pretrained(model_dir)
    model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    return NerTagger(model_dir, MAX_LENGTH, stride, model=model)


def subwords_per_note(note_lengths: list[int], stride: int) -> float:
    """Subwords the model reads per note, [CLS] and [SEP] of every window included, for notes of
    `note_lengths` subwords."""
    from sdeid.bio import windows

    total = sum(e - s + 2 for n in note_lengths for s, e in windows(n, MAX_LENGTH - 2, stride))
    return total / len(note_lengths)


def main(model: Path, repeats: int, cores: int):
    import torch
    from transformers import AutoTokenizer

    from sdeid.bio import encode_document
    from sdeid.brat import read_brat
    from sdeid.metrics import ner_scores

    torch.set_num_threads(cores)
    gold = read_brat(MEDDOCAN_TEST)
    model_dir = model / "model" if (model / "model").is_dir() else model
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    note_lengths = [len(encode_document(tokenizer, n.text).input_ids) for n in gold]
    rows, strict, token, subwords = {}, {}, {}, {}
    for name, (dtype, stride) in VARIANTS.items():
        tagger = make_tagger(model_dir, dtype, stride)
        tagger.tag(gold[:8])  # warm-up: first-call allocations and kernel selection
        rows[name] = []
        for _ in range(repeats):
            t0 = time.time()
            preds = tagger.tag(gold)
            rows[name].append(len(gold) / (time.time() - t0))
        scores = ner_scores(gold, preds)
        strict[name], token[name] = scores["strict"]["f1"], scores["token"]["f1"]
        subwords[name] = subwords_per_note(note_lengths, stride)
        print(name, [round(r, 2) for r in rows[name]], round(strict[name], 4), flush=True)
    result = {
        "model": str(model_dir),
        "notes": len(gold),
        "cores": cores,
        "baseline": "float32_stride64",
        "notes_per_s": rows,
        "median_notes_per_s": {k: statistics.median(v) for k, v in rows.items()},
        "strict_f1": strict,
        "token_f1": token,
        "subwords_per_note": subwords,
    }
    print(json.dumps(result, indent=2))
    RESULTS.write_text(json.dumps(result, indent=2))
    RESULTS.with_suffix(".md").write_text(table(result))


def table(result: dict) -> str:
    return (
        "\n".join(
            [
                "# Annotator speed knobs and what they cost (`benchmarks/annotator_knobs.py`)",
                "",
                f"{result['notes']} MEDDOCAN test notes tagged by the gold NER model with sdeid's "
                f"NerTagger in one process on {result['cores']} threads; notes/s, median of "
                f"{len(result['notes_per_s'][result['baseline']])} repeats; F1 against the gold "
                "spans.",
                "",
                *rate_rows(
                    result["notes_per_s"],
                    result["baseline"],
                    "notes/s",
                    2,
                    {
                        "strict F1": {k: f"{v:.4f}" for k, v in result["strict_f1"].items()},
                        "token F1": {k: f"{v:.4f}" for k, v in result["token_f1"].items()},
                        "subwords per note": {
                            k: f"{v:.0f}" for k, v in result["subwords_per_note"].items()
                        },
                    },
                ),
            ]
        )
        + "\n"
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=ROOT / "runs" / "ner-meddocan")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cores", type=int, default=os.cpu_count())
    args = ap.parse_args()
    main(args.model, args.repeats, args.cores)
