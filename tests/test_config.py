"""Strict configs: unknown keys, wrong types, impossible values, overrides."""

from __future__ import annotations

import pytest

from sdeid.config import ConfigError, load_config
from sdeid.ner_train import NerTrainConfig, with_label_set

BASE = "train: a\ndev: b\nbase_model: m\n"


def _load(tmp_path, text, overrides=()):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return load_config(NerTrainConfig, path, overrides)


def test_defaults_and_overrides(tmp_path):
    cfg = _load(tmp_path, BASE + "epochs: 2\n", ["learning_rate=3e-4", "test=t"])
    assert cfg.epochs == 2 and cfg.learning_rate == 3e-4 and cfg.test == "t"
    assert cfg.labels is None and with_label_set(cfg).labels[0] == "TERRITORIO"


@pytest.mark.parametrize(
    "text,message",
    [
        (BASE + "epoch: 3\n", r"c.yaml: unknown key\(s\) \['epoch'\]"),
        (BASE + "epochs: three\n", r"c.yaml: epochs: expected int, got str 'three'"),
        (BASE + "epochs: 0\n", r"c.yaml: epochs must be positive, got 0"),
        (BASE + "min_steps: -1\n", r"c.yaml: min_steps must be 0 or more, got -1"),
        (BASE + "train_fraction: 1.5\n", r"train_fraction must be in \(0, 1\]"),
        (BASE + "precision: fp16\n", r"c.yaml: precision must be fp32, bf16 or auto, got 'fp16'"),
        ("train: a\n", r"c.yaml: missing required key\(s\) \['base_model'\]"),
        (BASE + "labels: FECHAS\n", r"labels: expected a list"),
        ("- a\n- b\n", r"expected a mapping of settings"),
        ("train: [a\n", r"not valid YAML"),
    ],
)
def test_bad_configs(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, text)


def test_missing_file_and_bad_override(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(NerTrainConfig, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is not key=value"):
        _load(tmp_path, BASE, ["epochs"])
