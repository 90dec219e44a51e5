"""Whose is the annotate driver's slow growth? sdeid's stage against a bare Ray Data pipeline.

    .venv/bin/python benchmarks/driver_memory.py [--notes 100000] [--arms sdeid bare bare+trim]
                                                 [--pace 0.3] [--repeats 1]

benchmarks/results/scale.md shows the annotate driver's resident memory rising about 45 bytes a
note (247 MB at 100k notes, 299 MB at 1M), and a tracemalloc run showed Python's heap and
Arrow's allocator flat: the growth is native. Each arm runs in a fresh process pinned to 2 cores
(Ray started inside it with 4 logical CPUs, as scale.py does) on the same scale notes, and a
thread samples the driver's RSS every second:

- `sdeid`: `run_annotate` with scale.py's tiny tagger, one Ray Data run (the default
  window_batches);
- `bare`: the same shape with no sdeid code: a read task per shard (pyarrow.parquet), one
  pass-through actor on 64-note batches that sleeps `--pace` s a batch (the tiny tagger's pace
  on 2 cores, so both arms run about as long and make the same blocks), one writer actor that
  gathers each shard's rows and writes them, and `iter_rows` in the driver;
- `+trim`: the same, with glibc's `malloc_trim(0)` before each sample. If the growth goes, it
  was memory freed but kept by the allocator (fragmentation); if it stays, something holds it.

Growth is the least-squares slope of the driver's RSS over the second half of the run, in bytes
per note (the rate is steady) and per second. Medians of `--repeats`. Writes
benchmarks/results/driver_memory.{json,md}.
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

from scale import Sampler

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "driver_memory.json"
BATCH = 64  # AnnotateConfig.batch_size


class RssTimeline(Sampler):
    """The process's RSS every `every` s, in a thread; with `trim`, after glibc's malloc_trim."""

    def __init__(self, trim: bool, every: float = 1.0):
        import ctypes

        import psutil

        super().__init__(every)
        self.me, self.samples = psutil.Process(), []
        self.trim = ctypes.CDLL("libc.so.6").malloc_trim if trim else None

    def sample(self, now: float):
        if self.trim:
            self.trim(0)
        self.samples.append((round(now, 1), round(self.me.memory_info().rss / 2**20, 2)))


class PassThrough:
    """The bare arm's 'tagger': a column of empty tag lists, `pace` s a batch."""

    def __init__(self, pace: float):
        self.pace = pace

    def __call__(self, batch):
        import pyarrow as pa

        time.sleep(self.pace)
        return batch.append_column("tags", pa.array([[]] * batch.num_rows, pa.list_(pa.int64())))


class Writer:
    """The bare arm's writer: gathers a shard's rows, writes them, sends one summary row."""

    def __init__(self, out: str, sizes: dict):
        self.out, self.sizes, self.parts = out, sizes, {}

    def __call__(self, batch):
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        done = []
        for index in sorted(set(batch["_shard"].to_pylist())):
            parts = self.parts.setdefault(index, [])
            parts.append(batch.filter(pc.equal(batch["_shard"], index)))
            if sum(t.num_rows for t in parts) < self.sizes[index]:
                continue
            table = pa.concat_tables(self.parts.pop(index))
            pq.write_table(table, f"{self.out}/shard-{index:05d}.parquet")
            done.append({"shard": index, "rows": table.num_rows})
        return pa.Table.from_pylist(
            done, schema=pa.schema([("shard", pa.int64()), ("rows", pa.int64())])
        )


def read_shard(item, files: dict):
    """A read task: one whole input shard, with the `_shard` column the writer groups by."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    index = item["shard"][0].as_py()
    table = pq.read_table(files[index])
    return table.append_column("_shard", pa.array([index] * table.num_rows, pa.int64()))


def run_bare(notes: Path, out: Path, pace: float) -> int:
    import pyarrow.parquet as pq
    import ray
    from ray.data import ActorPoolStrategy

    files = {int(f.stem.split("-")[1]): str(f) for f in sorted(notes.glob("shard-*.parquet"))}
    sizes = {i: pq.ParquetFile(f).metadata.num_rows for i, f in files.items()}
    ds = ray.data.from_items([{"shard": i} for i in sorted(files)], override_num_blocks=len(files))
    ds = ds.map_batches(
        read_shard, fn_args=(files,), batch_format="pyarrow", batch_size=1, num_cpus=0.1
    )
    ds = ds.map_batches(
        PassThrough,
        fn_constructor_kwargs={"pace": pace},
        batch_format="pyarrow",
        batch_size=BATCH,
        compute=ActorPoolStrategy(size=1),
        num_cpus=2,
    )
    ds = ds.map_batches(
        Writer,
        fn_constructor_kwargs={"out": str(out), "sizes": sizes},
        batch_format="pyarrow",
        batch_size=None,
        compute=ActorPoolStrategy(size=1),
        num_cpus=0.1,
    )
    return sum(row["rows"] for row in ds.iter_rows())


def run_sdeid(notes: Path, out: Path) -> int:
    from scale import WORK, tiny_tagger

    from sdeid.annotate import AnnotateConfig
    from sdeid.annotate_job import run_annotate

    cfg = AnnotateConfig(
        notes=str(notes),
        model=str(tiny_tagger(WORK / "tiny-tagger")),
        cpus_per_annotator=2,
        max_length=128,
        stride=32,
        sample_brat=0,
    )
    return run_annotate(cfg, out)["notes"]


def measure(arm: str, n: int, pace: float) -> dict:
    """In this process (pinned by the parent): one arm over `n` scale notes."""
    import shutil

    import ray
    from scale import WORK
    from scale_notes import write_notes

    ray.init(num_cpus=4, include_dashboard=False)
    notes = Path(write_notes(WORK / f"notes-{n}", n))
    out = WORK / f"out-driver-memory-{arm}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    with RssTimeline(trim=arm.endswith("+trim")) as rss:
        t0 = time.time()
        done = run_sdeid(notes, out) if arm.startswith("sdeid") else run_bare(notes, out, pace)
        seconds = time.time() - t0
    if done != n:
        raise SystemExit(f"{arm}: {done} of {n} notes came back")
    return {"seconds": seconds, "rss_mb": rss.samples}


def growth(run: dict, n: int) -> dict:
    """Slope of RSS over the second half of the run: bytes a second and bytes a note."""
    half = [(t, mb) for t, mb in run["rss_mb"] if t >= run["seconds"] / 2]
    slope = statistics.linear_regression([t for t, _ in half], [mb for _, mb in half]).slope
    per_s = slope * 2**20
    return {"bytes_per_s": per_s, "bytes_per_note": per_s * run["seconds"] / n}


def run_arm(arm: str, n: int, pace: float) -> dict:
    import tempfile

    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'benchmarks'}"}
    with tempfile.NamedTemporaryFile(suffix=".json") as result:
        # The result goes through a file: the stage and Ray print to stdout to the last moment.
        cmd = ["taskset", "-c", "0,1", sys.executable, __file__, "--worker", arm, str(n)]
        run = subprocess.run(
            cmd + [str(pace), result.name], env=env, capture_output=True, text=True, cwd=ROOT
        )
        if run.returncode != 0:
            raise SystemExit(f"{arm} failed:\n{run.stderr[-3000:]}")
        return json.loads(Path(result.name).read_text())


def render(result: dict) -> str:
    n = result["notes"]
    lines = [
        "# The annotate driver's memory: sdeid against a bare Ray Data pipeline "
        "(`benchmarks/driver_memory.py`)",
        "",
        f"{n:,} scale notes in {n // 1000} shards, one Ray Data run, 2 cores, Ray with 4 logical "
        f"CPUs. The bare pipeline's actor sleeps {result['pace']} s a {BATCH}-note batch. Growth "
        "is the slope of the driver's RSS over the second half of the run; medians of "
        f"{result['repeats']} run(s). `+trim`: glibc's malloc_trim(0) before each sample.",
        "",
        "| arm | s per 1,000 notes | driver RSS at 10 % MB | at 50 % | end | "
        "growth bytes per note | growth bytes per s |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm, a in result["arms"].items():
        lines.append(
            f"| {arm} | {a['s_per_1k']:.2f} | {a['rss_10']:.1f} | {a['rss_50']:.1f} | "
            f"{a['rss_end']:.1f} | {a['bytes_per_note']:.0f} | {a['bytes_per_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def summarise(runs: list[dict], n: int) -> dict:
    def at(run, fraction):
        return next(mb for t, mb in run["rss_mb"] if t >= fraction * run["seconds"])

    med = statistics.median
    return {
        "s_per_1k": med(r["seconds"] / n * 1000 for r in runs),
        "rss_10": med(at(r, 0.1) for r in runs),
        "rss_50": med(at(r, 0.5) for r in runs),
        "rss_end": med(r["rss_mb"][-1][1] for r in runs),
        "bytes_per_note": med(growth(r, n)["bytes_per_note"] for r in runs),
        "bytes_per_s": med(growth(r, n)["bytes_per_s"] for r in runs),
        "runs": runs,
    }


def main():
    if len(sys.argv) == 6 and sys.argv[1] == "--worker":
        result = measure(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
        Path(sys.argv[5]).write_text(json.dumps(result))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--notes", type=int, default=100_000)
    p.add_argument("--arms", nargs="+", default=["sdeid", "bare", "bare+trim"])
    p.add_argument("--pace", type=float, default=0.3)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--results", type=Path, default=RESULTS)
    args = p.parse_args()
    runs: dict[str, list] = {arm: [] for arm in args.arms}
    for r in range(args.repeats):
        for arm in args.arms:  # arms alternate, so a slow spell of the machine hits them all
            runs[arm].append(run_arm(arm, args.notes, args.pace))
            print(
                f"[driver_memory] {arm} run {r + 1}: {runs[arm][-1]['seconds']:.0f} s", flush=True
            )
    result = {
        "notes": args.notes,
        "pace": args.pace,
        "repeats": args.repeats,
        "arms": {arm: summarise(rs, args.notes) for arm, rs in runs.items()},
    }
    args.results.write_text(json.dumps(result, indent=1) + "\n")
    args.results.with_suffix(".md").write_text(render(result))
    print(render(result))


if __name__ == "__main__":
    main()
