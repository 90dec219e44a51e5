"""The Markdown table the benchmark scripts write beside their JSON results."""

from __future__ import annotations

import statistics


def rate_rows(runs: dict, base: str, unit: str, digits: int, extra: dict | None = None) -> list:
    """One table row per run: its median, its repeats and the median's ratio to `base`'s.
    `extra` maps a further column's name to {run: value}."""
    med = {name: statistics.median(values) for name, values in runs.items()}
    extra = extra or {}
    lines = [
        f"| run | {unit} (median) | runs | vs {base} |" + "".join(f" {c} |" for c in extra),
        "|---|---|---|---|" + "---|" * len(extra),
    ]
    for name, values in runs.items():
        cells = [
            name,
            f"{med[name]:.{digits}f}",
            ", ".join(f"{v:.{digits}f}" for v in values),
            f"{med[name] / med[base]:.2f}x",
            *(str(column[name]) for column in extra.values()),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines
