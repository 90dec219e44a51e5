"""sdeid: synthetic clinical notes for training de-identification models.

Subcommands import their heavy libraries only when they run, so
`sdeid --help` and `import sdeid` stay light."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def _resolved_config(cls, args):
    """Load the stage config; with --dry-run print it and return None."""
    from sdeid.config import config_to_dict, load_config

    cfg = load_config(cls, args.config, args.set)
    if args.dry_run:
        print(json.dumps(config_to_dict(cfg), indent=2))
        return None
    return cfg


def _add_config_args(p):
    p.add_argument("--config", required=True, help="YAML with the stage's config fields")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field (repeatable)",
    )
    p.add_argument("--address", default=None, help="Ray cluster address (default: local Ray)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and stop")


def _add_corpus_args(p):
    """How a command reads its corpus: format, label map, discontinuous spans."""
    from sdeid.corpus_io import FORMATS

    p.add_argument(
        "--from",
        dest="from_format",
        choices=FORMATS,
        help="the corpus format (default: told from the path's contents)",
    )
    p.add_argument("--label-map", help="label map YAML: corpus labels -> run labels or drop")
    p.add_argument(
        "--discontinuous",
        choices=["split", "refuse"],
        default="split",
        help="a discontinuous BRAT span: one span per fragment (default), or refuse",
    )


def _read(args, path, **kwargs):
    from sdeid.corpus_io import read_corpus

    return read_corpus(
        path,
        fmt=args.from_format,
        label_map=args.label_map,
        discontinuous=args.discontinuous,
        **kwargs,
    )


def _add_format_arg(p):
    from sdeid.corpus_io import FORMATS

    p.add_argument(
        "--format",
        action="append",
        default=[],
        choices=[f for f in FORMATS if f != "parquet"],
        help="also publish the corpus in this format, as corpus_FORMAT/ (repeatable)",
    )


def _ner_train(args):
    from sdeid.config import config_to_dict, load_config
    from sdeid.ner_job import ner_plan, run_ner_train
    from sdeid.ner_train import NerTrainConfig

    cfg = load_config(NerTrainConfig, args.config, args.set)
    if args.dry_run:  # the resolved config and its schedule (windows, steps, epochs)
        plan = ner_plan(cfg, str(args.config))
        print(json.dumps({"config": config_to_dict(cfg), "plan": plan}, indent=2))
        return 0
    result = run_ner_train(cfg, args.out, ray_address=args.address)
    summary = {k: result[k] for k in ("best_epoch", "best_dev_f1", "train_wall_s")}
    if "test" in result:
        summary.update(
            test_strict_f1=result["test"]["strict"]["f1"],
            test_token_f1=result["test"]["token"]["f1"],
            inference_docs_per_s=result["inference_docs_per_s"],
        )
    print(json.dumps(summary, indent=2))
    return 0


def _ner_evaluate(args):
    from sdeid.metrics import per_label_table
    from sdeid.ner_job import evaluate_model

    gold = _read(args, args.gold)
    scores, preds, docs_per_s = evaluate_model(args.model, gold)
    if args.predictions:
        from sdeid.brat import write_brat

        write_brat(preds, args.predictions, overwrite=args.overwrite)
    print(per_label_table(scores))
    print(
        json.dumps(
            {"strict": scores["strict"], "token": scores["token"], "docs_per_s": docs_per_s},
            indent=2,
        )
    )
    return 0


def _ner_predict(args):
    from sdeid.corpus_io import write_corpus
    from sdeid.ner_predict import NerTagger

    notes = _read(args, args.input, allow_overlap=True)
    preds = NerTagger(args.model).tag(notes)
    write_corpus(preds, args.out, args.format, overwrite=args.overwrite)
    print(f"tagged {len(preds)} notes, {sum(len(n.spans) for n in preds)} spans -> {args.out}")
    return 0


def _adapt(args):
    from sdeid.adapt import AdaptConfig
    from sdeid.adapt_job import adapt_plan, check_causal_lm, refuse_bad_plan, run_adapt
    from sdeid.config import config_to_dict, load_config

    if args.dry_run:  # the resolved config, its memory and schedule plan, and any refusal
        cfg = load_config(AdaptConfig, args.config, args.set)
        check_causal_lm(cfg.base_model)
        plan = adapt_plan(cfg)
        print(json.dumps({"config": config_to_dict(cfg), "plan": plan}, indent=2))
        refuse_bad_plan(plan, str(args.config))
        return 0
    cfg = _resolved_config(AdaptConfig, args)
    metrics = run_adapt(cfg, args.out, ray_address=args.address)
    print(
        json.dumps(
            {
                "dev_by_epoch": metrics["dev_by_epoch"],
                "train_tokens_per_s": metrics["train_tokens_per_s"],
                "wall_s": metrics["wall_s"],
            },
            indent=2,
        )
    )
    return 0


def _generate(args):
    from sdeid.generate import GenerateConfig
    from sdeid.generate_job import run_generate

    cfg = _resolved_config(GenerateConfig, args)
    if cfg is None:
        return 0
    print(json.dumps(run_generate(cfg, args.out, ray_address=args.address), indent=2))
    return 0


def _annotate(args):
    from sdeid.annotate import AnnotateConfig
    from sdeid.annotate_job import run_annotate

    cfg = _resolved_config(AnnotateConfig, args)
    if cfg is None:
        return 0
    print(json.dumps(run_annotate(cfg, args.out, ray_address=args.address), indent=2))
    return 0


def _print_records(records):
    for r in records:
        wall = f"{r['wall_s']:.0f}s" if "wall_s" in r else ""
        print(f"{r['stage']:<14} {r['action']:<6} {wall:>6}  {r['folder']}")


def _run(args):
    from sdeid.pipeline import load_pipeline_config, run_pipeline

    cfg = load_pipeline_config(args.config, args.set)
    records = run_pipeline(
        cfg,
        args.out,
        from_stage=args.from_stage,
        only=args.only,
        dry_run=args.dry_run,
        ray_address=args.address,
        where=args.config,
    )
    if args.dry_run:
        print(json.dumps(records, indent=2, default=str))
        return 0
    _print_records(records)
    report = Path(args.out) / "report" / "report.md"
    if report.is_file():
        print(f"report: {report}")
    return 0


def _ablate(args):
    from sdeid.ablate import AblateConfig, run_ablation
    from sdeid.config import load_config

    cfg = load_config(AblateConfig, args.config, args.set)
    rows = run_ablation(
        cfg, args.out, args.address, args.dry_run, where=args.config, only=args.points
    )
    if args.dry_run:
        print(json.dumps(rows, indent=2))
    else:
        print(Path(args.out, "ablation.md").read_text())
    return 0


def _audit(args):
    from sdeid.audit import AuditConfig, run_audit

    cfg = _resolved_config(AuditConfig, args)
    if cfg is None:
        return 0
    result = run_audit(cfg, args.out, ray_address=args.address)
    before, after = result["before_filter"], result["after_filter"]
    print(
        json.dumps(
            {
                "notes": before["notes"],
                "ngram_recall": before["ngram_recall"],
                "phi_strings_leaked_before_filter": before["phi_strings_leaked"],
                "phi_strings_leaked_after_filter": after["phi_strings_leaked"],
                "notes_flagged": before["notes_flagged"],
                "notes_kept": after["notes"],
            },
            indent=2,
        )
    )
    return 0


def _publish(args):
    from sdeid.pipeline import gate_config, load_pipeline_config
    from sdeid.release import publish

    cfg = load_pipeline_config(args.config, args.set)
    release = publish(args.run, args.releases, gate_config(cfg, args.config), args.id, args.format)
    print(f"published {release}; {Path(args.releases) / 'latest'} -> {release.name}")
    return 0


def _refresh(args):
    from sdeid.pipeline import load_pipeline_config, refresh

    cfg = load_pipeline_config(args.config, args.set)
    result = refresh(cfg, args.root, args.keep, args.address, args.config, args.id, args.format)
    _print_records(result["stages"])
    print(json.dumps({k: result[k] for k in ("run", "release", "pruned")}, indent=2))
    return 0


def _model_init(args):
    from sdeid.causal_lm_init import PRESETS, build_llama

    if args.preset not in PRESETS:
        from sdeid.config import ConfigError

        raise ConfigError(f"unknown preset {args.preset!r}; known: {sorted(PRESETS)}")
    texts = [n.text for n in _read(args, args.corpus)]
    out = build_llama(args.out, texts, args.preset, args.seed)
    print(f"built {args.preset} Llama and tokenizer from {len(texts)} documents -> {out}")
    return 0


def _data_stats(args):
    from sdeid.corpus_stats import corpus_stats, format_stats

    stats = corpus_stats(_read(args, args.corpus, allow_overlap=args.allow_overlap))
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    return 0


def _data_convert(args):
    from sdeid.corpus_io import write_corpus

    notes = _read(args, args.input, allow_overlap=args.allow_overlap)
    out = write_corpus(notes, args.output, args.to, overwrite=args.overwrite)
    spans = sum(len(n.spans) for n in notes)
    print(f"converted {len(notes)} notes, {spans} spans -> {out} ({args.to})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from sdeid.corpus_io import FORMATS

    p = argparse.ArgumentParser(prog="sdeid", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    ner = sub.add_parser("ner", help="train, evaluate and apply the PHI tagger").add_subparsers(
        dest="ner_command", required=True
    )
    t = ner.add_parser("train", help="fine-tune an encoder on a gold corpus (Ray Train)")
    _add_config_args(t)
    t.set_defaults(func=_ner_train)

    e = ner.add_parser("evaluate", help="score a model on a gold corpus (strict and token F1)")
    e.add_argument("--model", required=True)
    e.add_argument("--gold", required=True, help="gold corpus (any format sdeid reads)")
    _add_corpus_args(e)
    e.add_argument("--predictions", help="also write the predictions as BRAT here")
    e.add_argument("--overwrite", action="store_true")
    e.set_defaults(func=_ner_evaluate)

    pr = ner.add_parser("predict", help="tag a corpus and write the tagged notes")
    pr.add_argument("--model", required=True)
    pr.add_argument("--input", required=True, help="the notes (any format sdeid reads)")
    pr.add_argument("--out", required=True)
    pr.add_argument("--format", choices=FORMATS, default="brat", help="output format")
    _add_corpus_args(pr)
    pr.add_argument("--overwrite", action="store_true")
    pr.set_defaults(func=_ner_predict)

    a = sub.add_parser("adapt", help="domain-adapt a causal LM (Ray Train + DeepSpeed + PEFT)")
    _add_config_args(a)
    a.set_defaults(func=_adapt)

    g = sub.add_parser("generate", help="sample synthetic notes (Ray Data + vLLM) into shards")
    _add_config_args(g)
    g.set_defaults(func=_generate)

    an = sub.add_parser("annotate", help="tag note shards for PHI with the NER model (Ray Data)")
    _add_config_args(an)
    an.set_defaults(func=_annotate)

    r = sub.add_parser(
        "run",
        help="the whole method: adapt, generate, annotate, train on synthetic, "
        "evaluate, report (unchanged stages are reused)",
    )
    _add_config_args(r)
    r.add_argument("--from", dest="from_stage", metavar="STAGE", help="rerun from this stage on")
    r.add_argument("--only", metavar="STAGE", help="run only this stage")
    r.set_defaults(func=_run)

    pu = sub.add_parser(
        "publish", help="gate a finished run and, if it passes, publish it as the latest release"
    )
    pu.add_argument("--config", required=True, help="the run's pipeline config (its gate)")
    pu.add_argument("--run", required=True, help="the run folder")
    pu.add_argument("--releases", required=True, help="the releases folder")
    pu.add_argument("--id", default=None, help="release id (default: UTC time)")
    pu.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    _add_format_arg(pu)
    pu.set_defaults(func=_publish)

    rf = sub.add_parser(
        "refresh",
        help="the scheduled entrypoint: a new dated run (unchanged stages reused), gate, "
        "publish, keep the last K releases",
    )
    rf.add_argument("--config", required=True)
    rf.add_argument("--root", required=True, help="holds runs/, stages/ and releases/")
    rf.add_argument("--keep", type=int, default=5, help="releases to keep")
    rf.add_argument("--id", default=None, help="run and release id (default: UTC time)")
    rf.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    rf.add_argument("--address", default=None, help="Ray cluster address (default: local Ray)")
    _add_format_arg(rf)
    rf.set_defaults(func=_refresh)

    au = sub.add_parser(
        "audit",
        help="privacy audit of synthetic notes against the private corpus; writes the "
        "notes that pass",
    )
    _add_config_args(au)
    au.set_defaults(func=_audit)

    ab = sub.add_parser("ablate", help="the pipeline over a grid of settings: table and curves")
    _add_config_args(ab)
    ab.add_argument(
        "--points",
        type=int,
        nargs="+",
        metavar="N",
        help="run only these points (0-based, grid order); the folder's earlier rows for the "
        "others stay in the table",
    )
    ab.set_defaults(func=_ablate)

    model = sub.add_parser("model", help="model tools").add_subparsers(
        dest="model_command", required=True
    )
    mi = model.add_parser(
        "init",
        help="train a BPE tokenizer and build a small Llama from a "
        "preset (the stand-in for a pretrained LLM on machines without one)",
    )
    mi.add_argument("--corpus", required=True, help="the notes (any format sdeid reads)")
    _add_corpus_args(mi)
    mi.add_argument("--preset", required=True, help="tiny, cpu-small or cpu")
    mi.add_argument("--out", required=True)
    mi.add_argument("--seed", type=int, default=0)
    mi.set_defaults(func=_model_init)

    data = sub.add_parser("data", help="corpus tools").add_subparsers(
        dest="data_command", required=True
    )
    s = data.add_parser("stats", help="documents, spans per label, characters")
    s.add_argument("corpus", help="the corpus (any format sdeid reads)")
    s.add_argument("--json", action="store_true")
    s.add_argument("--allow-overlap", action="store_true")
    _add_corpus_args(s)
    s.set_defaults(func=_data_stats)

    c = data.add_parser(
        "convert", help="a corpus from one format to another (label map applied on the way)"
    )
    c.add_argument("input", help="the corpus (format told from its contents, or --from)")
    c.add_argument("output", help="where to write it (a folder; a .parquet file for parquet)")
    c.add_argument("--to", required=True, choices=FORMATS)
    c.add_argument("--allow-overlap", action="store_true")
    c.add_argument("--overwrite", action="store_true")
    _add_corpus_args(c)
    c.set_defaults(func=_data_convert)
    return p


def main(argv=None) -> int:
    from sdeid.errors import SdeidError
    from sdeid.release import GateFailed

    args = build_parser().parse_args(argv)
    # sdeid's own warnings (a corpus line set aside, ...) reach the terminal, named.
    logging.basicConfig(format="%(name)s: %(levelname)s: %(message)s", level=logging.WARNING)
    try:
        return args.func(args)
    except GateFailed as e:
        print(f"sdeid: {e}", file=sys.stderr)
        return 3
    except (SdeidError, FileNotFoundError) as e:
        print(f"sdeid: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
