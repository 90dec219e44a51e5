"""The publish gate: it publishes a good run atomically, refuses a weak or leaky one by name and
leaves the previous release as the latest; pruning keeps the newest releases."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from conftest import ROOT

from sdeid.release import GateConfig, GateFailed, gate_checks, prune, publish
from sdeid.schema import Note
from sdeid.shard_store import ShardStore

SMOKE = str(ROOT / "configs" / "smoke.yaml")


def _fake_run(folder, gold=0.94, synthetic=0.90, leaked=0, recall5=0.2, notes=3):
    """A finished run's report and audited shards, as `sdeid run` leaves them."""
    audit = folder / "stages" / "audit-x"
    ShardStore(audit / "shards").write(0, [Note(f"n{i}", "texto", []) for i in range(notes)])
    report = folder / "stages" / "report-x"
    report.mkdir(parents=True)
    (report / "report.json").write_text(
        json.dumps(
            {
                "scores": {
                    "gold": {"strict_f1": gold, "token_f1": gold},
                    "synthetic": {"strict_f1": synthetic, "token_f1": synthetic},
                },
                "audit": {
                    "after_filter": {
                        "notes": notes,
                        "phi_strings_leaked": leaked,
                        "ngram_recall": {"5": recall5},
                    }
                },
            }
        )
    )
    (folder / "audit").symlink_to("stages/audit-x")
    (folder / "report").symlink_to("stages/report-x")
    return folder


def _report(run):
    return json.loads((run / "report" / "report.json").read_text())


def test_gate_checks_name_values_and_limits():
    report = {
        "scores": {"gold": {"strict_f1": 0.9}, "synthetic": {"strict_f1": 0.45}},
        "audit": {
            "after_filter": {"notes": 10, "phi_strings_leaked": 2, "ngram_recall": {"5": 0.1}}
        },
    }
    checks = {c["check"]: c for c in gate_checks(report, GateConfig())}
    assert checks["f1_ratio"]["value"] == pytest.approx(0.5) and not checks["f1_ratio"]["passed"]
    assert not checks["leaked_phi_strings"]["passed"] and checks["5gram_recall"]["passed"]


def test_publish_then_refuse_a_weak_run(tmp_path):
    releases = tmp_path / "releases"
    good = _fake_run(tmp_path / "good")
    path = publish(good, releases, GateConfig(), "2026-01")
    assert (releases / "latest").resolve() == path
    assert pq.read_table(path / "corpus").num_rows == 3
    record = json.loads((path / "release.json").read_text())
    assert all(c["passed"] for c in record["gate"]["checks"]) and record["previous"] is None

    weak = _fake_run(tmp_path / "weak", synthetic=0.5)
    with pytest.raises(GateFailed, match=r"synthetic/gold strict_f1 0\.5319 \(needs >= 0\.9\)"):
        publish(weak, releases, GateConfig(), "2026-02")
    assert (releases / "latest").resolve() == path  # the previous release stays
    assert sorted(p.name for p in releases.iterdir()) == ["2026-01", "latest"]

    leaky = _fake_run(tmp_path / "leaky", leaked=4, recall5=0.6)
    with pytest.raises(GateFailed) as e:
        publish(leaky, releases, GateConfig(), "2026-03")
    assert "leaked_phi_strings 4 (needs <= 0)" in str(e.value)
    assert "5gram_recall 0.6000 (needs <= 0.5)" in str(e.value)

    # A weak annotator makes a weak gold model too: the ratio alone can pass, the floor cannot.
    both_weak = _fake_run(tmp_path / "both-weak", gold=0.30, synthetic=0.29)
    with pytest.raises(GateFailed, match=r"synthetic strict_f1 0\.2900 \(needs >= 0\.8\)"):
        publish(both_weak, releases, GateConfig(min_f1=0.8), "2026-04")
    nothing = _fake_run(tmp_path / "nothing", gold=0.0, synthetic=0.0)
    with pytest.raises(GateFailed, match=r"synthetic/gold strict_f1 undefined \(gold F1 is 0\)"):
        publish(nothing, releases, GateConfig(), "2026-05")
    off = {
        c["check"]: c["passed"] for c in gate_checks(_report(nothing), GateConfig(min_f1_ratio=0))
    }
    assert off["f1_ratio"]  # the ratio check turned off passes even when it is undefined
    assert (releases / "latest").resolve() == path


def test_prune_keeps_the_newest_and_never_the_latest(tmp_path):
    releases = tmp_path / "releases"
    for i, rid in enumerate(["r1", "r2", "r3"]):
        publish(_fake_run(tmp_path / f"run{i}"), releases, GateConfig(), rid)
    assert prune(releases, 2) == ["r1"]
    (releases / "latest").unlink()
    (releases / "latest").symlink_to("r2")  # an operator rolled back
    assert prune(releases, 1) == []  # r2 is the latest: kept; r3 is the newest: kept
    assert sorted(p.name for p in releases.iterdir()) == ["latest", "r2", "r3"]


def test_publish_command_exit_codes(tmp_path):
    releases = tmp_path / "releases"

    def cli(run, rid):
        return subprocess.run(
            [sys.executable, "-m", "sdeid.cli", "publish", "--config", SMOKE, "--run", str(run),
             "--releases", str(releases), "--id", rid],
            capture_output=True, text=True, cwd=ROOT,
        )  # fmt: skip

    ok = cli(_fake_run(tmp_path / "good"), "a")
    assert ok.returncode == 0 and "latest -> a" in ok.stdout, ok.stderr[-2000:]
    weak = cli(_fake_run(tmp_path / "weak", synthetic=0.1), "b")
    assert weak.returncode == 3
    assert "gate failed" in weak.stderr and "latest stays a" in weak.stderr
    missing = cli(tmp_path / "nothing", "c")
    assert missing.returncode == 2 and "no finished run to publish" in missing.stderr


def test_a_release_carries_the_corpus_in_the_formats_asked_for(tmp_path):
    from sdeid.corpus_io import read_corpus

    run = _fake_run(tmp_path / "run")
    release = publish(run, tmp_path / "releases", GateConfig(), "2026-06", formats=("hf", "brat"))
    shards = read_corpus(str(release / "corpus"))
    for fmt in ("hf", "brat"):
        notes = read_corpus(str(release / f"corpus_{fmt}"))
        assert [(n.doc_id, n.text, n.spans) for n in notes] == [
            (n.doc_id, n.text, n.spans) for n in shards
        ]
