"""The publish gate and releases: a run's audited synthetic corpus is published only when the
model trained on it is close enough to the gold one and the privacy audit passed.

    RELEASES/<release id>/corpus/     the audited, annotated synthetic notes (Parquet shards)
    RELEASES/<release id>/corpus_hf/  the same notes in another format when asked for
                                      (`--format hf`, or brat, i2b2, conll: corpus_<format>/)
    RELEASES/<release id>/report/     the run's report
    RELEASES/<release id>/release.json  the run, its stage keys, every gate check and its value
    RELEASES/latest -> <release id>     replaced atomically, only after the release is complete

A release is assembled under a temporary name and renamed into place, then `latest` moves; a
failed gate or a crash at any point leaves the previous release and `latest` as they were.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from sdeid.errors import SdeidError


class GateFailed(SdeidError):
    """The run did not pass the gate; the message names each failed check."""


@dataclass(frozen=True)
class GateConfig:
    min_f1_ratio: float = 0.9
    """Synthetic F1 must be at least this share of gold F1 (on the gold test set)."""
    min_f1: float = 0.0
    """Synthetic F1 must also reach this on its own. The run's gold model is its annotator, so a
    weak annotator makes a weak gold model too and the ratio alone can pass (both near 0)."""
    metric: str = "strict_f1"
    """strict_f1 (entity level) or token_f1."""
    max_leaked_phi: int = 0
    """PHI strings found verbatim in the published notes and only in the private notes."""
    max_ngram_recall: float = 0.5
    """Upper bound on the published notes' word n-gram recall against the private notes."""
    ngram_n: int = 5
    min_notes: int = 1
    max_canary_secrets: int = 0
    """Canary secrets the generator wrote verbatim (before the filter dropped those notes);
    checked when canaries were planted."""
    max_exposure: float | None = None
    """Upper bound on the largest canary exposure; checked when set and canaries were planted."""
    max_mia_auc: float | None = None
    """Upper bound on the membership-inference AUC (the calibrated attack where measured, else
    the loss attack); checked when set and membership was measured."""

    def check(self):
        if self.metric not in ("strict_f1", "token_f1"):
            raise ValueError(f"metric must be strict_f1 or token_f1, got {self.metric!r}")
        if not 0 <= self.min_f1_ratio <= 1.5:
            raise ValueError(f"min_f1_ratio must be in [0, 1.5], got {self.min_f1_ratio}")
        if not 0 <= self.min_f1 <= 1:
            raise ValueError(f"min_f1 must be in [0, 1], got {self.min_f1}")


def gate_checks(report: dict, gate: GateConfig) -> list[dict]:
    """Each check: name, value, limit, passed. Reads the run's report.json numbers."""
    gold = report["scores"]["gold"][gate.metric]
    synthetic = report["scores"]["synthetic"][gate.metric]
    after = report["audit"]["after_filter"]
    recall = after["ngram_recall"].get(str(gate.ngram_n))
    checks = [
        ("f1_ratio", synthetic / gold if gold else None, gate.min_f1_ratio, ">="),
        ("f1", synthetic, gate.min_f1, ">="),
        ("leaked_phi_strings", after["phi_strings_leaked"], gate.max_leaked_phi, "<="),
        (f"{gate.ngram_n}gram_recall", recall, gate.max_ngram_recall, "<="),
        ("notes", after["notes"], gate.min_notes, ">="),
        *memorization_checks(report["audit"], gate),
    ]
    out = []
    for name, value, limit, op in checks:
        if value is None:  # not measured (no recall for this n, a ratio over a gold F1 of 0)
            ok = op == ">=" and limit <= 0  # a check turned off passes all the same
        else:
            ok = value >= limit if op == ">=" else value <= limit
        out.append({"check": name, "value": value, "limit": limit, "op": op, "passed": ok})
    return out


def memorization_checks(audit: dict, gate: GateConfig) -> list[tuple]:
    """The canary and membership checks, for the figures the run measured."""
    mem = audit.get("memorization") or {}
    checks = []
    before = audit.get("before_filter", {})
    if before.get("canary_secrets_planted"):
        found = before["canary_secrets_found"]
        checks.append(("canary_secrets_generated", found, gate.max_canary_secrets, "<="))
    if gate.max_exposure is not None and "canaries" in mem:
        checks.append(("canary_exposure", mem["canaries"]["max_exposure"], gate.max_exposure, "<="))
    if gate.max_mia_auc is not None and "membership" in mem:
        attack = mem["membership"].get("calibrated") or mem["membership"]["loss"]
        if attack["auc"] is not None:  # None: no adaptation, so no members
            checks.append(("mia_auc", attack["auc"], gate.max_mia_auc, "<="))
    return checks


def describe_failures(checks: list[dict], metric: str) -> str:
    parts = []
    for c in checks:
        if not c["passed"]:
            name = {"f1_ratio": f"synthetic/gold {metric}", "f1": f"synthetic {metric}"}.get(
                c["check"], c["check"]
            )
            if c["value"] is None:
                value = "undefined (gold F1 is 0)" if c["check"] == "f1_ratio" else "not measured"
            else:
                value = f"{c['value']:.4f}" if isinstance(c["value"], float) else str(c["value"])
            need = ">=" if c["op"] == ">=" else "<="
            parts.append(f"{name} {value} (needs {need} {c['limit']})")
    return "; ".join(parts)


def current(releases: Path) -> str | None:
    link = releases / "latest"
    return os.readlink(link) if link.is_symlink() else None


def publish(run_dir, releases, gate: GateConfig, release_id: str | None = None, formats=()) -> Path:
    """Gate the run in `run_dir`; when it passes, publish it and move `latest` to it. Each of
    `formats` adds the corpus in that format beside the Parquet shards."""
    run_dir, releases = Path(run_dir), Path(releases)
    report_dir = (run_dir / "report").resolve()
    audit_dir = (run_dir / "audit").resolve()
    for needed in (report_dir / "report.json", audit_dir / "shards"):
        if not needed.exists():
            raise SdeidError(f"{run_dir}: no finished run to publish (missing {needed})")
    report = json.loads((report_dir / "report.json").read_text())
    checks = gate_checks(report, gate)
    previous = current(releases)
    if not all(c["passed"] for c in checks):
        raise GateFailed(
            f"{run_dir}: gate failed: {describe_failures(checks, gate.metric)}; "
            f"nothing published, latest stays {previous or '(none)'}"
        )
    release_id = release_id or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    final = releases / release_id
    if final.exists():
        raise SdeidError(f"{final}: a release with this id exists already")
    releases.mkdir(parents=True, exist_ok=True)
    tmp = releases / f".{release_id}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(audit_dir / "shards", tmp / "corpus", copy_function=_link_or_copy)
    shutil.copytree(report_dir, tmp / "report", copy_function=_link_or_copy)
    if formats:
        from sdeid.corpus_io import read_corpus, write_corpus

        notes = read_corpus(str(audit_dir / "shards"), allow_overlap=True, fmt="parquet")
        for fmt in formats:
            if fmt != "parquet":
                write_corpus(notes, tmp / f"corpus_{fmt}", fmt)
    plan = (
        json.loads((run_dir / "plan.json").read_text()) if (run_dir / "plan.json").is_file() else {}
    )
    record = {
        "release": release_id,
        "created_unix": time.time(),
        "run": str(run_dir.resolve()),
        "stages": {s["stage"]: s["key"] for s in plan.get("stages", [])},
        "gate": {"config": gate.__dict__, "checks": checks},
        "previous": previous,
        "notes": report["audit"]["after_filter"]["notes"],
    }
    (tmp / "release.json").write_text(json.dumps(record, indent=2))
    os.rename(tmp, final)
    link_tmp = releases / ".latest.tmp"
    if link_tmp.is_symlink():
        link_tmp.unlink()
    link_tmp.symlink_to(release_id)
    os.replace(link_tmp, releases / "latest")
    return final


def prune(releases, keep: int) -> list[str]:
    """Delete all but the newest `keep` releases (ids sort by time); never the latest."""
    releases = Path(releases)
    latest = current(releases)
    ids = sorted(
        p.name
        for p in releases.iterdir()
        if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")
    )
    doomed = [i for i in ids[: max(0, len(ids) - keep)] if i != latest]
    for i in doomed:
        shutil.rmtree(releases / i)
    return doomed


def _link_or_copy(src, dst):
    # Hard links cost no space on the same filesystem; a release never changes its files.
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
