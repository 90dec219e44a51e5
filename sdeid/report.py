"""The run report: gold vs synthetic NER on the gold test set, and how the synthetic model came to be.

report.md (with gold_vs_synthetic.png and stage_times.png beside it) and report.json, written
from the stage folders' metrics and manifests only, so it can be rebuilt at any time.
"""

from __future__ import annotations

import json
from pathlib import Path

from sdeid.manifest import MANIFEST, STAGE_DONE


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def collect(folders: dict[str, Path]) -> dict:
    """The numbers the report shows, from the stage folders."""
    gold = _json(folders["annotator"] / "metrics.json")
    synthetic = _json(folders["synthetic_ner"] / "metrics.json")
    gen = _json(folders["generate"] / MANIFEST)
    ann = _json(folders["annotate"] / MANIFEST)
    adapt = _json(folders["adapt"] / "metrics.json")
    audit = _json(folders["audit"] / "audit.json")
    walls = {
        name: _json(folder / STAGE_DONE).get("wall_s")
        for name, folder in folders.items()
        if name != "report"
    }
    scores = {}
    for name, m in (("gold", gold), ("synthetic", synthetic)):
        test = m["test"]
        scores[name] = {
            "strict_precision": test["strict"]["precision"],
            "strict_recall": test["strict"]["recall"],
            "strict_f1": test["strict"]["f1"],
            "token_f1": test["token"]["f1"],
            "per_label_f1": {k: v["f1"] for k, v in test["per_label"].items()},
            "per_label_support": {k: v["gold"] for k, v in test["per_label"].items()},
            "best_epoch": m["best_epoch"],
            "train_tokens_per_s": m["train_tokens_per_s"],
        }
    counts = gen.get("counts", {})
    throughput = {
        "adapt_train_tokens_per_s": adapt.get("train_tokens_per_s"),
        "generate_tokens_per_s": counts.get("tokens_per_s"),
        "generate_notes_per_s": (
            counts["notes_generated_this_run"] / counts["generate_s"]
            if counts.get("notes_generated_this_run")
            else None
        ),
        "annotate_notes_per_s": ann.get("counts", {}).get("notes_per_s"),
        "gold_ner_train_tokens_per_s": scores["gold"]["train_tokens_per_s"],
        "synthetic_ner_train_tokens_per_s": scores["synthetic"]["train_tokens_per_s"],
    }
    # How far adaptation got: with a time budget (max_minutes) the same config trains fewer steps
    # on a busier machine, and the generator, with everything after it, is weaker for it.
    adapted = (adapt.get("dev_by_epoch") or [{}])[-1]
    # Folders are named from the stages folder's parent (the run, or refresh's root), so a
    # report copied elsewhere names no path of the machine that made it.
    root = Path(folders["adapt"]).resolve().parent.parent

    def shown(path) -> str | None:
        if path is None:
            return None
        try:
            return str(Path(path).resolve().relative_to(root))
        except ValueError:
            return str(path)

    base = adapt_base(folders["adapt"])
    lineage = {
        "base_model": {**base, "path": shown(base["path"])},
        "generator": {
            "folder": shown(folders["adapt"]),
            "sha256": gen.get("inputs", {}).get("model", {}).get("sha256"),
            "steps": adapted.get("step"),
            "trained_s": adapt.get("trained_s"),
            "dev_perplexity": adapted.get("dev_perplexity"),
        },
        "synthetic_notes": {
            "folder": shown(folders["generate"]),
            "raw": counts.get("notes_raw"),
            "clean": counts.get("notes_clean"),
            "removed": counts.get("removed"),
        },
        "annotator": {
            "folder": shown(folders["annotator"]),
            "sha256": ann.get("inputs", {}).get("model", {}).get("sha256"),
            "test_strict_f1": scores["gold"]["strict_f1"],
        },
        "annotated_notes": {
            "folder": shown(folders["annotate"]),
            "notes": ann.get("counts", {}).get("notes"),
            "spans": ann.get("counts", {}).get("spans"),
        },
        "audited_notes": {
            "folder": shown(folders["audit"]),
            "kept": audit.get("after_filter", {}).get("notes"),
            "flagged": audit.get("before_filter", {}).get("notes_flagged"),
        },
        "synthetic_ner": {"folder": shown(folders["synthetic_ner"])},
    }
    return {
        "scores": scores,
        "ratio_strict_f1": _ratio(scores["synthetic"]["strict_f1"], scores["gold"]["strict_f1"]),
        "ratio_token_f1": _ratio(scores["synthetic"]["token_f1"], scores["gold"]["token_f1"]),
        "wall_s": walls,
        "throughput": throughput,
        "lineage": lineage,
        "audit": audit,
        "generate_s": counts.get("generate_s"),
        "annotate_s": ann.get("timings", {}).get("annotate_s"),
        "notes": counts.get("notes_clean"),
    }


def _ratio(synthetic: float, gold: float) -> float | None:
    return synthetic / gold if gold else None  # a gold model that found nothing has no ratio


def _fmt(x, spec=".3f") -> str:
    return "-" if x is None else format(x, spec)


def adapt_base(adapt_folder: Path) -> dict:
    manifest = _json(adapt_folder / MANIFEST)
    base = manifest.get("inputs", {}).get("base_model", {})
    return {"path": base.get("path"), "sha256": base.get("sha256")}


def cost_per_1k_notes(numbers: dict, usd_per_gpu_hour: float, gpus: int) -> float | None:
    """Accelerator cost of generating and annotating 1,000 notes at this run's rates."""
    secs = (numbers["generate_s"] or 0) + (numbers["annotate_s"] or 0)
    if not numbers["notes"]:
        return None
    return usd_per_gpu_hour * gpus * secs / 3600 / numbers["notes"] * 1000


def write_report(out_dir, folders: dict[str, Path], settings: dict) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    numbers = collect(folders)
    numbers["cost_usd_per_1k_notes"] = cost_per_1k_notes(
        numbers, settings["usd_per_gpu_hour"], settings["gpus"]
    )
    _plots(out_dir, numbers)
    (out_dir / "report.json").write_text(json.dumps(numbers, indent=2, default=str))
    (out_dir / "report.md").write_text(markdown(numbers, settings))
    return numbers


def markdown(n: dict, settings: dict) -> str:
    g, s = n["scores"]["gold"], n["scores"]["synthetic"]
    lines = [
        "# Gold vs synthetic de-identification model",
        "",
        "Both NER models are scored on the gold test set. *Gold* was trained on the private "
        "notes and is also the machine annotator; *synthetic* was trained only on synthetic "
        "notes that the annotator tagged.",
        "",
        "| model | strict P | strict R | strict F1 | token F1 | best epoch |",
        "|---|---|---|---|---|---|",
        f"| gold | {g['strict_precision']:.4f} | {g['strict_recall']:.4f} | {g['strict_f1']:.4f} "
        f"| {g['token_f1']:.4f} | {g['best_epoch']} |",
        f"| synthetic | {s['strict_precision']:.4f} | {s['strict_recall']:.4f} "
        f"| {s['strict_f1']:.4f} | {s['token_f1']:.4f} | {s['best_epoch']} |",
        f"| synthetic / gold | | | {_fmt(n['ratio_strict_f1'])} | {_fmt(n['ratio_token_f1'])} | |",
        "",
        "![gold vs synthetic per label](gold_vs_synthetic.png)",
        "",
        "## Per label (strict F1)",
        "",
        "| label | test spans | gold | synthetic |",
        "|---|---|---|---|",
    ]
    for label, support in sorted(g["per_label_support"].items(), key=lambda kv: -kv[1]):
        lines.append(
            f"| {label} | {support} | {g['per_label_f1'][label]:.3f} "
            f"| {s['per_label_f1'].get(label, 0.0):.3f} |"
        )
    lin = n["lineage"]
    generator, notes = lin["generator"], lin["synthetic_notes"]
    lines += [
        "",
        "## Lineage",
        "",
        f"1. base LM `{lin['base_model']['path']}` (sha256 {str(lin['base_model']['sha256'])[:12]})",
        f"2. generator (adapted) `{generator['folder']}` (sha256 {str(generator['sha256'])[:12]}): "
        f"{_fmt(generator['steps'], 'd')} optimizer steps in {_fmt(generator['trained_s'], '.0f')} s"
        f", dev perplexity {_fmt(generator['dev_perplexity'], '.1f')}",
        f"3. synthetic notes `{notes['folder']}`: {notes['raw']} generated, {notes['clean']} kept "
        f"after clean-up (removed: {notes['removed']})",
        f"4. annotator `{lin['annotator']['folder']}` (sha256 "
        f"{str(lin['annotator']['sha256'])[:12]}, gold test strict F1 "
        f"{lin['annotator']['test_strict_f1']:.4f})",
        f"5. annotated notes `{lin['annotated_notes']['folder']}`: "
        f"{lin['annotated_notes']['notes']} notes, {lin['annotated_notes']['spans']} PHI spans",
        f"6. privacy audit `{lin['audited_notes']['folder']}`: {lin['audited_notes']['flagged']} "
        f"notes flagged and dropped, {lin['audited_notes']['kept']} kept",
        f"7. synthetic NER `{lin['synthetic_ner']['folder']}`",
        "",
        *audit_markdown(n["audit"]),
        "## Time and throughput",
        "",
        "| stage | wall (this run) |",
        "|---|---|",
    ]
    for stage, wall in n["wall_s"].items():
        lines.append(f"| {stage} | {'reused' if wall is None else f'{wall:.0f} s'} |")
    lines += ["", "![stage wall times](stage_times.png)", "", "| rate | value |", "|---|---|"]
    for k, v in n["throughput"].items():
        lines.append(f"| {k} | {'-' if v is None else f'{v:.2f}'} |")
    cost = n["cost_usd_per_1k_notes"]
    lines += [
        "",
        f"Cost estimate: {'-' if cost is None else f'${cost:.4f}'} per 1,000 notes (generate + "
        f"annotate at this run's rates, {settings['gpus']} GPU(s) at "
        f"${settings['usd_per_gpu_hour']}/GPU-hour).",
        "",
    ]
    return "\n".join(lines)


def audit_markdown(audit: dict) -> list[str]:
    if not audit:
        return []
    b, a = audit["before_filter"], audit["after_filter"]
    sizes = list(b["ngram_recall"])
    lines = [
        "## Privacy audit (against the private train split)",
        "",
        "| | notes | " + " | ".join(f"{n}-gram recall" for n in sizes) + " | PHI strings found "
        "| generic | leaked | notes flagged | nearest-note Jaccard median / p95 / max |",
        "|---|---|" + "---|" * (len(sizes) + 5),
    ]
    for name, m in (("before filter", b), ("after filter", a)):
        j = m["nearest_jaccard"]
        jac = " / ".join("-" if j[k] is None else f"{j[k]:.3f}" for k in ("median", "p95", "max"))
        lines.append(
            f"| {name} | {m['notes']} | "
            + " | ".join(f"{m['ngram_recall'][n]:.3f}" for n in sizes)
            + f" | {m['phi_strings_found']} | {m['phi_strings_generic']} "
            f"| {m['phi_strings_leaked']} | {m['notes_flagged']} | {jac} |"
        )
    lines += [
        "",
        f"Leaked PHI strings by label, before the filter: {b['phi_leaked_by_label'] or 'none'}. "
        "A PHI string is leaked when it occurs in a synthetic note and in the private notes but "
        "not in the reference (dev, test, public lists). The paper reports 5-gram recall "
        "0.328 (little adaptation data) to 0.122 (the most).",
        "",
    ]
    return lines + memorization_markdown(audit.get("memorization"), b)


def memorization_markdown(mem: dict | None, before: dict) -> list[str]:
    """Canary exposure and membership inference, when the generator was measured."""
    if not mem:
        return []
    lines = ["## What the generator remembers", ""]
    if "canaries" in mem:
        c = mem["canaries"]
        lines += [
            f"Canaries planted in the adaptation notes only, each secret ranked among "
            f"{c['candidates']} random secrets of its format (exposure = log2 R - log2 rank, "
            f"at most {c['max_possible']:.1f}); {before.get('canary_secrets_found', 0)} of "
            f"{before.get('canary_secrets_planted', 0)} secrets were generated verbatim "
            "(those notes are dropped).",
            "",
            "| copies planted | canaries | exposure median | exposure max "
            "| fitted median | fitted max |",
            "|---|---|---|---|---|---|",
        ]
        for r, e in c["by_repeats"].items():
            lines.append(
                f"| {r} | {e['canaries']} | {e['median']:.2f} | {e['max']:.2f} "
                f"| {_fmt(e.get('fit_median'), '.1f')} | {_fmt(e.get('fit_max'), '.1f')} |"
            )
        lines += [
            "",
            "Fitted: -log2 of the chance that a random candidate is as likely as the secret, "
            "from a normal fit to the candidates' log-likelihoods (reads past log2 R).",
            "",
        ]
    if "membership" in mem:
        m = mem["membership"]
        lines += [
            "Membership inference on the generator's per-note loss (members: the notes adapted "
            "on; non-members: notes it never saw, from dev and test):",
            "",
            "| attack | members | non-members | AUC | TPR at 1 % FPR |",
            "|---|---|---|---|---|",
        ]
        for name, label in (("loss", "loss threshold"), ("calibrated", "calibrated by base")):
            if name in m:
                a = m[name]
                lines.append(
                    f"| {label} | {a['members']} | {a['non_members']} | {_fmt(a['auc'])} "
                    f"| {_fmt(a['tpr_at_1pct_fpr'])} |"
                )
        lines.append("")
    return lines


def _plots(out_dir: Path, n: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g, s = n["scores"]["gold"], n["scores"]["synthetic"]
    labels = sorted(g["per_label_support"], key=lambda k: -g["per_label_support"][k])
    x = range(len(labels))
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.bar([i - 0.2 for i in x], [g["per_label_f1"][k] for k in labels], 0.4, label="gold")
    ax.bar(
        [i + 0.2 for i in x], [s["per_label_f1"].get(k, 0) for k in labels], 0.4, label="synthetic"
    )
    ax.set_xticks(list(x), labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("strict F1 (gold test set)")
    ax.set_title(
        f"gold {g['strict_f1']:.3f} vs synthetic {s['strict_f1']:.3f} strict F1 "
        f"(ratio {_fmt(n['ratio_strict_f1'])})"
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "gold_vs_synthetic.png", dpi=110)
    plt.close(fig)

    walls = {k: v for k, v in n["wall_s"].items() if v is not None}
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.barh(list(walls), [v / 60 for v in walls.values()])
    ax.set_xlabel("minutes (stages run in this run; reused stages not shown)")
    fig.tight_layout()
    fig.savefig(out_dir / "stage_times.png", dpi=110)
    plt.close(fig)
