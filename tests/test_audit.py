"""sdeid audit: n-gram recall, verbatim PHI leaks vs generic strings, nearest note, the filter."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from conftest import ROOT, toy_notes

from sdeid.audit import AuditConfig, find_sequences, measure, ngram_recall, phi_strings
from sdeid.schema import Note
from sdeid.shard_store import ShardStore

# Synthetic notes: one copies a private name and date, one uses only generic strings that the
# reference corpus also holds ("Madrid", "Valencia"), one is new text.
SYNTHETIC = [
    ("syn-0", "Nombre: Ana García López. Visto el 12/03/2019 en consulta."),
    ("syn-1", "Mujer de Madrid derivada desde Valencia para estudio."),
    ("syn-2", "Paciente con dolor abdominal de tres días de evolución."),
]
REFERENCE_TEXT = "Vive en Madrid. Trasladado a Valencia."


def test_ngram_recall_counts_occurrences():
    private = ["a b c d", "x y z"]
    assert ngram_recall(["a b c d"], private, 3) == 1.0
    assert ngram_recall(["a b c q"], private, 3) == 0.5  # "a b c" found, "b c q" not
    assert ngram_recall(["A, B. C"], private, 3) == 1.0  # case and punctuation ignored
    assert ngram_recall(["a b"], private, 3) == 0.0  # shorter than n: no n-grams


def test_leaks_are_private_only_strings_generic_ones_are_not():
    private = toy_notes()
    cfg = AuditConfig(synthetic="-", private="-", min_phi_chars=6, max_jaccard=0.9)
    ids, texts = zip(*SYNTHETIC, strict=True)
    summary, rows = measure(cfg, list(ids), list(texts), private, [REFERENCE_TEXT])
    # Found: the name and the date (private only), Madrid and Valencia (also in the reference).
    assert summary["phi_strings_found"] == 4 and summary["phi_strings_generic"] == 2
    assert summary["phi_leaked_by_label"] == {"NOMBRE_SUJETO_ASISTENCIA": 1, "FECHAS": 1}
    assert [r["flagged"] for r in rows] == [True, False, False]
    leak = rows[0]["leaks"][0]
    assert set(leak) == {"offset", "label", "private_doc"}  # where and whose, not what
    assert texts[0][leak["offset"] :].startswith("Ana García López")
    assert all(r["nearest_private_doc"].startswith("toy-") for r in rows)


def test_phi_strings_keep_the_minimum_length():
    phi = phi_strings(toy_notes(), min_chars=8)
    assert ("Madrid",) not in phi and ("Ana", "García", "López") in phi
    (hits,) = find_sequences(["x Ana  García,López y"], phi)
    assert [k for k, _ in hits] == [("Ana", "García", "López")]  # spacing/punctuation ignored


def test_near_copy_of_a_private_note_is_flagged():
    private = toy_notes()
    cfg = AuditConfig(synthetic="-", private="-", max_jaccard=0.5)
    copy = private[1].text.replace("Pedro Ruiz", "Luis Gil")  # a near-verbatim note
    summary, rows = measure(cfg, ["c"], [copy], private, [])
    assert rows[0]["nearest_private_doc"] == private[1].doc_id
    assert rows[0]["nearest_jaccard"] >= 0.5 and rows[0]["flagged"]


@pytest.fixture
def audit_inputs(tmp_path):
    from sdeid.brat import write_brat

    store = ShardStore(tmp_path / "syn" / "shards")
    notes = [Note(i, t, [], source="generator:x") for i, t in SYNTHETIC]
    store.write(0, notes[:2])
    store.write(1, notes[2:])
    private = write_brat(toy_notes(), tmp_path / "private")
    ref = tmp_path / "public.txt"
    ref.write_text("Madrid\nValencia\n")
    return tmp_path / "syn", private, ref


def test_tally_of_similarities_gives_the_sorted_list_figures_in_bounded_memory():
    """The nearest-note figures come from counts per Jaccard estimate (at most num_perm + 1
    keys), merged across shards, and equal those of the sorted list of every note's value."""
    import random

    from sdeid.audit.tally import Tally

    rng = random.Random(0)
    sims = [rng.randrange(129) / 128 for _ in range(1001)]
    shards = [Tally(), Tally(), Tally()]
    for i, sim in enumerate(sims):
        row = {"phi_leaked": 0, "flagged": False, "nearest_jaccard": sim}
        shards[i % 3].add({"ngram_hits": {}, "ngram_total": {}, "found": set(), "row": row})
    total = Tally()
    for t in shards:
        total.merge(t)
    assert len(total.similarities) <= 129
    figures = total.summary(type("Index", (), {"phi": {}, "generic": {}})(), (3,))
    ordered = sorted(sims)
    assert figures["nearest_jaccard"] == {
        "median": ordered[len(ordered) // 2],
        "p95": ordered[int(len(ordered) * 0.95)],
        "max": ordered[-1],
    }
    assert Tally().summary(type("Index", (), {"phi": {}, "generic": {}})(), (3,))[
        "nearest_jaccard"
    ] == {"median": None, "p95": None, "max": None}


def test_audit_command_filters_flagged_notes_and_measures_again(audit_inputs, tmp_path):
    syn, private, ref = audit_inputs
    cfg = tmp_path / "audit.yaml"
    cfg.write_text(
        json.dumps({"synthetic": str(syn), "private": str(private), "reference": [str(ref)]})
    )
    out = tmp_path / "audit"
    run = subprocess.run(
        [sys.executable, "-m", "sdeid.cli", "audit", "--config", str(cfg), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((out / "audit.json").read_text())
    assert result["before_filter"]["phi_strings_leaked"] == 2
    assert result["after_filter"]["phi_strings_leaked"] == 0
    assert result["before_filter"]["notes_flagged"] == 1
    kept = sorted(pq.read_table(out / "shards", columns=["doc_id"])["doc_id"].to_pylist())
    assert kept == ["syn-1", "syn-2"]
    assert sorted(p.name for p in (out / "shards").glob("*.parquet")) == [
        "shard-00000.parquet",
        "shard-00001.parquet",
    ]
    assert "Ana García" not in run.stdout + run.stderr  # no private text in what it prints
    rows = [
        r for f in sorted((out / "audit_notes").glob("*.json")) for r in json.loads(f.read_text())
    ]
    assert [r["doc_id"] for r in rows] == ["syn-0", "syn-1", "syn-2"]
    assert [r["flagged"] for r in rows] == [True, False, False]
    assert "Ana García" not in (out / "audit_notes" / "shard-00000.json").read_text()


def test_audit_tasks_on_ray_give_the_figures_of_one_process(audit_inputs, tmp_path, local_ray):
    from sdeid.audit import run_audit
    from sdeid.corpus_io import read_corpus

    syn, private, ref = audit_inputs
    cfg = AuditConfig(synthetic=str(syn), private=str(private), reference=(str(ref),))
    on_ray = run_audit(cfg, tmp_path / "out")  # Ray is up: one task per shard
    notes, refs = read_corpus(str(private), allow_overlap=True), ["Madrid", "Valencia"]
    ids, texts = zip(*SYNTHETIC, strict=True)
    assert on_ray["before_filter"] == measure(cfg, list(ids), list(texts), notes, refs)[0]
    kept = [(i, t) for i, t in SYNTHETIC if i != "syn-0"]  # the flagged note is left out
    after = measure(cfg, [i for i, _ in kept], [t for _, t in kept], notes, refs)[0]
    assert on_ray["after_filter"] == after
