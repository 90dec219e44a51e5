"""The command line: data stats, dry runs, and clear errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT, needs_meddocan


def sdeid(*args):
    return subprocess.run(
        [sys.executable, "-m", "sdeid.cli", *args], capture_output=True, text=True, cwd=ROOT
    )


def test_data_stats(toy_brat):
    out = sdeid("data", "stats", str(toy_brat), "--json")
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    assert stats["documents"] == 3 and stats["spans"] == 14
    assert stats["spans_per_label"]["EDAD_SUJETO_ASISTENCIA"] == 3


def test_bad_corpus_exits_2_with_message(tmp_path):
    out = sdeid("data", "stats", str(tmp_path))
    assert out.returncode == 2
    assert "sdeid: error:" in out.stderr and "empty corpus folder" in out.stderr
    assert "Traceback" not in out.stderr


@needs_meddocan
def test_ner_train_dry_run_prints_resolved_config_and_schedule():
    out = sdeid(
        "ner",
        "train",
        "--config",
        "configs/ner-meddocan-cpu.yaml",
        "--out",
        "unused",
        "--set",
        "epochs=1",
        "--dry-run",
    )
    assert out.returncode == 0, out.stderr
    dry = json.loads(out.stdout)
    assert dry["config"]["epochs"] == 1 and dry["config"]["base_model"].startswith("package:")
    plan = dry["plan"]  # MEDDOCAN train: 500 notes, about 5 windows each of 256 subwords
    assert plan["train_notes"] == 500 and 2000 < plan["train_windows"] < 3500
    assert plan["epochs"] == 1 and plan["steps"] == plan["steps_per_epoch"]


def test_unknown_config_key_exits_2(tmp_path):
    out = sdeid(
        "ner",
        "train",
        "--config",
        "configs/ner-meddocan-cpu.yaml",
        "--out",
        "unused",
        "--set",
        "epochz=1",
        "--dry-run",
    )
    assert out.returncode == 2 and "unknown key(s) ['epochz']" in out.stderr
