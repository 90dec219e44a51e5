"""Corpus formats on MEDDOCAN: each format's read, write and round trip, and one NER model trained
on an i2b2-XML copy of MEDDOCAN made through the coarse label map against the same model trained
on the BRAT original under the same map.

    .venv/bin/python benchmarks/formats.py [--epochs 1] [--repeats 3]

Part 1 writes MEDDOCAN train (500 notes) in every format, reads it back (median seconds of the
repeats), and checks the round trip: the notes read back equal the originals (CoNLL: labels and
surfaces, whitespace collapsed, since CoNLL keeps tokens), and writing what was read gives the
same bytes again. Part 2 runs the real commands:

    sdeid data convert ../shared/data/meddocan/SPLIT RUNS/i2b2/SPLIT --to i2b2 \
        --label-map configs/label_maps/meddocan-coarse.yaml          (train, dev, test)
    sdeid ner train --config configs/ner-meddocan-cpu.yaml --set epochs=1 \
        --set label_map=configs/label_maps/meddocan-coarse.yaml      (the BRAT original)
    sdeid ner train ... --set train=RUNS/i2b2/train --set dev=... --set test=... \
        --set label_map=configs/label_maps/i2b2-2014-coarse.yaml     (the i2b2 copy)

and compares their figures. Writes benchmarks/results/formats.{json,md}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEDDOCAN = ROOT.parent / "shared" / "data" / "meddocan"
WORK = ROOT / "runs" / "bench-formats"
RESULTS = ROOT / "benchmarks" / "results"
COARSE = "configs/label_maps/meddocan-coarse.yaml"
I2B2_MAP = "configs/label_maps/i2b2-2014-coarse.yaml"
TESTS = {
    "brat": "tests/test_brat.py, tests/test_corpus_formats.py::test_every_format_round_trips_the_toy_notes",
    "i2b2": "tests/test_corpus_formats.py::test_i2b2_file_reads_at_the_challenges_offsets_and_round_trips_byte_for_byte",
    "conll": "tests/test_corpus_formats.py::test_conll_iob2_round_trips_byte_for_byte",
    "parquet": "tests/test_parquet_io.py, tests/test_corpus_formats.py::test_meddocan_through_every_format",
    "hf": "tests/test_release.py::test_a_release_carries_the_corpus_in_the_formats_asked_for",
}


def _digest(path: Path) -> str:
    """The bytes of every file under `path`, by relative name (HF's state.json names a random
    fingerprint per save, so it is left out)."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for p in files:
        if p.name == "state.json":
            continue
        h.update(str(p.relative_to(path) if p != path else p.name).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _same(fmt, a, b) -> bool:
    if fmt != "conll":
        return [(n.doc_id, n.text, n.spans) for n in a] == [(n.doc_id, n.text, n.spans) for n in b]

    def surfaces(n):
        return [(s.label, " ".join(n.text[s.start : s.end].split())) for s in n.spans]

    return [surfaces(n) for n in a] == [surfaces(n) for n in b]


def formats_table(repeats: int) -> list[dict]:
    from sdeid.corpus_io import FORMATS, read_corpus, write_corpus

    notes = read_corpus(str(MEDDOCAN / "train"))
    rows = []
    for fmt in FORMATS:
        writes, reads = [], []
        for _ in range(repeats):
            shutil.rmtree(WORK / fmt, ignore_errors=True)
            t0 = time.perf_counter()
            out = write_corpus(notes, WORK / fmt, fmt)
            writes.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            back = read_corpus(str(out))
            reads.append(time.perf_counter() - t0)
        again = write_corpus(back, WORK / f"{fmt}-again", fmt, overwrite=True)
        rows.append(
            {
                "format": fmt,
                "notes": len(back),
                "write_s": statistics.median(writes),
                "read_s": statistics.median(reads),
                "notes_survive": _same(fmt, notes, back),
                "rewrite_byte_identical": _digest(out) == _digest(again),
                "test": TESTS[fmt],
            }
        )
        print(rows[-1], flush=True)
    return rows


# The BRAT cases of issue 22, on one invented note (no private text in the results).
BRAT_TEXT = "Paciente: Ana Gil. Vista en Madrid el 3/5/2018.\n"
BRAT_SPANS = "T1\tNOMBRE_SUJETO_ASISTENCIA 10 17\tAna Gil\nT2\tTERRITORIO 28 34\tMadrid\n"
BRAT_CASES = {
    "an annotator note (`#1 AnnotatorNotes T1 ...`)": "#1\tAnnotatorNotes T1\tcheck this name\n",
    "an attribute (`A1`)": "A1\tNegated T2\n",
    "a relation (`R1`)": "R1\tLives Arg1:T1 Arg2:T2\n",
    "a discontinuous span (`T3 FECHAS 38 39;40 41`)": "T3\tFECHAS 38 39;40 41\t3 5\n",
    "a label the label set does not know (`T3 CIUDAD`)": "T3\tCIUDAD 0 8\tPaciente\n",
}


def brat_cases() -> list[dict]:
    """What `sdeid data stats` (and, for labels, `sdeid data convert --label-map`) now says."""
    rows = []
    for i, (case, line) in enumerate(BRAT_CASES.items()):
        folder = WORK / "brat-cases" / f"case{i}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        (folder / "note.txt").write_text(BRAT_TEXT, encoding="utf-8")
        (folder / "note.ann").write_text(BRAT_SPANS + line, encoding="utf-8")
        commands = [["data", "stats", f"case{i}"]]
        if "discontinuous" in case:
            commands.append(["data", "stats", f"case{i}", "--discontinuous", "refuse"])
        if "label set" in case:
            commands = [["data", "convert", f"case{i}", f"case{i}-out", "--to", "i2b2",
                         "--label-map", "../../../" + COARSE]]  # fmt: skip
        for args in commands:
            run = subprocess.run(
                [str(Path(sys.executable).parent / "sdeid"), *args],
                cwd=folder.parent,
                capture_output=True,
                text=True,
            )
            said = [x for x in run.stderr.splitlines() if x.startswith("sdeid")]
            # No warning or error: what the corpus reads as (the split span's two fragments).
            lines = [" ".join(x.split()) for x in run.stdout.splitlines()[2:] if x.strip()]
            said = said or [" / ".join(lines)]
            rows.append(
                {
                    "case": case,
                    "command": "sdeid " + " ".join(args),
                    "exit": run.returncode,
                    "says": said[-1],
                }  # fmt: skip
            )
            print(rows[-1], flush=True)
    return rows


def _sdeid(*args):
    cmd = [str(Path(sys.executable).parent / "sdeid"), *map(str, args)]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def ner_pair(epochs: int) -> dict:
    i2b2 = WORK / "i2b2"
    for split in ("train", "dev", "test"):
        _sdeid("data", "convert", MEDDOCAN / split, i2b2 / split, "--to", "i2b2",
               "--label-map", COARSE, "--overwrite")  # fmt: skip
    runs = {
        "brat original + meddocan-coarse map": [f"label_map={COARSE}"],
        "i2b2 copy + i2b2-2014-coarse map": [
            f"train={i2b2 / 'train'}",
            f"dev={i2b2 / 'dev'}",
            f"test={i2b2 / 'test'}",
            f"label_map={I2B2_MAP}",
        ],
    }
    figures = {}
    for name, sets in runs.items():
        out = WORK / ("ner-" + name.split()[0])
        shutil.rmtree(out, ignore_errors=True)
        args = ["ner", "train", "--config", "configs/ner-meddocan-cpu.yaml", "--out", out]
        for s in [f"epochs={epochs}", "log_every=1000", *sets]:
            args += ["--set", s]
        _sdeid(*args)
        m = json.loads((out / "metrics.json").read_text())
        figures[name] = {
            "best_dev_f1": m["best_dev_f1"],
            "test_strict_f1": m["test"]["strict"]["f1"],
            "test_token_f1": m["test"]["token"]["f1"],
            "test_per_label_f1": {k: v["f1"] for k, v in m["test"]["per_label"].items()},
            "train_loss": [e.get("train_loss") for e in m["epochs"]],
        }
    a, b = figures.values()
    return {"epochs": epochs, "figures": figures, "identical": a == b}


def write_md(cases, table, ner):
    lines = [
        "# Corpus formats on MEDDOCAN (`benchmarks/formats.py`)",
        "",
        "## The BRAT cases of issue 22 (one invented note; paths relative to the case folders)",
        "",
        "| case | command | exit | says |",
        "|---|---|---|---|",
        *(f"| {c['case']} | `{c['command']}` | {c['exit']} | `{c['says']}` |" for c in cases),
        "",
        "## Read, write and round trip",
        "",
        "MEDDOCAN train (500 notes) written and read back in each format on a 2-core CPU "
        "machine (median seconds); `notes survive` compares the notes read back with the "
        "originals (CoNLL: labels and surfaces, whitespace collapsed), `rewrite byte-identical` "
        "writes what was read and compares the bytes (for hf, all files but `state.json`, which "
        "names a fresh random fingerprint on every save).",
        "",
        "| format | write s | read s | notes survive | rewrite byte-identical | test |",
        "|---|---|---|---|---|---|",
    ]
    for r in table:
        lines.append(
            f"| {r['format']} | {r['write_s']:.2f} | {r['read_s']:.2f} | {r['notes_survive']} | "
            f"{r['rewrite_byte_identical']} | {r['test']} |"
        )
    lines += [
        "",
        f"## NER on an i2b2 copy of MEDDOCAN vs the BRAT original ({ner['epochs']} epoch, "
        "configs/ner-meddocan-cpu.yaml, coarse labels)",
        "",
        "| run | best dev strict F1 | test strict F1 | test token F1 |",
        "|---|---|---|---|",
    ]
    for name, f in ner["figures"].items():
        lines.append(
            f"| {name} | {f['best_dev_f1']:.4f} | {f['test_strict_f1']:.4f} | "
            f"{f['test_token_f1']:.4f} |"
        )
    labels = next(iter(ner["figures"].values()))["test_per_label_f1"]
    lines += ["", "| label | " + " | ".join(ner["figures"]) + " |", "|---|---|---|"]
    for label in labels:
        cells = [f"{f['test_per_label_f1'][label]:.4f}" for f in ner["figures"].values()]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", f"All figures identical: {ner['identical']}.", ""]
    (RESULTS / "formats.md").write_text("\n".join(lines))


def main(epochs: int, repeats: int):
    WORK.mkdir(parents=True, exist_ok=True)
    cases = brat_cases()
    table = formats_table(repeats)
    ner = ner_pair(epochs)
    result = {"brat_cases": cases, "formats": table, "ner": ner}
    (RESULTS / "formats.json").write_text(json.dumps(result, indent=2))
    write_md(cases, table, ner)
    print((RESULTS / "formats.md").read_text())


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    main(**vars(p.parse_args()))
