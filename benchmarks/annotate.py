"""Annotation throughput: `sdeid annotate` vs the transformers token-classification pipeline.

    .venv/bin/python benchmarks/annotate.py [--model runs/ner-meddocan] [--notes 250] [--cores N]

The same model (the gold NER from `sdeid ner train`), the same notes (MEDDOCAN dev texts,
written as one note shard, so the notes have real length: 2.8k characters on average), the same
256-subword windows with 64 of overlap. The baseline is what a first script would write:
`pipeline("token-classification", aggregation_strategy="first", stride=64)` over the notes,
timed once the pipeline is built, with batch_size 1 (its default) and 16, in float32 (its
default); it also runs in bfloat16 at batch 16, so the table shows what the number type alone
buys. sdeid is the real `sdeid annotate` command (Ray Data actor pool, windows of many notes
batched longest first), timed by its manifest from the start of the Ray Data run: actor start
and model load included, joining Ray not (reported beside it). It runs with its defaults (one
actor with a thread per core, float32) and as a CPU user would set it (a 1-thread actor per core,
bfloat16). A last row bounds what any scheduling could give on this machine: sdeid's tagger alone
in one 1-thread bfloat16 process per core, no Ray, timed once all have loaded the model. Beside
the table, a bound on any implementation: the model's matrix-product FLOPs on these notes'
windows at the best bfloat16 GEMM rate the cores reach in the same run. Everything runs on
`--cores` cores (the machine's by default).
Notes/s, medians of 3 repeats. Writes benchmarks/results/annotate.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from md_table import rate_rows  # benchmarks/, beside this script

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "annotate.json"
SDEID = str(Path(sys.executable).parent / "sdeid")
MEDDOCAN_DEV = ROOT.parent / "shared" / "data" / "meddocan" / "dev"
WORK = ROOT / "runs" / "bench-annotate"
MAX_LENGTH, STRIDE = 256, 64  # the windows both sides use (sdeid's AnnotateConfig defaults)


def write_notes(n: int) -> Path:
    from sdeid.corpus_io import read_corpus
    from sdeid.schema import Note
    from sdeid.shard_store import ShardStore

    notes = [
        Note(d.doc_id, d.text, [], source="meddocan-dev") for d in read_corpus(str(MEDDOCAN_DEV))
    ]
    shutil.rmtree(WORK / "notes", ignore_errors=True)  # --notes may differ from the last run
    store = ShardStore(WORK / "notes")
    store.write(0, notes[:n])
    return store.folder


def hf_pipeline(model_dir: Path, texts: list[str], batch_size: int, dtype: str):
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.model_max_length = MAX_LENGTH
    model = AutoModelForTokenClassification.from_pretrained(model_dir, dtype=getattr(torch, dtype))
    pipe = pipeline(
        "token-classification",
        model=model,
        tokenizer=tok,
        aggregation_strategy="first",
        stride=STRIDE,
        device="cpu",
    )
    t0 = time.time()
    out = pipe(texts, batch_size=batch_size)
    return len(texts) / (time.time() - t0), sum(len(x) for x in out)


def sdeid_annotate(notes: Path, model: Path, dtype: str, actors: int, cores: int) -> tuple:
    out = WORK / f"out-{actors}x-{dtype}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = WORK / f"annotate-{actors}x-{dtype}.yaml"
    cfg.write_text(
        json.dumps(
            dict(
                notes=str(notes),
                model=str(model),
                annotators=actors,
                cpus_per_annotator=cores / actors,
                batch_size=32,
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
    manifest = json.loads((out / "_manifest.json").read_text())
    return (
        manifest["counts"]["notes_per_s"],
        manifest["counts"]["spans"],
        manifest["timings"]["ray_start_s"],
        manifest["timings"]["first_shard_s"],
    )


def _tag_share(model_dir: str, texts: list[str], barrier, results) -> None:
    import time

    import torch

    from sdeid.ner_predict import NerTagger
    from sdeid.schema import Note

    torch.set_num_threads(1)
    tagger = NerTagger(model_dir, MAX_LENGTH, STRIDE, dtype="bfloat16")
    barrier.wait()  # every process has its model loaded: start the clock together
    t0 = time.time()
    notes = tagger.tag([Note(str(i), t) for i, t in enumerate(texts)])
    results.put((t0, time.time(), sum(len(n.spans) for n in notes)))


def tagger_ceiling(model_dir: Path, texts: list[str], processes: int) -> tuple:
    """sdeid's tagger with no Ray and no start-up: `processes` processes of one thread each, in
    bfloat16, tag an equal share of the notes, timed from the moment all have loaded the model.
    The rate `sdeid annotate` with that many 1-thread actors would reach if starting them and
    Ray's own processes were free."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    procs = [
        ctx.Process(target=_tag_share, args=(str(model_dir), texts[i::processes], barrier, results))
        for i in range(processes)
    ]
    for p in procs:
        p.start()
    done = [results.get() for _ in procs]
    for p in procs:
        p.join()
    start, end = min(d[0] for d in done), max(d[1] for d in done)
    return len(texts) / (end - start), sum(d[2] for d in done)


def matmul_flops_per_note(model_dir: Path, c: dict, texts: list[str]) -> float:
    """The matrix-product FLOPs of one forward pass per note, averaged over `texts`, for a BERT
    token classifier (config `c`) over the benchmark's windows: per window of L tokens,
    2 L x (the linear layers' weights) plus 4 L^2 x hidden x layers for attention."""
    from transformers import AutoTokenizer

    from sdeid.bio import encode_document, windows

    h, layers = c["hidden_size"], c["num_hidden_layers"]
    weights = layers * (4 * h * h + 2 * h * c["intermediate_size"]) + h * len(c["id2label"])
    tok = AutoTokenizer.from_pretrained(model_dir)
    flops = 0
    for text in texts:
        n = len(encode_document(tok, text).input_ids)
        for s, e in windows(n, MAX_LENGTH - 2, STRIDE):
            length = e - s + 2  # [CLS] and [SEP]
            flops += 2 * length * weights + 4 * length * length * h * layers
    return flops / len(texts)


def best_gemm_flops(c: dict, repeats: int = 5) -> float:
    """The best bfloat16 GEMM rate (FLOP/s) torch reaches on this machine's cores now, on the
    linear-layer shapes of the model with config `c` (8,192 tokens): the median of `repeats` per
    shape, best shape."""
    import torch

    h, i = c["hidden_size"], c["intermediate_size"]
    best = 0.0
    for n_in, n_out in ((h, h), (h, i), (i, h)):
        x = torch.randn(8192, n_in, dtype=torch.bfloat16)
        w = torch.randn(n_out, n_in, dtype=torch.bfloat16)
        b = torch.randn(n_out, dtype=torch.bfloat16)
        torch.nn.functional.linear(x, w, b)  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.nn.functional.linear(x, w, b)
            times.append(time.perf_counter() - t0)
        best = max(best, 2 * 8192 * n_in * n_out / statistics.median(times))
    return best


HF = {  # name -> (batch size, dtype)
    "hf_pipeline_batch1_float32": (1, "float32"),
    "hf_pipeline_batch16_float32": (16, "float32"),
    "hf_pipeline_batch16_bfloat16": (16, "bfloat16"),
}


def sdeid_runs(cores: int) -> dict:
    """name -> (actors, dtype), each on `cores` cores: the defaults, and a 1-thread actor a core."""
    return {
        f"sdeid_1x{cores}threads_float32": (1, "float32"),
        f"sdeid_{cores}x1thread_bfloat16": (cores, "bfloat16"),
    }


def main(model: Path, n_notes: int, repeats: int, cores: int):
    import torch

    from sdeid.parquet_io import read_notes_parquet

    torch.set_num_threads(cores)  # the pipeline and the GEMM rate get the cores sdeid gets
    runs = sdeid_runs(cores)
    WORK.mkdir(parents=True, exist_ok=True)
    notes = write_notes(n_notes)
    texts = [n.text for n in read_notes_parquet(str(notes))]
    model_dir = model / "model" if (model / "model").is_dir() else model
    ceiling = f"tagger_only_{cores}x1thread_bfloat16_no_ray"
    rows = {k: [] for k in (*HF, *runs, ceiling)}
    spans, ray_start, first = {}, [], {k: [] for k in runs}
    config = json.loads((model_dir / "config.json").read_text())
    flops_per_note, gemm = matmul_flops_per_note(model_dir, config, texts), []
    for _ in range(repeats):
        gemm.append(best_gemm_flops(config))
        for name, (bs, dtype) in HF.items():
            rate, spans[name] = hf_pipeline(model_dir, texts, bs, dtype)
            rows[name].append(rate)
        for name, (actors, dtype) in runs.items():
            rate, spans[name], start, first_s = sdeid_annotate(notes, model, dtype, actors, cores)
            rows[name].append(rate)
            ray_start.append(start)
            first[name].append(first_s)
        rate, spans[ceiling] = tagger_ceiling(model_dir, texts, cores)
        rows[ceiling].append(rate)
        print({k: round(v[-1], 2) for k, v in rows.items()}, flush=True)
    med = {k: statistics.median(v) for k, v in rows.items()}
    baseline = max(("hf_pipeline_batch1_float32", "hf_pipeline_batch16_float32"), key=med.get)
    bound = statistics.median(gemm) / flops_per_note  # notes/s with every FLOP at GEMM peak
    result = {
        "model": str(model_dir),
        "notes": len(texts),
        "cores": cores,
        "mean_chars": sum(map(len, texts)) / len(texts),
        "notes_per_s": rows,
        "median_notes_per_s": med,
        "spans_found_last_repeat": spans,
        "sdeid_ray_start_s_median": statistics.median(ray_start),
        "sdeid_first_shard_s": first,
        "baseline": baseline,
        "vs_baseline": {k: med[k] / med[baseline] for k in (*runs, ceiling)},
        "matmul_gflop_per_note": flops_per_note / 1e9,
        "best_bf16_gemm_gflop_s": [g / 1e9 for g in gemm],
        "bound_notes_per_s": bound,
        "bound_vs_baseline": bound / med[baseline],
        "share_of_bound": {k: med[k] / bound for k in (*runs, ceiling)},
        "vs_hf_batch16_bfloat16": {k: med[k] / med["hf_pipeline_batch16_bfloat16"] for k in runs},
    }
    print(json.dumps(result, indent=2))
    RESULTS.write_text(json.dumps(result, indent=2))
    RESULTS.with_suffix(".md").write_text(table(result))


def table(result: dict) -> str:
    base = result["baseline"]
    lines = [
        "# Annotation throughput (`benchmarks/annotate.py`)",
        "",
        f"{result['notes']} MEDDOCAN dev notes ({result['mean_chars']:.0f} characters on average), "
        f"the gold NER model, {result['cores']} CPU cores; notes/s, median of "
        f"{len(result['notes_per_s'][base])} repeats; sdeid joined Ray in a median "
        f"{result['sdeid_ray_start_s_median']:.1f} s before its timed run.",
        "",
        *rate_rows(
            result["notes_per_s"],
            base,
            "notes/s",
            2,
            {"spans found": result["spans_found_last_repeat"]},
        ),
    ]
    bound, share = result["bound_notes_per_s"], result["share_of_bound"]
    lines += [
        "",
        f"Bound on any implementation here: {result['matmul_gflop_per_note']:.1f} GFLOP of matrix "
        f"products per note at the best bfloat16 GEMM rate the {result['cores']} cores reached in "
        f"this run (median {statistics.median(result['best_bf16_gemm_gflop_s']):.0f} GFLOP/s) is "
        f"{bound:.2f} notes/s, {result['bound_vs_baseline']:.2f}x the baseline, with softmax, "
        "GELU, layer norm and tokenising free. Share of it reached: "
        + ", ".join(f"{k} {v:.0%}" for k, v in share.items())
        + ".",
    ]
    lines += [
        "",
        "sdeid's start-up inside the timed run (actor start, model load, first shard written):",
    ]
    for name, secs in result["sdeid_first_shard_s"].items():
        lines.append(
            f"- {name}: first shard written after {statistics.median(secs):.1f} s (median)"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "runs" / "ner-meddocan"))
    ap.add_argument("--notes", type=int, default=250)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cores", type=int, default=os.cpu_count())
    args = ap.parse_args()
    main(Path(args.model), args.notes, args.repeats, args.cores)
