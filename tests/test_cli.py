"""The command line: data stats, dry runs, and clear errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT


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


def test_ner_train_dry_run_prints_resolved_config():
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
    cfg = json.loads(out.stdout)
    assert cfg["epochs"] == 1 and cfg["base_model"].startswith("package:")


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
