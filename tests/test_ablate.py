"""The ablation grid: its points, the overrides each point runs with, and its table."""

import json

import pytest

from sdeid.ablate import (
    AblateConfig,
    merged_rows,
    overrides,
    points,
    run_ablation,
    write_ablation,
)
from sdeid.config import ConfigError, load_config
from sdeid.pipeline import load_pipeline_config

SMOKE = "configs/smoke.yaml"


def test_points_are_the_cartesian_product_in_grid_order():
    grid = {"annotator.train_fraction": [0.1, 1.0], "seed": [0, 1]}
    assert points(grid) == [
        {"annotator.train_fraction": 0.1, "seed": 0},
        {"annotator.train_fraction": 0.1, "seed": 1},
        {"annotator.train_fraction": 1.0, "seed": 0},
        {"annotator.train_fraction": 1.0, "seed": 1},
    ]


def test_fixed_settings_reach_every_point_and_seed_means_every_stage_seed():
    got = overrides({"seed": 3}, {"annotator.epochs": 2})
    assert got[0] == "annotator.epochs=2"
    assert sorted(got[1:]) == sorted(
        f"{k}=3" for k in ("annotator.seed", "adapt.seed", "generate.seed", "synthetic_ner.seed")
    )
    cfg = load_pipeline_config(
        SMOKE, overrides({"annotator.train_fraction": 0.5}, {"annotator.epochs": 2})
    )
    assert cfg.annotator["epochs"] == 2 and cfg.annotator["train_fraction"] == 0.5


def test_a_setting_both_fixed_and_varied_is_refused(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(
        json.dumps(
            {
                "base": SMOKE,
                "fixed": {"annotator.epochs": 2},
                "grid": {"annotator.epochs": [1, 2]},
            }
        )
    )
    with pytest.raises(ConfigError, match=r"annotator.epochs.*both in grid and in fixed"):
        load_config(AblateConfig, path)


def test_the_table_names_the_fixed_settings(tmp_path):
    cfg = AblateConfig(base=SMOKE, grid={"annotator.train_fraction": [0.5, 1.0]}, fixed={"x.y": 2})
    rows = [
        {
            "point": {"annotator.train_fraction": f},
            "gold_strict_f1": g,
            "gold_token_f1": g,
            "synthetic_strict_f1": s,
            "synthetic_token_f1": s,
            "ratio_strict_f1": s / g,
            "kept": 40,
            "notes": 50,
        }
        for f, g, s in ((0.5, 0.8, 0.6), (1.0, 0.9, 0.8))
    ]
    write_ablation(tmp_path, cfg, rows)
    table = (tmp_path / "ablation.md").read_text()
    assert "Every point: x.y=2." in table
    assert "| 0.5 | 40 of 50 | 0.8000 | 0.8000 | 0.6000 | 0.6000 | 0.750 |" in table
    assert (tmp_path / "ablation_annotator_train_fraction.png").is_file()


def test_settings_varied_together_and_the_privacy_table(tmp_path):
    key = "annotator.train_fraction+adapt.data_fraction"
    assert overrides({key: 0.25}) == ["annotator.train_fraction=0.25", "adapt.data_fraction=0.25"]
    cfg = load_pipeline_config(SMOKE, overrides({key: 0.25}))
    assert cfg.annotator["train_fraction"] == cfg.adapt["data_fraction"] == 0.25
    with pytest.raises(ValueError, match=r"\['adapt.data_fraction'\] are both in grid"):
        AblateConfig(base=SMOKE, grid={key: [0.5]}, fixed={"adapt.data_fraction": 1}).check()

    cfg = AblateConfig(base=SMOKE, grid={key: [0.25, 1.0]})
    rows = [
        {
            "point": {key: f},
            **dict.fromkeys(("gold_strict_f1", "gold_token_f1", "synthetic_strict_f1"), 0.9),
            "synthetic_token_f1": y,
            "ratio_strict_f1": 1.0,
            "kept": 40,
            "notes": 50,
            "ngram5_recall": recall,
            "leaked_phi_strings": 3,
            "notes_dropped": 10,
            "exposure_median": {"1": 0.5, "16": e16},
            "canary_secrets_generated": 0,
            "mia_auc": 0.61,
        }
        for f, y, recall, e16 in ((0.25, 0.7, 0.3, 9.5), (1.0, 0.9, 0.12, 4.25))
    ]
    write_ablation(tmp_path, cfg, rows)
    table = (tmp_path / "ablation.md").read_text()
    # The paper's annotator and synthetic token F1 at the same share, from ../shared/PAPER.md.
    assert (
        "| 0.25 | 40 of 50 | 0.9000 | 0.9000 | 0.9000 | 0.7000 | 1.000 | 0.967 | 0.964 |" in table
    )
    assert "exposure, 1 copy (median) | exposure, 16 copies (median)" in table
    assert f"| {key} | 5-gram recall | leaked PHI strings | notes dropped |" in table
    assert "| 0.25 | 0.300 | 3 | 10 | 0.50 | 9.50 | 0 | 0.610 |" in table
    assert (tmp_path / "ablation_privacy.png").read_bytes()[:4] == b"\x89PNG"


def _row(fraction, f1, fixed):
    return {
        "point": {"adapt.data_fraction": fraction},
        "gold_strict_f1": 0.9,
        "gold_token_f1": 0.95,
        "synthetic_strict_f1": f1,
        "synthetic_token_f1": f1,
        "ratio_strict_f1": f1 / 0.9,
        "kept": 40,
        "notes": 50,
        "annotator_sha256": "ab" * 32,
        "fixed": fixed,
    }


def test_a_grid_run_in_parts_keeps_the_earlier_rows_of_the_same_recipe(tmp_path, capsys):
    fixed = {"annotator.epochs": 2}
    cfg = AblateConfig(base=SMOKE, grid={"adapt.data_fraction": [0.05, 0.25, 0.5]}, fixed=fixed)
    earlier = [_row(0.5, 0.7, fixed), _row(0.05, 0.3, {"annotator.epochs": 3})]
    (tmp_path / "ablation.json").write_text(json.dumps(earlier))
    rows = merged_rows(tmp_path, cfg, [_row(0.25, 0.6, fixed)])
    assert [r["point"]["adapt.data_fraction"] for r in rows] == [0.25, 0.5]
    assert "dropped the earlier row of {'adapt.data_fraction': 0.05}" in capsys.readouterr().out
    write_ablation(tmp_path, cfg, rows)
    table = (tmp_path / "ablation.md").read_text()
    assert "| 0.25 | 40 of 50 | 0.9000 | 0.9500 | 0.6000 | 0.6000 | 0.667 | 0.970 |" in table
    assert "| 0.5 | 40 of 50 | 0.9000 | 0.9500 | 0.7000 | 0.7000 | 0.778 | - |" in table
    assert "Not run yet: {'adapt.data_fraction': 0.05}." in table
    assert "Annotator sha256 (first 12): abababababab." in table
    assert [r["point"] for r in json.loads((tmp_path / "ablation.json").read_text())] == [
        {"adapt.data_fraction": 0.25},
        {"adapt.data_fraction": 0.5},
    ]


def test_points_outside_the_grid_are_refused_before_anything_runs(tmp_path):
    cfg = AblateConfig(base=SMOKE, grid={"adapt.data_fraction": [0.05, 0.25, 0.5]})
    with pytest.raises(
        ConfigError, match=r"--points \[3\]: the grid has 3 points, numbered 0 to 2"
    ):
        run_ablation(cfg, tmp_path / "out", only=[1, 3], where="grid.yaml")
    assert not (tmp_path / "out").exists()


def test_a_point_that_fails_keeps_the_rows_of_the_points_before_it(tmp_path, monkeypatch):
    # The pipeline is replaced by one that writes a report for the first point and fails on the
    # second: what is under test is the grid's bookkeeping, not the stages.
    import sdeid.pipeline

    def pipeline(cfg, out_dir, **kwargs):
        if cfg.adapt["data_fraction"] == 0.5:
            raise RuntimeError("adapt: the worker died")
        report = out_dir / "stages" / "report-1"
        report.mkdir(parents=True)
        scores = {"strict_f1": 0.9, "token_f1": 0.95}
        (report / "report.json").write_text(
            json.dumps(
                {
                    "scores": {"gold": scores, "synthetic": scores},
                    "ratio_strict_f1": 1.0,
                    "notes": 50,
                    "lineage": {"audited_notes": {"kept": 40}, "annotator": {"sha256": "ab"}},
                }
            )
        )
        return [{"stage": "report", "folder": str(report.resolve()), "action": "run"}]

    monkeypatch.setattr(sdeid.pipeline, "run_pipeline", pipeline)
    cfg = AblateConfig(base=SMOKE, grid={"adapt.data_fraction": [0.25, 0.5]})
    with pytest.raises(RuntimeError, match="the worker died"):
        run_ablation(cfg, tmp_path)
    rows = json.loads((tmp_path / "ablation.json").read_text())
    assert [r["point"] for r in rows] == [{"adapt.data_fraction": 0.25}]
    assert rows[0]["report"] == "stages/report-1/report.md"
    table = (tmp_path / "ablation.md").read_text()
    assert "| 0.25 | 40 of 50 |" in table
    assert "Not run yet: {'adapt.data_fraction': 0.5}." in table
    assert not (tmp_path / "ablation.json.tmp").exists()
    assert not (tmp_path / ".ablation.json.tmp").exists()
