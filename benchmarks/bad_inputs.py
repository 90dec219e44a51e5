"""Every bad corpus input the readers refuse, run through the real CLI, with its message.

    .venv/bin/python benchmarks/bad_inputs.py   # writes benchmarks/results/bad_inputs.md

Each case starts from a small valid BRAT folder (invented notes), breaks one thing, runs
`sdeid data stats` on it, and records the exit code and the first line of stderr.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import toy_notes  # noqa: E402

from sdeid.brat import write_brat  # noqa: E402
from sdeid.parquet_io import write_notes_parquet  # noqa: E402


def _ann(folder, text):
    (folder / "toy-0-1.ann").write_text(text, encoding="utf-8")


CASES = [
    ("offsets past the end of the text", lambda f: _ann(f, "T1\tTERRITORIO 40 500\tValencia\n")),
    (
        "surface string does not match its offsets",
        lambda f: _ann(f, "T1\tTERRITORIO 41 49\tSevilla\n"),
    ),
    (
        "unknown annotation line (a relation)",
        lambda f: _ann(f, "T1\tTERRITORIO 41 49\tValencia\nR1\tRel Arg1:T1 Arg2:T1\n"),
    ),
    ("discontinuous span", lambda f: _ann(f, "T1\tTERRITORIO 41 44;45 49\tVal cia\n")),
    ("start not before end", lambda f: _ann(f, "T1\tTERRITORIO 49 41\t\n")),
    (
        "overlapping spans",
        lambda f: _ann(f, "T1\tTERRITORIO 41 49\tValencia\nT2\tPAIS 44 49\tencia\n"),
    ),
    (
        "bytes that are not UTF-8",
        lambda f: (f / "toy-0-0.txt").write_bytes("Línea uno\nLínea dos".encode("latin-1")),
    ),
    (".txt without its .ann", lambda f: (f / "toy-0-0.ann").unlink()),
    (".ann without its .txt", lambda f: (f / "toy-0-0.txt").unlink()),
    ("empty folder", lambda f: [p.unlink() for p in f.iterdir()]),
    ("Parquet: span past the end (row 1)", "parquet-span"),
    ("Parquet: not a Parquet file", "parquet-garbage"),
]


def main():
    rows = ["| bad input | exit | message |", "|---|---|---|"]
    for name, breaker in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            folder = write_brat(toy_notes(), Path(tmp) / "corpus")
            target = folder
            if breaker == "parquet-span":
                import pyarrow as pa
                import pyarrow.parquet as pq

                path = Path(tmp) / "notes.parquet"
                write_notes_parquet(toy_notes(), str(path))
                recs = pq.read_table(path).to_pylist()
                recs[1]["spans"][0]["end"] = 10_000
                pq.write_table(pa.Table.from_pylist(recs, schema=pq.read_schema(path)), path)
                target = path
            elif breaker == "parquet-garbage":
                target = Path(tmp) / "notes.parquet"
                target.write_bytes(b"PAR1 this is not parquet")
            else:
                breaker(folder)
            run = subprocess.run(
                [sys.executable, "-m", "sdeid.cli", "data", "stats", str(target)],
                capture_output=True,
                text=True,
                cwd=ROOT,
            )
            msg = run.stderr.strip().splitlines()[-1] if run.stderr.strip() else "(none)"
            msg = msg.replace(tmp, "$TMP")
            rows.append(f"| {name} | {run.returncode} | `{msg}` |")
    out = ROOT / "benchmarks" / "results" / "bad_inputs.md"
    out.write_text(
        "# Bad corpus inputs and their errors\n\nMade by `.venv/bin/python "
        "benchmarks/bad_inputs.py` (`sdeid data stats` on each).\n\n" + "\n".join(rows) + "\n"
    )
    print("\n".join(rows))


if __name__ == "__main__":
    main()
