"""`sdeid ablate`: the pipeline over a grid of settings, as a table and curves like the paper's.

The grid file names a pipeline config and, for each setting to vary, its values:

    base: configs/meddocan-cpu.yaml
    grid:
      annotator.train_fraction: [0.1, 0.25, 0.5, 1.0]
      seed: [0, 1]          # shorthand: the seed of every stage that has one
      annotator.train_fraction+adapt.data_fraction: [0.25, 1.0]   # settings varied together
    fixed:                  # optional: settings every point shares (a cheaper recipe, say)
      annotator.epochs: 2

Every point runs in the same run folder, so a stage the varied settings do not reach is run
once and reused by every point (varying the annotator reuses the generator and its notes).

A grid can be run in parts (`--points 0 1`, then `--points 2 3 4`): the rows already in the
folder's ablation.json are kept for the points not run, when they were made with the same
`fixed` settings, so the parts may run on different days or machines (copy the earlier part's
ablation.json into the folder). Each row names its annotator's sha256, so a table can show
that a fixed annotator was the same model in every part.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

from sdeid.config import ConfigError

SEEDED = ("annotator.seed", "adapt.seed", "generate.seed", "synthetic_ner.seed")
# The paper's MEDDOCAN token F1 (../shared/PAPER.md) for the grids that reproduce its ablations:
# of the synthetic NER model, and of the gold-trained annotator where its share varied too. Its
# largest share is 95 % of train, set beside sdeid's 100 %.
PAPER_TOKEN_F1 = {
    "adapt.data_fraction": {"synthetic": {0.0: 0.295, 0.05: 0.313, 0.25: 0.970, 1.0: 0.973}},
    "annotator.train_fraction+adapt.data_fraction": {
        "annotator": {0.05: 0.931, 0.25: 0.967, 0.5: 0.973, 1.0: 0.978},
        "synthetic": {0.05: 0.309, 0.25: 0.964, 0.5: 0.970, 1.0: 0.973},
    },
}


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
        varied = {k for key in self.grid for k in key.split("+")}
        if both := sorted(varied & set(self.fixed)):
            raise ValueError(f"{both} are both in grid and in fixed")


def points(grid: dict) -> list[dict]:
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*grid.values())]


def overrides(point: dict, fixed: dict | None = None) -> list[str]:
    out = []
    for key, value in {**(fixed or {}), **point}.items():
        for k in SEEDED if key == "seed" else key.split("+"):
            out.append(f"{k}={json.dumps(value)}")
    return out


def run_ablation(
    cfg: AblateConfig, out_dir, ray_address=None, dry_run=False, where="", only=None
) -> list:
    """Run the grid's points (those numbered in `only`, 0-based in grid order, when given),
    writing after each the table of every row: these and the earlier ones kept from
    ablation.json. Returns this run's rows."""
    from sdeid.pipeline import load_pipeline_config, run_pipeline

    out_dir = Path(out_dir)
    grid_points = points(cfg.grid)
    if only is not None and (bad := [i for i in only if not 0 <= i < len(grid_points)]):
        raise ConfigError(
            f"{where}: --points {bad}: the grid has {len(grid_points)} points, "
            f"numbered 0 to {len(grid_points) - 1}"
        )
    base = Path(cfg.base)
    if not base.is_absolute() and where:
        # A relative base is looked up beside the grid file first, then from the working folder.
        beside = Path(where).parent / base
        base = beside if beside.is_file() else base
    configs = []
    for i, point in enumerate(grid_points):
        if only is not None and i not in only:
            continue
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
        rows.append(_row(cfg, out_dir, point, records, dry_run))
        if not dry_run:
            # After every point, not once at the end: a grid runs for hours, and a point that
            # fails (or a session that ends) must not take the finished points' rows with it.
            write_ablation(out_dir, cfg, merged_rows(out_dir, cfg, rows))
    return rows


def _row(cfg: AblateConfig, out_dir: Path, point: dict, records: list, dry_run: bool) -> dict:
    """One point's row of the table, from its run's report."""
    report = Path(next(r["folder"] for r in records if r["stage"] == "report"))
    row = {"point": point, "actions": {r["stage"]: r["action"] for r in records}}
    if dry_run:  # what each point would run: the adaptation's and the NER stages' plans
        return row | {"plans": {r["stage"]: r["plan"] for r in records if "plan" in r}}
    n = json.loads((report / "report.json").read_text())
    return row | dict(
        gold_strict_f1=n["scores"]["gold"]["strict_f1"],
        gold_token_f1=n["scores"]["gold"]["token_f1"],
        synthetic_strict_f1=n["scores"]["synthetic"]["strict_f1"],
        synthetic_token_f1=n["scores"]["synthetic"]["token_f1"],
        ratio_strict_f1=n["ratio_strict_f1"],
        notes=n["notes"],
        kept=n["lineage"]["audited_notes"]["kept"],
        annotator_sha256=n["lineage"]["annotator"]["sha256"],
        fixed=cfg.fixed,
        **privacy_figures(n.get("audit") or {}),
        # relative to the ablation's folder, which holds stages/
        report=str((report / "report.md").relative_to(out_dir.resolve())),
    )


def merged_rows(out_dir: Path, cfg: AblateConfig, new: list[dict]) -> list[dict]:
    """`new` and the rows of ablation.json in `out_dir` for the grid's other points (made with
    the same fixed settings), in grid order."""
    by_point = {}
    earlier = out_dir / "ablation.json"
    if earlier.is_file():
        for row in json.loads(earlier.read_text()):
            if row.get("fixed", {}) == cfg.fixed:
                by_point[_key(row["point"])] = row
            else:
                print(f"[ablate] dropped the earlier row of {row['point']}: other fixed settings")
    by_point.update({_key(r["point"]): r for r in new})
    return [by_point[_key(p)] for p in points(cfg.grid) if _key(p) in by_point]


def _key(point: dict) -> str:
    return json.dumps(point, sort_keys=True)


def privacy_figures(audit: dict) -> dict:
    """What each point cost in privacy: the audit before its filter, and what the generator
    remembers where it was measured (sdeid.memorization)."""
    before = audit.get("before_filter")
    if not before:
        return {}
    mem = audit.get("memorization") or {}
    out = {
        "ngram5_recall": before["ngram_recall"].get("5"),
        "leaked_phi_strings": before["phi_strings_leaked"],
        "notes_dropped": before["notes_flagged"],
    }
    if "canaries" in mem:
        out["exposure_median"] = {r: e["median"] for r, e in mem["canaries"]["by_repeats"].items()}
        out["canary_secrets_generated"] = before.get("canary_secrets_found")
    if "membership" in mem:
        out["mia_auc"] = mem["membership"]["loss"]["auc"]
    return out


def write_ablation(out_dir: Path, cfg: AblateConfig, rows: list[dict]) -> None:
    from sdeid.pipeline import _write_json

    _write_json(out_dir / "ablation.json", rows)  # whole: a run killed mid-write keeps the old rows
    keys = list(cfg.grid)
    paper = PAPER_TOKEN_F1.get(keys[0], {}) if len(keys) == 1 else {}
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
        "| synthetic / annotator (strict) |"
        + "".join(f" paper: {model} token F1 |" for model in paper),
        "|" + "---|" * (len(keys) + 6 + len(paper)),
    ]
    for r in rows:
        ratio = r["ratio_strict_f1"]
        cells = [str(r["point"][k]) for k in keys] + [
            f"{r['kept']} of {r['notes']}",
            *(f"{r[m]:.4f}" for m in ("gold_strict_f1", "gold_token_f1")),
            *(f"{r[m]:.4f}" for m in ("synthetic_strict_f1", "synthetic_token_f1")),
            "-" if ratio is None else f"{ratio:.3f}",
        ]
        cells += [_cell(by_share.get(r["point"][keys[0]])) for by_share in paper.values()]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    missing = [p for p in points(cfg.grid) if _key(p) not in {_key(r["point"]) for r in rows}]
    if missing:
        lines += [f"Not run yet: {', '.join(map(str, missing))}.", ""]
    annotators = sorted({r["annotator_sha256"] for r in rows if r.get("annotator_sha256")})
    if annotators:
        lines += [f"Annotator sha256 (first 12): {', '.join(a[:12] for a in annotators)}.", ""]
    if paper:
        lines += [
            "The paper's figures are for its largest share, 95 % of train, beside 100 % here; "
            "it measured privacy only as 5-gram recall, 0.328 with little adaptation data to "
            "0.122 with the most.",
            "",
        ]
    lines += _privacy_table(keys, rows)
    if any("ngram5_recall" in r for r in rows):
        _privacy_plot(out_dir / "ablation_privacy.png", rows)
        lines += ["![utility against privacy](ablation_privacy.png)", ""]
    for key in keys:
        if all(isinstance(r["point"][key], int | float) for r in rows):
            name = f"ablation_{key.replace('.', '_')}.png"
            _curve(out_dir / name, key, rows, paper)
            lines += [f"![{key}]({name})", ""]
    (out_dir / "ablation.md").write_text("\n".join(lines))


def _curve(path: Path, key: str, rows: list[dict], paper: dict) -> None:
    """F1 against one grid setting, averaged over the other settings' values, with the paper's
    token F1 beside it where it has one (`paper`: model -> share -> F1)."""
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
    for (model, by_share), marker in zip(paper.items(), ("s", "^"), strict=False):
        share = sorted(by_share)
        ax.plot(
            share,
            [by_share[x] for x in share],
            ":" + marker,
            color="grey",
            label=f"paper: {model}, token (its 95 % at 1.0)",
        )
    ax.set_xlabel(key)
    ax.set_ylabel("F1 on the gold test set")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _privacy_table(keys: list, rows: list[dict]) -> list[str]:
    if not any("ngram5_recall" in r for r in rows):
        return []
    repeats = sorted({k for r in rows for k in r.get("exposure_median", {})}, key=int)
    head = ["5-gram recall", "leaked PHI strings", "notes dropped"]
    head += [f"exposure, {k} cop{'y' if k == '1' else 'ies'} (median)" for k in repeats]
    head += ["canary secrets generated", "membership AUC (loss)"]
    lines = [
        "Privacy, before the audit's filter (the generator's figures where it was measured):",
        "",
        "| " + " | ".join(keys + head) + " |",
        "|" + "---|" * (len(keys) + len(head)),
    ]
    for r in rows:
        exp = r.get("exposure_median", {})
        cells = [str(r["point"][k]) for k in keys] + [
            _cell(r.get("ngram5_recall")),
            _cell(r.get("leaked_phi_strings")),
            _cell(r.get("notes_dropped")),
            *(_cell(exp.get(k), ".2f") for k in repeats),
            _cell(r.get("canary_secrets_generated")),
            _cell(r.get("mia_auc")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _cell(x, spec=".3f") -> str:
    if x is None:
        return "-"
    return format(x, spec) if isinstance(x, float) else str(x)


def _privacy_plot(path: Path, rows: list[dict]) -> None:
    """Synthetic token F1 against each privacy figure, one panel per figure, a point per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = [("ngram5_recall", "5-gram recall"), ("leaked_phi_strings", "leaked PHI strings")]
    if any(r.get("exposure_median") for r in rows):
        # The canary seen once: the rare record a release must not expose. The most-repeated
        # canary reaches the ceiling (log2 R) at every adapted point so it cannot tell them apart.
        figures.append(("exposure_once_median", "canary exposure (fewest copies, median)"))
    if any(r.get("mia_auc") is not None for r in rows):
        figures.append(("mia_auc", "membership AUC (loss)"))

    def value(r, name):
        if name == "exposure_once_median":
            exp = r.get("exposure_median") or {}
            return exp[min(exp, key=int)] if exp else None
        return r.get(name)

    fig, axes = plt.subplots(1, len(figures), figsize=(3.2 * len(figures), 3.2), squeeze=False)
    for ax, (name, label) in zip(axes[0], figures, strict=True):
        pts = [(value(r, name), r["synthetic_token_f1"], r["point"]) for r in rows]
        pts = [(x, y, p) for x, y, p in pts if x is not None]
        ax.plot([x for x, _, _ in pts], [y for _, y, _ in pts], "o")
        for x, y, point in pts:  # which point is which: the grid's values beside each dot
            ax.annotate(
                ", ".join(map(str, point.values())),
                (x, y),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
        ax.set_xlabel(label)
        ax.set_ylabel("synthetic token F1")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
