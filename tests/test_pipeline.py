"""sdeid run: the whole chain on a toy corpus, stage reuse by key, --from, --only, --dry-run."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import ROOT, run_ray, toy_notes, two_node_cluster

from sdeid.config import _parse_override
from sdeid.pipeline import STAGES, load_pipeline_config, run_pipeline

SMOKE = str(ROOT / "configs" / "smoke.yaml")


def _sdeid(*args):
    return subprocess.run(
        [sys.executable, "-m", "sdeid.cli", *args], capture_output=True, text=True, cwd=ROOT
    )


@pytest.fixture(scope="module")
def toy_corpus(tmp_path_factory):
    from sdeid.brat import write_brat

    root = tmp_path_factory.mktemp("corpus")
    return {
        "train": write_brat(toy_notes(copies=4), root / "train"),
        "dev": write_brat(toy_notes(), root / "dev"),
        "test": write_brat(toy_notes(copies=2), root / "test"),
    }


def _overrides(toy_corpus, tiny_bert, *more):
    sets = [f"{k}={v}" for k, v in toy_corpus.items()]
    sets += [f"annotator.base_model={tiny_bert}", "annotator.train_fraction=1.0", *more]
    return [a for s in sets for a in ("--set", s)]


def _actions(stdout: str) -> dict:
    rows = [line.split() for line in stdout.splitlines()]
    return {r[0]: r[1] for r in rows if r and r[0] in STAGES}


def _submit_to_two_nodes(out, sets):
    """`sdeid run` as a Ray job (jobs/run.py) on a two-node cluster; the job's output."""
    entry = [sys.executable, "jobs/run.py", "--config", SMOKE, "--out", str(out), *sets]
    with two_node_cluster() as (address, env):
        # The head's job agent starts a little after the head; until then a submission is
        # refused with "No available agent" and nothing is submitted, so retrying is safe.
        deadline = time.time() + 180  # seconds, even on a loaded 2-core machine
        while True:
            job = run_ray(
                "job", "submit", f"--address={address}", "--submission-id=smoke-2n", "--",
                *entry, env=env, timeout=900,
            )  # fmt: skip  # waits for the job and streams its logs
            if "No available agent" not in job.stderr or time.time() > deadline:
                break
            time.sleep(3)
    assert job.returncode == 0, (job.stdout + job.stderr)[-5000:]
    assert "succeeded" in job.stdout.lower()
    # The job's driver joined the two-node cluster instead of starting a Ray of its own.
    assert "Connecting to existing Ray cluster" in job.stdout + job.stderr
    return job


def _check_vllm_generate_stage(gen, tmp_path):
    """The generate stage's shards (Ray Data + vLLM, written by the writer actor), its
    manifest, and its own command rerun on a copy: every shard found done; another plan
    refused. (One engine start serves both this and the whole-run checks.)"""
    import shutil

    shards = sorted(p.name for p in (gen / "shards").glob("*.parquet"))
    assert shards == ["shard-00000.parquet", "shard-00001.parquet"]  # 6 notes, 4 per shard
    rows = pq.read_table(gen / "shards").to_pylist()
    assert all(r["text"].startswith(r["prompt"]) and r["output_tokens"] > 0 for r in rows)
    # The text after the prompt is decoded (by the detokenize stage; vLLM does not decode):
    # a note of one EOS token has none, most have some.
    assert sum(len(r["text"]) > len(r["prompt"]) for r in rows) > len(rows) // 2
    assert all(r["finish_reason"] in ("stop", "length") and r["prompt_tokens"] > 0 for r in rows)
    assert {r["annotator"] for r in rows} == {""} and rows[0]["source"].startswith("generator:")
    manifest = json.loads((gen / "_manifest.json").read_text())
    assert manifest["counts"]["notes_raw"] == 6 and manifest["inputs"]["model"]["sha256"]
    ids = sorted(r["doc_id"] for r in rows)
    assert sorted(pq.read_table(gen / "clean")["doc_id"].to_pylist()) == ids  # min_chars 1

    copy = tmp_path / "generate-copy"
    shutil.copytree(gen, copy)
    cfg = tmp_path / "gen.yaml"
    cfg.write_text(json.dumps(manifest["config"]))
    again = _sdeid("generate", "--config", str(cfg), "--out", str(copy))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 shards done, 0 notes to generate" in again.stdout
    cfg.write_text(json.dumps({**manifest["config"], "samples_per_prompt": 3}))
    clash = _sdeid("generate", "--config", str(cfg), "--out", str(copy))
    assert clash.returncode == 2 and "made with another plan" in clash.stderr


def test_smoke_run_on_two_nodes_then_reuse_rerun_ablate_refresh(toy_corpus, tiny_bert, tmp_path):
    """The whole method once, submitted as a Ray job to a two-node cluster; then, on the local
    Ray, the same command reuses every stage, --from reruns a tail, an ablation reuses what it
    can, and scheduled refreshes gate and publish."""
    out = tmp_path / "run"
    # Canaries planted (3 x 1, 4, 16 copies) and membership measured, at little cost here.
    memorize = ["adapt.canaries=1", "adapt.canary_candidates=64", "adapt.membership=true"]
    sets = _overrides(toy_corpus, tiny_bert, *memorize)
    first = _submit_to_two_nodes(out, sets)
    plan = json.loads((out / "plan.json").read_text())
    assert [s["action"] for s in plan["stages"]] == ["run"] * len(STAGES)
    # Without the embedded Ray's setup hook, Ray Train's cleaner logs this every second.
    assert "Failed to query Ray Train Controller" not in first.stdout + first.stderr

    for stage in STAGES:
        folder = (out / stage).resolve()
        assert folder.parent == out / "stages" and folder.name.startswith(f"{stage}-")
        assert (folder / "_stage.json").is_file()
    # The synthetic model was trained on the annotated synthetic shards, and on nothing gold.
    syn = json.loads((out / "synthetic_ner" / "_manifest.json").read_text())
    assert syn["config"]["train"] == str((out / "audit").resolve() / "shards")
    assert syn["config"]["dev"] is None and "dev" not in syn["inputs"]
    n_annotated = pq.read_table(out / "annotate" / "shards").num_rows
    assert n_annotated == 6  # 3 prompts x 2 samples
    _check_vllm_generate_stage(out / "generate", tmp_path)

    report = (out / "report" / "report.md").read_text()
    assert "| synthetic / gold |" in report and "## Lineage" in report
    assert "## Privacy audit" in report
    numbers = json.loads((out / "report" / "report.json").read_text())
    steps = numbers["lineage"]["generator"]["steps"]
    assert steps > 0 and f"{steps} optimizer steps in " in report
    for model in ("gold", "synthetic"):
        assert 0 <= numbers["scores"][model]["strict_f1"] <= 1
    ratio = numbers["ratio_token_f1"]  # None when the toy gold model finds nothing
    assert (ratio is None or math.isfinite(ratio)) and numbers["notes"] == 6
    assert numbers["wall_s"]["generate"] > 0
    # What the generator remembers reaches the audit and the report; the secrets stay in the
    # adapt folder (checked below: nothing published holds one).
    mem = json.loads((out / "adapt" / "memorization.json").read_text())
    assert set(mem["canaries"]["by_repeats"]) == {"1", "4", "16"}
    assert 0 <= mem["membership"]["loss"]["auc"] <= 1 and "calibrated" not in mem["membership"]
    assert numbers["audit"]["memorization"] == mem
    assert numbers["audit"]["before_filter"]["canary_secrets_planted"] == 3
    assert "## What the generator remembers" in report
    secrets = [c["secret"] for c in json.loads((out / "adapt" / "canaries.json").read_text())]
    for png in ("gold_vs_synthetic.png", "stage_times.png"):
        assert (out / "report" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    again = _sdeid("run", "--config", SMOKE, "--out", str(out), *sets)
    assert again.returncode == 0, again.stderr[-4000:]
    assert _actions(again.stdout) == {s: "reuse" for s in STAGES}

    # --from reruns the tail and keeps the old output (the report here: a NER training costs
    # tens of seconds, and the ablation below reruns one).
    old_report = (out / "report").resolve()
    rerun = _sdeid("run", "--config", SMOKE, "--out", str(out), *sets, "--from", "report")
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    acts = _actions(rerun.stdout)
    assert [s for s in STAGES if acts[s] == "reuse"] == list(STAGES[:-1])
    assert [s for s in STAGES if acts[s] == "rerun"] == ["report"]
    kept = list(old_report.parent.glob(f"{old_report.name}.prev-*"))
    assert len(kept) == 1 and (kept[0] / "report.json").is_file()  # the old output is kept

    # A dry run plans the NER stages' schedules that ran: windows, and epochs.
    planned = {
        r["stage"]: r
        for r in run_pipeline(load_pipeline_config(SMOKE, sets[1::2]), out, dry_run=True)
    }
    for stage in ("annotator", "synthetic_ner"):
        ran = json.loads((out / stage / "metrics.json").read_text())
        want = (ran["train_windows"], len(ran["epochs"]))
        assert (planned[stage]["plan"]["train_windows"], planned[stage]["plan"]["epochs"]) == want

    # A changed generate setting plans new folders from generate on; upstream stays reused.
    dry = _sdeid(
        "run", "--config", SMOKE, "--out", str(out), *sets, "--set",
        "generate.samples_per_prompt=3", "--dry-run",
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr[-4000:]
    plan = {r["stage"]: r for r in json.loads(dry.stdout)}
    assert [s for s in STAGES if plan[s]["action"] == "reuse"] == ["base_lm", "annotator", "adapt"]
    assert plan["generate"]["config"]["samples_per_prompt"] == 3
    assert plan["generate"]["folder"] != str((out / "generate").resolve())
    assert not Path(plan["generate"]["folder"]).exists()  # dry: nothing ran

    # An ablation over the synthetic model's confidence threshold, in the same run folder:
    # everything before the synthetic model is reused, the default point (0.0) is reused whole.
    # (The paper's grids resolve in tests/test_configs.py; one point reruns the annotator.)
    grid = tmp_path / "grid.yaml"
    fixed = {k: [v] for k, v in (_parse_override(x, "--set") for x in sets[1::2])}
    fixed["synthetic_ner.min_confidence"] = [0.5, 0.0]
    grid.write_text(json.dumps({"base": SMOKE, "grid": fixed}))
    ablate = _sdeid("ablate", "--config", str(grid), "--out", str(out))
    assert ablate.returncode == 0, ablate.stderr[-4000:]
    rows = json.loads((out / "ablation.json").read_text())
    assert [r["point"]["synthetic_ner.min_confidence"] for r in rows] == [0.5, 0.0]
    assert [s for s in STAGES if rows[0]["actions"][s] == "run"] == ["synthetic_ner", "report"]
    assert set(rows[1]["actions"].values()) == {"reuse"}
    assert rows[0]["report"].startswith("stages/report-")  # named from the ablation folder
    assert "| 0.5 |" in (out / "ablation.md").read_text()
    assert (out / "ablation_synthetic_ner_min_confidence.png").is_file()

    # Scheduled refreshes sharing the run's stages: all reused. A gate the run cannot pass
    # (at least a million notes) refuses it by name and publishes nothing; with the toy
    # models' F1 check off, the next two publish, `latest` moves, --keep 1 prunes the first.
    refresh = ["refresh", "--config", SMOKE, "--root", str(out), "--keep", "1", *sets]
    ok = ["--set", "gate.min_f1_ratio=0", "--set", "gate.max_ngram_recall=1"]
    weak = _sdeid(*refresh, *ok, "--set", "gate.min_notes=1000000", "--id", "r1")
    assert weak.returncode == 3, weak.stderr[-3000:]
    assert "gate failed: notes 6 (needs >= 1000000)" in weak.stderr
    assert "latest stays (none)" in weak.stderr and not (out / "releases" / "latest").exists()
    for rid in ("r2", "r3"):
        run = _sdeid(*refresh, *ok, "--id", rid)
        assert run.returncode == 0, run.stderr[-3000:]
        assert _actions(run.stdout) == {s: "reuse" for s in STAGES}
    releases = out / "releases"
    assert sorted(p.name for p in releases.iterdir()) == ["latest", "r3"]  # r2 pruned
    assert (releases / "latest").resolve() == releases / "r3"
    corpus = pq.read_table(releases / "latest" / "corpus")
    release = json.loads((releases / "r3" / "release.json").read_text())
    assert corpus.num_rows == release["notes"]
    checks = {c["check"]: c for c in release["gate"]["checks"]}
    assert checks["canary_secrets_generated"]["passed"]
    published = [p for p in (releases / "r3").rglob("*") if p.is_file()]
    trained_on = list((out / "audit" / "shards").glob("*.parquet"))  # the synthetic NER's notes
    for path in published + trained_on:
        # Parquet pages may be compressed: look in the rows, not the bytes.
        text = str(pq.read_table(path).to_pylist()) if path.suffix == ".parquet" else None
        text = text or path.read_bytes().decode("utf-8", "replace")
        assert not any(s in text for s in secrets), path


def test_only_needs_finished_upstream(toy_corpus, tiny_bert, tmp_path):
    out = tmp_path / "run"
    sets = _overrides(toy_corpus, tiny_bert)
    run = _sdeid("run", "--config", SMOKE, "--out", str(out), *sets, "--only", "annotate")
    assert run.returncode == 2
    assert "--only annotate needs the finished upstream stage generate" in run.stderr
    assert not (out / "stages").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--set", "annotator.bogus=1"], "annotator: unknown key(s) ['bogus']"),
        (["--set", "annotator.train=x"], "annotator: ['train'] are set by the pipeline"),
        (["--set", "generate.top_p=2"], "generate: top_p must be in (0, 1]"),
        (["--from", "nonsense"], "--from 'nonsense': not a stage"),
        (["--set", "test=/nonexistent/test"], "/nonexistent/test: input not found"),
        # The adaptation's plan is checked before any stage runs (the annotator is 25 min).
        (["--set", "adapt.gpu_memory_gib=0.5"], "adapt: needs 1.51 GiB per GPU, more than"),
        (["--set", "generate.use_adapter=true"], "generate: use_adapter needs adapt.method lora"),
        (
            ["--set", f"adapt.base_model={ROOT / 'configs/models/flor-6.3b'}"]
            + ["--set", "adapt.method=lora", "--set", "generate.use_adapter=true"],
            "generate: generator "
            + str(ROOT / "configs/models/flor-6.3b")
            + ": vLLM serves no LoRA adapters for BloomForCausalLM; set use_adapter: false",
        ),
    ],
)
def test_config_errors_name_section_and_key(toy_corpus, tiny_bert, tmp_path, extra, message):
    sets = _overrides(toy_corpus, tiny_bert)
    run = _sdeid("run", "--config", SMOKE, "--out", str(tmp_path / "r"), *sets, *extra)
    assert run.returncode == 2 and message in run.stderr, run.stderr[-2000:]
    assert not (tmp_path / "r").exists()


def test_dry_run_keys_follow_content_not_location(toy_corpus, tiny_bert, tmp_path):
    sets = _overrides(toy_corpus, tiny_bert)[1::2]  # the KEY=VALUE parts
    cfg = load_pipeline_config(SMOKE, sets)
    a = run_pipeline(cfg, tmp_path / "a", dry_run=True)
    b = run_pipeline(cfg, tmp_path / "b", dry_run=True)
    assert [r["key"] for r in a] == [r["key"] for r in b]  # same inputs, same keys anywhere
    changed = run_pipeline(
        load_pipeline_config(SMOKE, [*sets, "adapt.learning_rate=0.002"]),
        tmp_path / "a",
        dry_run=True,
    )
    same = [x["stage"] for x, y in zip(a, changed, strict=True) if x["key"] == y["key"]]
    assert same == ["base_lm", "annotator"]
    plan = next(r for r in a if r["stage"] == "adapt")["plan"]  # from the preset, before base_lm
    assert plan["model"]["architecture"] == "LlamaForCausalLM" and plan["fits"]
    assert plan["schedule"]["tokens_estimated"]  # the tokenizer is built by base_lm
    assert not (tmp_path / "a").exists()


def test_a_label_map_reaches_both_ner_stages_and_their_keys(toy_corpus, tiny_bert, tmp_path):
    sets = _overrides(toy_corpus, tiny_bert)[1::2]
    label_map = tmp_path / "map.yaml"
    label_map.write_text((ROOT / "configs/label_maps/meddocan-coarse.yaml").read_text())
    with_map = [*sets, f"annotator.label_map={label_map}"]
    plain = run_pipeline(load_pipeline_config(SMOKE, sets), tmp_path / "a", dry_run=True)
    mapped = run_pipeline(load_pipeline_config(SMOKE, with_map), tmp_path / "a", dry_run=True)
    changed = [x["stage"] for x, y in zip(plain, mapped, strict=True) if x["key"] != y["key"]]
    assert changed == ["annotator", "annotate", "audit", "synthetic_ner", "report"]
    for record in mapped:
        if record["stage"] in ("annotator", "synthetic_ner"):
            assert record["config"]["label_map"] == str(label_map)
    label_map.write_text(label_map.read_text().replace("PAIS: LOCATION", "PAIS: drop"))
    edited = run_pipeline(load_pipeline_config(SMOKE, with_map), tmp_path / "a", dry_run=True)
    assert edited[1]["key"] != mapped[1]["key"]  # the key follows the map's content
