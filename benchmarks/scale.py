"""How the stages after generation scale with the number of notes, the cores and the nodes.

    .venv/bin/python benchmarks/scale.py [--sizes 10000 100000] [--stages cleanup annotate audit]
                                         [--cpus 2] [--nodes 1] [--repeats 1]
                                         [--window-batches N] [--results PATH]

The notes are scale notes (benchmarks/scale_notes.py): MEDDOCAN train sentences with fresh PHI
values, not generated text; 1 % exact and 1 % near duplicates. Annotation uses a tiny tagger
(a 2-layer, 32-wide BERT token classifier with random weights): it measures the stage's
plumbing (reading, batching, writing, the driver), not the tagger, whose rate on MEDDOCAN is in
benchmarks/results/annotate.md. Its labels are noise, so it tags far more spans than a trained
annotator (about 190 a note against about 20; benchmarks/results/annotate_cpu.md), and the
per-span work weighs more here than in a real run.

Each stage runs in its own process, pinned to `--cpus` cores (taskset; Ray gets 2 logical CPUs
per core, as `sdeid` does), exactly as the job calls it: `clean_shards` (generate's clean-up),
`run_annotate`, `run_audit`, `run_ner_train` (the notes read, checked and cut into windows by
Ray Data tasks at every size, then 50 steps of 32 windows on each of 2 Ray Train workers
fine-tuning the tiny tagger's encoder, with 1 % of the notes held out as dev and tagged). Ray is started before the clock; the time is the stage's own. A
thread samples the resident memory of the driver and of every Ray worker process every 0.2 s;
the table gives the driver's peak and the largest worker peak, and (runs since 2026-12-03)
the largest worker's private memory: its RSS less shared and file-backed pages.

`--window-batches N` sets annotate's Ray Data run length (AnnotateConfig.window_batches, 64 notes
a batch), so that a size this machine can tag in minutes is cut into several runs, as 1M notes
are at the default.

`--nodes 2` runs each stage as a client of a two-node Ray cluster on this machine (a head and a
second node on loopback, started pinned to the same cores, with half the logical CPUs each), the
way a stage runs on `cluster/raycluster.yaml`; the state API then tells on which node each task
that writes a shard ran. Run it alone: the worker peaks are then those of every Ray worker on the
machine. Writes
benchmarks/results/scale.{json,md} (merged with earlier runs by size, stage, cores and nodes).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from sdeid.local_cluster import two_node_cluster
from sdeid.shard_writer import WINDOW_BATCHES

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "runs" / "bench-scale"
RESULTS = ROOT / "benchmarks" / "results" / "scale.json"
MEDDOCAN_TRAIN = ROOT.parent / "shared" / "data" / "meddocan" / "train"


class Sampler:
    """Calls `self.sample(seconds since the start)` every `every` s, in a thread, for the length
    of a `with` block."""

    def __init__(self, every: float):
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        start = time.time()
        while not self._stop.is_set():
            self.sample(time.time() - start)
            time.sleep(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class MemoryWatch(Sampler):
    """Peak RSS of this process and of every Ray worker under it, sampled in a thread, and the
    driver's RSS over time (a point every `timeline_every` s): a peak that grows with the notes
    must be told from one reached early and held."""

    def __init__(self, every: float = 0.2, timeline_every: float = 5.0, anywhere: bool = False):
        import psutil

        super().__init__(every)
        self.me, self.timeline_every = psutil.Process(), timeline_every
        self.anywhere = anywhere  # a cluster's workers are not this driver's children
        self.driver, self.workers, self.private, self.names = 0, {}, {}, {}
        self.timeline: list[tuple[float, float]] = []  # (seconds, driver MB)

    def sample(self, now: float):
        import psutil

        rss = self.me.memory_info().rss
        self.driver = max(self.driver, rss)
        if not self.timeline or now - self.timeline[-1][0] >= self.timeline_every:
            self.timeline.append((round(now, 1), round(rss / 2**20, 1)))
        procs = psutil.process_iter() if self.anywhere else self.me.children(recursive=True)
        for p in procs:
            try:
                name = p.cmdline()[:1]
                if name and name[0].startswith("ray::"):
                    m = p.memory_info()
                    if m.rss > self.workers.get(p.pid, 0):
                        self.workers[p.pid], self.names[p.pid] = m.rss, name[0][:60]
                    # RSS less its file-backed and shared-memory pages: what the process
                    # holds itself. A worker that reads the object store zero-copy has the
                    # store's pages in its RSS; they are Ray's, counted once, not the worker's.
                    private = m.rss - m.shared
                    self.private[p.pid] = max(self.private.get(p.pid, 0), private)
            except psutil.Error:
                pass


def tiny_tagger(folder: Path) -> Path:
    """A random-weight BERT token classifier over MEDDOCAN's BIO labels, built from a config."""
    if (folder / "config.json").is_file():
        return folder
    import torch
    from scale_notes import sentences
    from transformers import BertConfig, BertForTokenClassification

    from sdeid.bio import bio_label_names
    from sdeid.schema import MEDDOCAN_LABELS
    from sdeid.tiny_models import train_wordpiece_tokenizer

    tok = train_wordpiece_tokenizer([s for s, _ in sentences()[:4000]], 1000)
    names = bio_label_names(MEDDOCAN_LABELS)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
        architectures=["BertForTokenClassification"],
    )
    BertForTokenClassification(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


# The task of each stage that writes an output shard, as the state API names it.
WRITERS = {"cleanup": "_filter", "audit": "audit_shard"}


def run_stage(stage: str, notes: Path, out: Path, cpus: int, window_batches: int) -> dict:
    """In this process (pinned by the caller): start Ray, or join the cluster in RAY_ADDRESS,
    then time one stage."""
    import shutil

    import ray

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        ray.init(num_cpus=2 * cpus, include_dashboard=False)
    # Built by measure() before this process started, so only found here: building it imports
    # torch and holds a model, about 450 MB that this process's peak would count against the
    # stage at whichever size ran first.
    tagger = tiny_tagger(WORK / "tiny-tagger") if stage in ("annotate", "ner") else None
    counts: dict = {}
    with MemoryWatch(anywhere=bool(address)) as mem:
        t0 = time.time()
        if stage == "cleanup":
            from sdeid.cleanup import clean_shards
            from sdeid.generate import GenerateConfig
            from sdeid.shard_store import ShardStore

            counts = clean_shards(GenerateConfig(model="-"), ShardStore(notes), out / "clean")
        elif stage == "annotate":
            from sdeid.annotate import AnnotateConfig
            from sdeid.annotate_job import run_annotate

            cfg = AnnotateConfig(
                notes=str(notes),
                model=str(tagger),
                cpus_per_annotator=cpus,
                max_length=128,
                stride=32,
                sample_brat=0,
                window_batches=window_batches,
            )
            counts = run_annotate(cfg, out) | {"window_batches": window_batches}
        elif stage == "audit":
            from sdeid.audit.config import AuditConfig
            from sdeid.audit.job import run_audit

            run_audit(AuditConfig(synthetic=str(notes), private=str(MEDDOCAN_TRAIN)), out)
            counts = json.loads((out / "_manifest.json").read_text())["counts"]
        elif stage == "ner":
            import sdeid.ner_data
            from sdeid.ner_job import run_ner_train
            from sdeid.ner_train import NerTrainConfig

            sdeid.ner_data.LOCAL_NOTES = 0  # Ray Data tasks read and tokenize at every size

            cfg = NerTrainConfig(
                train=str(notes),
                base_model=str(tagger),
                dev_holdout=0.01,
                num_workers=2,
                cpus_per_worker=cpus,
                epochs=1,
                max_steps=50,
                max_length=128,
                stride=32,
                batch_size=32,
                log_every=10**9,
            )
            metrics = run_ner_train(cfg, out)
            keep = ("train_notes", "train_windows", "dev_notes", "prepare_s", "train_wall_s")
            epoch = metrics["epochs"][0]
            counts = {k: metrics[k] for k in keep} | {
                k: epoch[k]
                for k in ("windows_per_worker", "dev_notes_per_worker", "worker_peak_rss_mb")
            }
        seconds = time.time() - t0
    if address and stage in WRITERS:
        counts["shards_written_per_node"] = tasks_per_node(WRITERS[stage])
    largest = max(mem.workers, key=mem.workers.get, default=None)
    return {
        "seconds": seconds,
        "driver_peak_mb": mem.driver / 2**20,
        "worker_peak_mb": max(mem.workers.values(), default=0) / 2**20,
        "worker_private_peak_mb": max(mem.private.values(), default=0) / 2**20,
        "largest_worker": {
            "title": mem.names.get(largest),
            "peak_mb": mem.workers.get(largest, 0) / 2**20,
            "private_peak_mb": mem.private.get(largest, 0) / 2**20,
        },
        "workers_seen": len(mem.workers),
        "driver_timeline_mb": mem.timeline,
        "counts": counts,
    }


def tasks_per_node(name: str) -> dict[str, int]:
    """{"head": n, "second": m}: the finished tasks called `name`, by the node that ran them."""
    import ray
    from ray.util.state import list_tasks

    head = {n["NodeID"] for n in ray.nodes() if "node:__internal_head__" in n["Resources"]}
    time.sleep(3)  # workers report task events to the GCS every second
    tasks = list_tasks(
        filters=[("state", "=", "FINISHED")], limit=10_000, raise_on_missing_output=False
    )
    out: dict[str, int] = {}
    for t in tasks:
        if t.name.rsplit(".", 1)[-1] != name:  # the name may carry its module
            continue
        node = "head" if t.node_id in head else "second"
        out[node] = out.get(node, 0) + 1
    return out


def measure(stage: str, n: int, cpus: int, nodes: int, window_batches: int) -> dict:
    from scale_notes import write_notes

    notes = WORK / f"notes-{n}"
    write_notes(notes, n)
    if stage in ("annotate", "ner"):
        tiny_tagger(WORK / "tiny-tagger")  # here, not in the measured process (run_stage)
    cores = ",".join(str(c) for c in range(cpus))
    cmd = ["taskset", "-c", cores, sys.executable, __file__, "_stage", stage, str(notes)]
    result = WORK / f"result-{stage}-{n}-{cpus}-{nodes}.json"
    cmd += [str(WORK / f"out-{stage}-{n}"), str(cpus), str(result), str(window_batches)]
    result.unlink(missing_ok=True)
    with contextlib.ExitStack() as stack:
        env = None
        if nodes == 2:  # the same 2 logical CPUs a core in all, half on each node
            cluster = stack.enter_context(
                two_node_cluster(cpus_per_node=cpus, object_store_bytes=2 * 10**9, cores=cores)
            )
            env = dict(cluster.env, RAY_ADDRESS=cluster.address)
        run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT / "benchmarks", env=env)
    if run.returncode != 0:
        raise SystemExit(f"{stage} at {n} notes failed:\n{run.stderr[-3000:]}")
    # A file, not stdout: Ray streams the workers' logs to the stage's stdout, after any print.
    return json.loads(result.read_text())


def render(results: list[dict]) -> str:
    lines = [
        "# Stages after generation at scale (`benchmarks/scale.py`)",
        "",
        "Scale notes (MEDDOCAN train sentences with fresh PHI values; not generated text), 1,000",
        "per shard. Time per 1,000 notes is the stage's wall time (Ray started before the",
        "clock) over the notes; peaks are resident memory sampled every 0.2 s. Annotation uses a",
        "tiny random tagger, so it measures the stage's plumbing, not the model.",
        "",
        "| stage | notes | cores | nodes | runs | s per 1,000 notes (median) | driver peak MB | "
        "largest worker peak MB | worker processes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(results, key=_order):
        per_k = statistics.median(r["seconds"]) / r["notes"] * 1000
        lines.append(
            f"| {r['stage']} | {r['notes']:,} | {r['cpus']} | {_nodes(r)} | {len(r['seconds'])} "
            f"| {per_k:.2f} "
            f"| {max(r['driver_peak_mb']):.0f} | {max(r['worker_peak_mb']):.0f} "
            f"| {r['workers_seen']} |"
        )
    timed = [r for r in results if r.get("driver_timeline_mb")]
    if timed:
        lines += [
            "",
            "The driver's resident memory through the run (last run; sampled every 5 s): flat",
            "after the start means the driver holds nothing per note or per shard.",
            "",
            "| stage | notes | cores | nodes | MB at 10 % | 25 % | 50 % | 75 % | end | peak |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in sorted(timed, key=_order):
            tl = r["driver_timeline_mb"]
            at = [_at(tl, f) for f in (0.1, 0.25, 0.5, 0.75, 1.0)]
            lines.append(
                f"| {r['stage']} | {r['notes']:,} | {r['cpus']} | {_nodes(r)} | "
                + " | ".join(f"{mb:.0f}" for mb in at)
                + f" | {max(mb for _, mb in tl):.0f} |"
            )
    private = [r for r in results if "worker_private_peak_mb" in r]
    if private:
        lines += [
            "",
            "Workers' own memory (runs that recorded it): a worker's RSS counts the object",
            "store's shared-memory pages it reads zero-copy and the libraries it maps; less",
            "those, what is left is its own heap. The largest worker is named by its Ray",
            "process title at its peak.",
            "",
            "| stage | notes | cores | nodes | largest worker (by RSS) | its peak RSS MB | "
            "its private peak MB | largest private peak MB (any worker) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in sorted(private, key=_order):
            w = r["largest_worker"]
            lines.append(
                f"| {r['stage']} | {r['notes']:,} | {r['cpus']} | {_nodes(r)} | `{w['title']}` "
                f"| {w['peak_mb']:.0f} | {w['private_peak_mb']:.0f} "
                f"| {max(r['worker_private_peak_mb']):.0f} |"
            )
    spread = [r for r in results if "shards_written_per_node" in r["counts"]]
    if spread:
        lines += [
            "",
            "On two nodes: the tasks that wrote an output shard, by the node they ran on (Ray's",
            "state API, last run).",
            "",
            "| stage | notes | cores | shards written on the head | on the second node |",
            "|---|---|---|---|---|",
        ]
        for r in sorted(spread, key=_order):
            by = r["counts"]["shards_written_per_node"]
            lines.append(
                f"| {r['stage']} | {r['notes']:,} | {r['cpus']} | {by.get('head', 0)} "
                f"| {by.get('second', 0)} |"
            )
    ner = sorted((r for r in results if r["stage"] == "ner"), key=lambda r: r["notes"])
    if ner:
        lines += [
            "",
            "NER (last run of each size): the time to read, check and cut the notes into windows",
            "(Ray Data tasks, before training), the windows each Ray Train worker trained on",
            "(counted in the worker: 50 steps of 32) and the dev notes each tagged.",
            "",
            "| notes | prepare s per 1,000 notes | windows made | windows per worker | "
            "dev notes per worker | Ray Train worker peaks MB |",
            "|---|---|---|---|---|---|",
        ]
        for r in ner:
            c = r["counts"]
            lines.append(
                f"| {r['notes']:,} | {c['prepare_s'] / r['notes'] * 1000:.2f} "
                f"| {c['train_windows']:,} | {c['windows_per_worker']} "
                f"| {c['dev_notes_per_worker']} | {c['worker_peak_rss_mb']} |"
            )
    return "\n".join(lines) + "\n"


def _nodes(r: dict) -> int:
    return r.get("nodes", 1)  # runs recorded before --nodes were on one node


def _order(r: dict) -> tuple:
    return r["stage"], r["cpus"], _nodes(r), r["notes"]


def _at(timeline: list, fraction: float) -> float:
    """The driver's MB at the last sample before `fraction` of the run's time."""
    end = timeline[-1][0]
    return [mb for t, mb in timeline if t <= fraction * end][-1]


def main():
    if sys.argv[1:2] == ["_stage"]:
        stage, notes, out, cpus, result, window = sys.argv[2:8]
        sys.path.insert(0, str(Path(__file__).parent))
        measured = run_stage(stage, Path(notes), Path(out), int(cpus), int(window))
        Path(result).write_text(json.dumps(measured))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000])
    ap.add_argument("--stages", nargs="+", default=["cleanup", "annotate", "audit"])
    ap.add_argument("--cpus", type=int, nargs="+", default=[os.cpu_count() or 1])
    ap.add_argument("--nodes", type=int, default=1, choices=[1, 2])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--window-batches", type=int, default=WINDOW_BATCHES)
    # Elsewhere than the committed table: for a run whose times another job on the same cores
    # would make meaningless, e.g. one made only to read memory.
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args()
    old = json.loads(args.results.read_text()) if args.results.is_file() else []
    results = {(r["stage"], r["notes"], r["cpus"], _nodes(r)): r for r in old}
    nodes = args.nodes
    for n in args.sizes:
        for cpus in args.cpus:
            for stage in args.stages:
                runs = [
                    measure(stage, n, cpus, nodes, args.window_batches) for _ in range(args.repeats)
                ]
                r = {
                    "stage": stage,
                    "notes": n,
                    "cpus": cpus,
                    "nodes": nodes,
                    "seconds": [x["seconds"] for x in runs],
                    "driver_peak_mb": [x["driver_peak_mb"] for x in runs],
                    "worker_peak_mb": [x["worker_peak_mb"] for x in runs],
                    "worker_private_peak_mb": [x["worker_private_peak_mb"] for x in runs],
                    "largest_worker": runs[-1]["largest_worker"],
                    "workers_seen": runs[-1]["workers_seen"],
                    "driver_timeline_mb": runs[-1]["driver_timeline_mb"],
                    "counts": runs[-1]["counts"],
                }
                results[(stage, n, cpus, nodes)] = r
                print(
                    f"{stage} {n} notes on {cpus} cores, {nodes} nodes: {r['seconds']} s, driver "
                    f"{max(r['driver_peak_mb']):.0f} MB, worker {max(r['worker_peak_mb']):.0f} MB",
                    flush=True,
                )
                args.results.write_text(json.dumps(list(results.values()), indent=1))
                args.results.with_suffix(".md").write_text(render(list(results.values())))


if __name__ == "__main__":
    main()
