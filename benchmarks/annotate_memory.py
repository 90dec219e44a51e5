"""Does an annotator actor's memory stay flat over a long run? Its resident size while tagging.

    .venv/bin/python benchmarks/annotate_memory.py [--batches 600] [--repeats 2]

An annotator actor lives for a whole Ray Data run (262,144 notes at the default
window_batches), so a few kilobytes kept per note add up to gigabytes. This calls the actor's
callable (`sdeid.annotate.NerAnnotator`) on consecutive 64-note batches of scale notes with the
scale benchmark's tiny tagger, in one process pinned to 2 cores with 2 torch threads (an actor
of `cpus_per_annotator: 2`), and samples its resident memory every 25 batches.

Two arms, each in a fresh process, alternating:
- `sequential`: this tree, whose actor turns the tokenizer's own thread pool off;
- `parallel`: the same code with TOKENIZERS_PARALLELISM set back to true after the actor is
  built, so each batch is tokenized on the Rust thread pool, as it was before that setting.

Growth is measured over the second half of the batches, after the model's and the allocator's
warm-up, in kilobytes per note: memory that is reused stays level there, memory that is kept
climbs. Medians of `--repeats`. Writes benchmarks/results/annotate_memory.{json,md}.
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

from sdeid.shard_writer import WINDOW_BATCHES

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "annotate_memory.json"
BATCH = 64  # notes per actor call: AnnotateConfig.batch_size
EVERY = 25  # batches between samples


def measure(arm: str, batches: int) -> dict:
    """In this process (pinned by the parent): tag `batches` batches, sampling RSS."""
    import psutil
    from scale import WORK, tiny_tagger
    from scale_notes import write_notes

    from sdeid.annotate import NerAnnotator
    from sdeid.shard_store import ShardStore

    # Shards of 16 whole batches, so that every call gets 64 notes.
    n_notes = batches * BATCH
    store = ShardStore(
        write_notes(WORK / f"notes-{n_notes}-by-1024", n_notes, notes_per_shard=1024)
    )
    model = str(tiny_tagger(WORK / "tiny-tagger"))
    actor = NerAnnotator(model, "tiny", 128, 32, threads=2, min_score=0.0, use_gpu=False)
    if arm == "parallel":
        os.environ["TOKENIZERS_PARALLELISM"] = "true"
    me, samples, n = psutil.Process(), [], 0
    t0 = time.time()
    for index, marker in sorted(store.done().items()):
        table = store.read(index, marker)
        for start in range(0, table.num_rows, BATCH):
            actor(table.slice(start, BATCH))
            n += 1
            if n % EVERY == 0:
                samples.append((n, round(me.memory_info().rss / 2**20, 1)))
    return {"batches": n, "seconds": time.time() - t0, "rss_mb": samples}


def run_arm(arm: str, batches: int) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'benchmarks'}"}
    cmd = ["taskset", "-c", "0,1", sys.executable, __file__, "--worker", arm, str(batches)]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if run.returncode != 0:
        raise SystemExit(f"{arm} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def growth(run: dict) -> float:
    """KB a note the process grew over the second half of its batches."""
    rss = dict(run["rss_mb"])
    half = EVERY * round(run["batches"] / 2 / EVERY)
    return (rss[run["batches"]] - rss[half]) * 1024 / ((run["batches"] - half) * BATCH)


def render(result: dict) -> str:
    lines = [
        "# An annotator actor's memory over a run (`benchmarks/annotate_memory.py`)",
        "",
        f"The actor's callable on {result['batches']} consecutive batches of 64 scale notes (tiny tagger, 2 cores, 2 "
        "torch threads). Resident memory after 50 batches and at the end; growth per note over "
        f"the second half of the batches; medians of {result['repeats']} runs, the arms "
        "alternating.",
        "",
        "| arm | tokenizer | RSS after 50 batches MB | RSS at the end MB | growth KB a note | "
        "KB a note, each run | s per 1,000 notes |",
        "|---|---|---|---|---|---|---|",
    ]
    how = {"sequential": "sequential (this tree)", "parallel": "Rust thread pool (before)"}
    for arm, runs in result["runs"].items():
        warm = statistics.median(dict(r["rss_mb"])[50] for r in runs)
        end = statistics.median(r["rss_mb"][-1][1] for r in runs)
        kb = statistics.median(growth(r) for r in runs)
        each = ", ".join(f"{growth(r):.2f}" for r in runs)
        per_k = statistics.median(1000 * r["seconds"] / (r["batches"] * BATCH) for r in runs)
        lines.append(
            f"| {arm} | {how[arm]} | {warm:.0f} | {end:.0f} | {kb:.2f} | {each} | {per_k:.2f} |"
        )
    per_run = WINDOW_BATCHES * BATCH
    for arm, runs in result["runs"].items():
        kb = statistics.median(growth(r) for r in runs)
        lines.append(
            f"\nAt that rate, an actor of the {arm} arm that tags the {per_run:,} notes of one "
            f"Ray Data run (window_batches {WINDOW_BATCHES}) grows by {kb * per_run / 2**20:.2f} GB."
        )
    return "\n".join(lines) + "\n"


def main():
    if sys.argv[1:2] == ["--worker"]:
        print(json.dumps(measure(sys.argv[2], int(sys.argv[3]))))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=600)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    if args.batches < 4 * EVERY or args.batches % EVERY:
        ap.error(f"--batches must be a multiple of {EVERY}, at least {4 * EVERY}")
    runs = {"sequential": [], "parallel": []}
    for r in range(args.repeats):
        for arm in runs:
            runs[arm].append(run_arm(arm, args.batches))
            print(
                f"[{r + 1}/{args.repeats}] {arm}: {growth(runs[arm][-1]):.2f} KB a note", flush=True
            )
    result = {"batches": args.batches, "repeats": args.repeats, "runs": runs}
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    RESULTS.with_suffix(".md").write_text(render(result))
    print(render(result))


if __name__ == "__main__":
    main()
