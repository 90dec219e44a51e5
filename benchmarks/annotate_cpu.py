"""The annotator's CPU time per note outside the model: what bounds an annotator on a GPU.

    .venv/bin/python benchmarks/annotate_cpu.py --model runs/meddocan-cpu/stages/annotator-*/model
                                                [--baseline COMMIT] [--notes 64] [--repeats 5]

On a GPU, the encoder's forward pass over a note takes a fraction of a millisecond. So what
sets how many notes one annotator actor tags per second is its own Python: tokenizing, cutting
windows, reading the best label of each word, building spans, and building and checking the
shard's table. This measures that path exactly as an annotate run calls it: the actor's callable
(`sdeid.annotate.NerAnnotator`) on batches of 64 notes, then the writer's table step
(`sdeid.annotate_job._annotated_table`). It runs in one process pinned to one core with one
torch thread. The model's forward pass is timed on its own and subtracted.

The notes are MEDDOCAN dev texts (real length, about 3k characters). Two models:
- `--model`: the gold annotator, which finds a realistic number of spans;
- the scale benchmark's tiny random tagger, whose labels are noise: about 500 spans a dev note,
  twenty times as many, so the per-span costs show.

The same measurement runs on `--baseline` (a commit, checked out as a git worktree under
runs/bench-annotate-cpu/) in the same run, alternating with the working tree each repeat, so
the ratio compares code timed on the same cores at the same time. Medians of `--repeats`.

`--stage-notes N` also times the whole annotate stage on N scale notes with the tiny tagger,
on 2 cores, for each tree (benchmarks/scale.py's annotate run, `--stage-repeats` times each):
what the change gives a real run, Ray Data's reading and writing included.
Writes benchmarks/results/annotate_cpu.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "runs" / "bench-annotate-cpu"
RESULTS = ROOT / "benchmarks" / "results" / "annotate_cpu.json"
MEDDOCAN_DEV = ROOT.parent / "shared" / "data" / "meddocan" / "dev"
BATCH = 64  # notes per actor call: AnnotateConfig.batch_size


def measure(model: str, n_notes: int) -> dict:
    """In this process (run pinned by the parent): one warm-up call, then the timed pass."""
    import pyarrow as pa
    import torch

    from sdeid.annotate import NerAnnotator
    from sdeid.annotate_job import _annotated_table
    from sdeid.corpus_io import read_corpus
    from sdeid.parquet_io import notes_to_table
    from sdeid.schema import Note

    torch.set_num_threads(1)
    notes = [Note(d.doc_id, d.text, [], "meddocan-dev") for d in read_corpus(str(MEDDOCAN_DEV))]
    table = notes_to_table(notes[:n_notes])
    table = table.append_column("_shard", pa.array([0] * table.num_rows, pa.int64()))
    actor = NerAnnotator(model, "ner:bench", 256, 64, 1, 0.0, False, "auto")
    forward_s = [0.0]
    model_forward = actor.tagger.model.forward

    def timed_forward(*args, **kwargs):  # the model's own time, to subtract
        t = time.perf_counter()
        out = model_forward(*args, **kwargs)
        forward_s[0] += time.perf_counter() - t
        return out

    actor.tagger.model.forward = timed_forward
    actor(table.slice(0, 4))  # warm-up: first-call allocations, lazy imports
    forward_s[0] = 0.0
    t = time.perf_counter()
    parts = [actor(table.slice(b, BATCH)) for b in range(0, table.num_rows, BATCH)]
    written = _annotated_table(0, pa.concat_tables(parts))
    total = time.perf_counter() - t
    spans = sum(len(s) for s in written["spans"].to_pylist())
    return {"notes": written.num_rows, "spans": spans, "total_s": total, "forward_s": forward_s[0]}


def baseline_tree(commit: str) -> Path:
    tree = WORK / f"baseline-{commit[:12]}"
    if not tree.is_dir():
        WORK.mkdir(parents=True, exist_ok=True)
        # A worktree whose folder was deleted is still registered until pruned.
        subprocess.run(["git", "worktree", "prune"], check=True, cwd=ROOT)
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(tree), commit], check=True, cwd=ROOT
        )
    return tree


def run_in(tree: Path, model: str, n_notes: int) -> dict:
    """One measurement in a fresh process on core 0, importing sdeid from `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree), "TOKENIZERS_PARALLELISM": "false"}
    cmd = ["taskset", "-c", "0", sys.executable, __file__, "--worker", model, str(n_notes)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def stage_in(tree: Path, n_notes: int) -> dict:
    """benchmarks/scale.py's annotate stage on `n_notes` scale notes, importing sdeid from
    `tree`: seconds and the driver's peak."""
    env = {**os.environ, "PYTHONPATH": f"{tree}:{ROOT / 'benchmarks'}"}
    code = (
        "import json, scale; from sdeid.shard_writer import WINDOW_BATCHES; "
        f"r = scale.measure('annotate', {n_notes}, 2, 1, WINDOW_BATCHES); "
        "print(json.dumps({k: r[k] for k in ('seconds', 'driver_peak_mb', 'counts')}))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT
    )
    if run.returncode != 0:
        raise SystemExit(f"annotate stage under {tree} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main(models: dict, baseline: str, n_notes: dict, repeats: int, stage: tuple) -> None:
    trees = {"baseline": baseline_tree(baseline), "this tree": ROOT}
    result = {"baseline": baseline, "repeats": repeats, "models": {}}
    for name, model in models.items():
        runs = {label: [] for label in trees}
        for r in range(repeats):
            for label, tree in trees.items():
                m = run_in(tree, model, n_notes[name])
                runs[label].append(m)
                print(f"[{name} {r + 1}/{repeats}] {label}: {m}", flush=True)
        result["models"][name] = {"notes": n_notes[name], "runs": runs}
    stage_notes, stage_repeats = stage
    if stage_notes:
        runs = {label: [] for label in trees}
        for r in range(stage_repeats):
            for label, tree in trees.items():
                runs[label].append(stage_in(tree, stage_notes))
                print(f"[stage {r + 1}/{stage_repeats}] {label}: {runs[label][-1]}", flush=True)
        result["stage"] = {"notes": stage_notes, "runs": runs}
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    RESULTS.with_suffix(".md").write_text(render(result))
    print(render(result))


def _ms(runs: list, key: str) -> float:
    """Median milliseconds per note of `key` ('outside' is total minus forward)."""
    values = [
        (r["total_s"] - r["forward_s"] if key == "outside" else r[key]) / r["notes"] for r in runs
    ]
    return 1000 * statistics.median(values)


def render(result: dict) -> str:
    lines = [
        "# The annotator's CPU time per note outside the model (`benchmarks/annotate_cpu.py`)",
        "",
        "MEDDOCAN dev notes (real length, about 3k characters). The actor's callable and the "
        "writer's table step, as annotate runs them, in one process on one core with one torch "
        "thread; the model's forward pass is timed apart. Milliseconds per note, medians of "
        f"{result['repeats']} repeats; the baseline is commit {result['baseline'][:12]}, "
        "run alternately with this tree in the same run.",
        "",
        "| model | code | spans a note | total ms | forward ms | outside the model ms | "
        "outside vs baseline | notes/s one actor's Python can feed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in result["models"].items():
        base = _ms(m["runs"]["baseline"], "outside")
        for label, runs in m["runs"].items():
            outside = _ms(runs, "outside")
            spans = statistics.median(r["spans"] / r["notes"] for r in runs)
            lines.append(
                f"| {name} | {label} | {spans:.1f} | {_ms(runs, 'total_s'):.2f} | "
                f"{_ms(runs, 'forward_s'):.2f} | {outside:.2f} | {outside / base:.2f}x | "
                f"{1000 / outside:.0f} |"
            )
    if "stage" in result:
        st = result["stage"]
        per_k = {
            label: statistics.median(1000 * r["seconds"] / st["notes"] for r in runs)
            for label, runs in st["runs"].items()
        }
        lines += [
            "",
            f"The whole annotate stage on {st['notes']:,} scale notes (benchmarks/scale.py's "
            "run: tiny tagger, 2 cores, Ray Data reading, tagging and writing), medians of "
            f"{len(st['runs']['baseline'])} runs each, alternating:",
            "",
            "| code | s per 1,000 notes | runs | vs baseline | driver peak MB |",
            "|---|---|---|---|---|",
        ]
        for label, runs in st["runs"].items():
            each = ", ".join(f"{1000 * r['seconds'] / st['notes']:.2f}" for r in runs)
            peak = max(r["driver_peak_mb"] for r in runs)
            lines.append(
                f"| {label} | {per_k[label]:.2f} | {each} | "
                f"{per_k[label] / per_k['baseline']:.2f}x | {peak:.0f} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        print(json.dumps(measure(sys.argv[2], int(sys.argv[3]))))
        sys.exit(0)
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True, help="the gold annotator's model folder")
    parser.add_argument("--baseline", default="7258457")
    parser.add_argument("--notes", type=int, default=64, help="notes tagged by the gold model")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--stage-notes", type=int, default=0, help="also time the whole stage")
    parser.add_argument("--stage-repeats", type=int, default=2)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from scale import WORK as SCALE_WORK
    from scale import tiny_tagger

    tiny = str(tiny_tagger(SCALE_WORK / "tiny-tagger"))
    main(
        {"gold annotator": str(Path(args.model).resolve()), "tiny random tagger": tiny},
        args.baseline,
        {"gold annotator": args.notes, "tiny random tagger": 250},
        args.repeats,
        (args.stage_notes, args.stage_repeats),
    )
