"""`sdeid ablate`: the pipeline over a grid of settings, as a table and curves like the paper's.

The grid file names a pipeline config and, for each setting to vary, its values:

    base: configs/meddocan-cpu.yaml
    grid:
      annotator.train_fraction: [0.1, 0.25, 0.5, 1.0]
      seed: [0, 1]          # shorthand: the seed of every stage that has one
    fixed:                  # optional: settings every point shares (a cheaper recipe, say)
      annotator.epochs: 2

Every point runs in the same run folder, so a stage the varied settings do not reach is run
once and reused by every point (varying the annotator reuses the generator and its notes).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

from sdeid.config import ConfigError

SEEDED = ("annotator.seed", "adapt.seed", "generate.seed", "synthetic_ner.seed")


@dataclass(frozen=True)
class AblateConfig:
    base: str
    """The pipeline config every point starts from."""
    grid: dict
    """Dotted pipeline setting -> list of values; points are the cartesian product."""
    fixed: dict = field(default_factory=dict)
    """Dotted pipeline setting -> value, applied to every point before the grid's values."""

    def check(self):
        if not self.grid:
            raise ValueError("grid is empty")
        for key, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"grid: {key} needs a non-empty list of values")
        if both := sorted(set(self.grid) & set(self.fixed)):
            raise ValueError(f"{both} are both in grid and in fixed")


def points(grid: dict) -> list[dict]:
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*grid.values())]


def overrides(point: dict, fixed: dict | None = None) -> list[str]:
    out = []
    for key, value in {**(fixed or {}), **point}.items():
        for k in SEEDED if key == "seed" else (key,):
            out.append(f"{k}={json.dumps(value)}")
    return out


def run_ablation(cfg: AblateConfig, out_dir, ray_address=None, dry_run=False, where="") -> list:
    from sdeid.pipeline import load_pipeline_config, run_pipeline

    out_dir = Path(out_dir)
    base = Path(cfg.base)
    if not base.is_absolute() and where:
        # A relative base is looked up beside the grid file first, then from the working folder.
        beside = Path(where).parent / base
        base = beside if beside.is_file() else base
    configs = []
    for point in points(cfg.grid):
        try:
            configs.append((point, load_pipeline_config(base, overrides(point, cfg.fixed))))
        except ConfigError as e:
            raise ConfigError(f"{where}: grid point {point}: {e}") from None
    rows = []
    for point, pipeline_cfg in configs:
        print(f"[ablate] point {point}", flush=True)
        records = run_pipeline(
            pipeline_cfg, out_dir, dry_run=dry_run, ray_address=ray_address, where=str(base)
        )
        report = Path(next(r["folder"] for r in records if r["stage"] == "report"))
        row = {"point": point, "actions": {r["stage"]: r["action"] for r in records}}
        if not dry_run:
            n = json.loads((report / "report.json").read_text())
            row.update(
                gold_strict_f1=n["scores"]["gold"]["strict_f1"],
                gold_token_f1=n["scores"]["gold"]["token_f1"],
                synthetic_strict_f1=n["scores"]["synthetic"]["strict_f1"],
                synthetic_token_f1=n["scores"]["synthetic"]["token_f1"],
                ratio_strict_f1=n["ratio_strict_f1"],
                notes=n["notes"],
                kept=n["lineage"]["audited_notes"]["kept"],
                # relative to the ablation's folder, which holds stages/
                report=str((report / "report.md").relative_to(out_dir.resolve())),
            )
        rows.append(row)
    if not dry_run:
        write_ablation(out_dir, cfg, rows)
    return rows


def write_ablation(out_dir: Path, cfg: AblateConfig, rows: list[dict]) -> None:
    (out_dir / "ablation.json").write_text(json.dumps(rows, indent=2))
    keys = list(cfg.grid)
    lines = [
        "# Ablation",
        "",
        "Gold is the annotator (trained on the private notes); synthetic is trained on the "
        "synthetic notes it tagged. Both scored on the gold test set.",
        "",
        *(
            [f"Every point: {', '.join(f'{k}={v}' for k, v in cfg.fixed.items())}.", ""]
            if cfg.fixed
            else []
        ),
        "| " + " | ".join(keys) + " | synthetic notes kept by the audit | annotator strict F1 "
        "| annotator token F1 | synthetic strict F1 | synthetic token F1 "
        "| synthetic / annotator (strict) |",
        "|" + "---|" * (len(keys) + 6),
    ]
    for r in rows:
        ratio = r["ratio_strict_f1"]
        cells = [str(r["point"][k]) for k in keys] + [
            f"{r['kept']} of {r['notes']}",
            *(f"{r[m]:.4f}" for m in ("gold_strict_f1", "gold_token_f1")),
            *(f"{r[m]:.4f}" for m in ("synthetic_strict_f1", "synthetic_token_f1")),
            "-" if ratio is None else f"{ratio:.3f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for key in keys:
        if all(isinstance(r["point"][key], int | float) for r in rows):
            name = f"ablation_{key.replace('.', '_')}.png"
            _curve(out_dir / name, key, rows)
            lines += [f"![{key}]({name})", ""]
    (out_dir / "ablation.md").write_text("\n".join(lines))


def _curve(path: Path, key: str, rows: list[dict]) -> None:
    """F1 against one grid setting, averaged over the other settings' values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = sorted({r["point"][key] for r in rows})

    def mean(metric, x):
        vals = [r[metric] for r in rows if r["point"][key] == x]
        return sum(vals) / len(vals)

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for metric, label in (
        ("gold_strict_f1", "annotator (gold-trained), strict"),
        ("synthetic_strict_f1", "synthetic-trained, strict"),
        ("gold_token_f1", "annotator, token"),
        ("synthetic_token_f1", "synthetic, token"),
    ):
        style = "-o" if "strict" in metric else "--x"
        ax.plot(xs, [mean(metric, x) for x in xs], style, label=label)
    ax.set_xlabel(key)
    ax.set_ylabel("F1 on the gold test set")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
