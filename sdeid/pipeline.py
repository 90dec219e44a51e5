"""`sdeid run`: the whole method as one job; a stage is reused when nothing it depends on changed.

The stages, in order:
  base_lm        a small Llama built from the train split (`model init`), only when
                 adapt.base_model is "init:PRESET" (machines without a pretrained LM)
  annotator      NER trained on the gold corpus: the machine annotator, and the gold model
  adapt          the generator: the base LM adapted to the gold train split
  generate       synthetic notes prompted with the first words of held-out documents
  annotate       the synthetic notes tagged by the annotator
  audit          privacy audit against the private train split (and the generator's canaries
                 and memorization figures, when it has them); flagged notes dropped
  synthetic_ner  NER trained on the audited synthetic notes only (dev held out of them)
  report         gold vs synthetic on the gold test set, lineage, wall times, cost

Each stage writes to <run>/stages/<stage>-<key>/, where the key hashes the stage's config, the
content of its outside inputs (corpora, base models) and the keys of the stages it reads. So a
changed setting gets a new folder and the old one stays; an unchanged stage is found finished
and reused. A folder is finished when it holds _stage.json, written last. <run>/<stage> links to
the folder the latest run used; <run>/plan.json records the whole plan.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from sdeid.config import ConfigError, build_config, config_to_dict
from sdeid.errors import RunFolderError, SdeidError
from sdeid.manifest import STAGE_DONE as DONE

STAGES = (
    "base_lm",
    "annotator",
    "adapt",
    "generate",
    "annotate",
    "audit",
    "synthetic_ner",
    "report",
)


@dataclass(frozen=True)
class PipelineConfig:
    train: str
    """Gold training corpus (the private notes): BRAT folder or Parquet."""
    dev: str
    """Gold dev corpus: the gold NER's model selection, adapt's dev loss, and the prompts."""
    test: str
    """Gold test corpus: both NER models are scored on it."""
    annotator: dict
    """`ner train` settings for the gold NER / machine annotator (train/dev/test are set here)."""
    adapt: dict
    """`adapt` settings; base_model "init:PRESET" builds a small Llama first."""
    generate: dict
    """`generate` settings (model and, unless given, prompts_from are set here)."""
    annotate: dict = field(default_factory=dict)
    """`annotate` settings (notes and model are set here)."""
    audit: dict = field(default_factory=dict)
    """`audit` settings; synthetic and private are set here, and dev and test are added to
    the reference (strings found there are not private to the training notes)."""
    synthetic_ner: dict = field(default_factory=dict)
    """`ner train` settings for the synthetic model; unset keys follow `annotator`."""
    usd_per_gpu_hour: float = 0.0
    """For the report's cost estimate per 1k notes."""
    gpus: int = 0
    """Accelerators the run holds while generating and annotating (cost estimate)."""
    init_seed: int = 0
    """Seed of `model init` when adapt.base_model is "init:PRESET"."""
    gate: dict = field(default_factory=dict)
    """Publish gate settings (sdeid.release.GateConfig), used by `publish` and `refresh`."""

    def check(self):
        if self.usd_per_gpu_hour < 0 or self.gpus < 0:
            raise ValueError("usd_per_gpu_hour and gpus must be >= 0")


@dataclass
class Stage:
    name: str
    config: object
    """The stage's own config dataclass (paths resolved), or a dict for base_lm and report."""
    key: str
    folder: Path
    after: tuple[str, ...]
    """Upstream stages whose output this one reads."""

    @property
    def finished(self) -> bool:
        return (self.folder / DONE).is_file()


def load_pipeline_config(path, overrides=()) -> PipelineConfig:
    """The YAML file with `--set section.key=value` (or `key=value`) overrides applied."""
    from sdeid.config import _parse_override, read_yaml

    path = Path(path)
    values = read_yaml(path)
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of settings")
    values = {k: dict(v) if isinstance(v, dict) else v for k, v in values.items()}
    for text in overrides:
        key, value = _parse_override(text, "--set")
        section, dot, sub = key.partition(".")
        if dot:
            if not isinstance(values.get(section, {}), dict):
                raise ConfigError(f"--set {key}: {section} is not a section")
            values.setdefault(section, {})[sub] = value
        else:
            values[key] = value
    cfg = build_config(PipelineConfig, values, str(path))
    return dataclasses.replace(cfg, **{k: _abs(getattr(cfg, k)) for k in ("train", "dev", "test")})


def _abs(path):
    from sdeid.ner_job import absolute

    return absolute(path)


def _identity(path: str) -> str:
    """What a stage's key records for an outside input: the content hash of a local path."""
    from sdeid.manifest import fingerprint_path
    from sdeid.ner_train import resolve_model_dir

    if path.startswith("package:"):
        return fingerprint_path(resolve_model_dir(path))
    if "://" in path:
        return path  # remote: the URI is all we can see without reading it
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: input not found")
    return fingerprint_path(path)


def _key(name: str, config: dict, inputs: dict) -> str:
    blob = json.dumps(
        {"stage": name, "config": config, "inputs": inputs}, sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _section(cls, values: dict, set_here: dict, where: str):
    """Build a stage config from a YAML section plus the paths the pipeline wires in."""
    clash = sorted(set(values) & set(set_here))
    if clash:
        raise ConfigError(f"{where}: {clash} are set by the pipeline; remove them")
    return build_config(cls, {**values, **set_here}, where)


def plan(cfg: PipelineConfig, run_dir, where: str = "config", stages_dir=None) -> list[Stage]:
    """Resolve every stage's config, key and folder (under `stages_dir`, by default
    RUN/stages; `sdeid refresh` shares one between dated runs). Runs nothing."""
    from sdeid.adapt import AdaptConfig
    from sdeid.annotate import AnnotateConfig
    from sdeid.audit import AuditConfig
    from sdeid.generate import GenerateConfig
    from sdeid.ner_train import NerTrainConfig

    stages_dir = Path(stages_dir or Path(run_dir) / "stages").resolve()
    corpus = {k: _identity(getattr(cfg, k)) for k in ("train", "dev", "test")}
    stages: dict[str, Stage] = {}

    def add(name, config, outside: dict, after=()):
        config_dict = config if isinstance(config, dict) else config_to_dict(config)
        # Paths of wired-in inputs would tie the key to where the run folder lives; their
        # identity (content hash or upstream key) stands in for them.
        wired = set(outside) | {f for f, _ in after}
        key = _key(
            name,
            {k: v for k, v in config_dict.items() if k not in wired},
            {**outside, **{f: stages[s].key for f, s in after}},
        )
        stages[name] = Stage(
            name, config, key, stages_dir / f"{name}-{key}", tuple(s for _, s in after)
        )
        return stages[name]

    adapt_values = dict(cfg.adapt)
    base = adapt_values.pop("base_model", None)
    if base is None:
        raise ConfigError(f"{where}: adapt: missing required key(s) ['base_model']")
    after = ()
    if isinstance(base, str) and base.startswith("init:"):
        lm = add(
            "base_lm",
            {"preset": base[len("init:") :], "seed": cfg.init_seed, "corpus": cfg.train},
            {"corpus": corpus["train"]},
        )
        base_model, base_id = str(lm.folder), {}
        after = (("base_model", "base_lm"),)
    else:
        base_model = _abs(base)
        base_id = {"base_model": _identity(base_model)}

    gold_paths = {"train": cfg.train, "dev": cfg.dev, "test": cfg.test}
    annotator = _section(NerTrainConfig, cfg.annotator, gold_paths, f"{where}: annotator")
    annotator = _ner_paths(annotator)
    add("annotator", annotator, {**corpus, **_ner_inputs(annotator)})

    adapt_set = {"corpus": cfg.train, "dev": cfg.dev, "base_model": base_model}
    adapt_ids = {"corpus": corpus["train"], "dev": corpus["dev"], **base_id}
    if adapt_values.get("membership"):
        # Non-members beside dev: the test split. A randomly initialised base says nothing
        # about a note, so the calibrated attack needs a pretrained one.
        adapt_set["membership_holdout"] = cfg.test
        adapt_set["membership_reference"] = "base_lm" not in stages
        adapt_ids["membership_holdout"] = corpus["test"]
    adapt = _section(AdaptConfig, adapt_values, adapt_set, f"{where}: adapt")
    add("adapt", adapt, adapt_ids, after)

    gen_values = dict(cfg.generate)
    gen_set = {"model": str(stages["adapt"].folder)}
    prompt_sources = ("prompts_from", "prompt_file", "unconditional")
    if not any(k in gen_values for k in prompt_sources):
        gen_set["prompts_from"] = cfg.dev  # the paper: held-out documents' first words
    generate = _section(GenerateConfig, gen_values, gen_set, f"{where}: generate")
    generate = dataclasses.replace(
        generate, prompts_from=_abs(generate.prompts_from), prompt_file=_abs(generate.prompt_file)
    )
    prompts = {
        k: _identity(getattr(generate, k))
        for k in ("prompts_from", "prompt_file")
        if getattr(generate, k)
    }
    add("generate", generate, prompts, (("model", "adapt"),))
    if generate.use_adapter and generate.backend == "vllm":
        _check_adapter_served(adapt, base, where)

    annotate = _section(
        AnnotateConfig,
        cfg.annotate,
        {"notes": str(stages["generate"].folder), "model": str(stages["annotator"].folder)},
        f"{where}: annotate",
    )
    add("annotate", annotate, {}, (("notes", "generate"), ("model", "annotator")))

    audit_values = dict(cfg.audit)
    extra_ref = [_abs(r) for r in audit_values.pop("reference", [])]
    audit = _section(
        AuditConfig,
        audit_values,
        {
            "synthetic": str(stages["annotate"].folder),
            "private": cfg.train,
            "generator": str(stages["adapt"].folder),
            "reference": [cfg.dev, cfg.test, *extra_ref],
        },
        f"{where}: audit",
    )
    add(
        "audit",
        audit,
        {
            "private": corpus["train"],
            "reference": [corpus["dev"], corpus["test"], *map(_identity, extra_ref)],
        },
        (("synthetic", "annotate"), ("generator", "adapt")),
    )

    # The synthetic model uses the annotator's recipe unless told otherwise, and no gold note
    # for training or model selection: its dev set is held out of the synthetic notes.
    syn_values = {
        **{k: v for k, v in cfg.annotator.items() if k != "train_fraction"},
        **cfg.synthetic_ner,
    }
    synthetic = _section(
        NerTrainConfig,
        syn_values,
        {"train": str(stages["audit"].folder / "shards"), "test": cfg.test},
        f"{where}: synthetic_ner",
    )
    synthetic = _ner_paths(synthetic)
    add(
        "synthetic_ner",
        synthetic,
        {
            "test": corpus["test"],
            **_ner_inputs(synthetic),
            **({"dev": _identity(synthetic.dev)} if synthetic.dev else {}),
        },
        (("train", "audit"),),
    )
    add(
        "report",
        {"usd_per_gpu_hour": cfg.usd_per_gpu_hour, "gpus": cfg.gpus},
        {},
        tuple((s, s) for s in stages),
    )
    return [stages[n] for n in STAGES if n in stages]


def _ner_paths(cfg):
    return dataclasses.replace(cfg, base_model=_abs(cfg.base_model), label_map=_abs(cfg.label_map))


def _ner_inputs(cfg) -> dict:
    """A NER stage's outside inputs besides the corpora: the base model and the label map."""
    inputs = {"base_model": _identity(cfg.base_model)}
    if cfg.label_map:
        inputs["label_map"] = _identity(cfg.label_map)
    return inputs


def run_stage(stage: Stage, stages: dict[str, Stage], ray_address: str | None) -> None:
    if stage.name == "base_lm":
        from sdeid.causal_lm_init import build_llama
        from sdeid.corpus_io import read_corpus

        texts = [n.text for n in read_corpus(stage.config["corpus"])]
        build_llama(stage.folder, texts, stage.config["preset"], stage.config["seed"])
    elif stage.name in ("annotator", "synthetic_ner"):
        from sdeid.ner_job import run_ner_train

        run_ner_train(stage.config, stage.folder, ray_address)
    elif stage.name == "adapt":
        from sdeid.adapt_job import run_adapt

        run_adapt(stage.config, stage.folder, ray_address)
    elif stage.name == "generate":
        from sdeid.generate_job import run_generate

        run_generate(stage.config, stage.folder, ray_address)
    elif stage.name == "annotate":
        from sdeid.annotate_job import run_annotate

        run_annotate(stage.config, stage.folder, ray_address)
    elif stage.name == "audit":
        from sdeid.audit import run_audit

        run_audit(stage.config, stage.folder, ray_address)
    elif stage.name == "report":
        from sdeid.report import write_report

        write_report(stage.folder, {n: s.folder for n, s in stages.items()}, stage.config)


def run_pipeline(
    cfg: PipelineConfig,
    run_dir,
    from_stage: str | None = None,
    only: str | None = None,
    dry_run: bool = False,
    ray_address: str | None = None,
    where: str = "config",
    stages_dir=None,
) -> list[dict]:
    """Run (or, dry, describe) the plan. Returns one record per stage: name, key, folder,
    action (reuse / run / rerun / skip) and, for what ran, wall seconds."""
    for name, flag in ((from_stage, "--from"), (only, "--only")):
        if name is not None and name not in STAGES:
            raise ConfigError(f"{flag} {name!r}: not a stage; stages: {', '.join(STAGES)}")
    run_dir = Path(run_dir).resolve()
    stages = plan(cfg, run_dir, where, stages_dir)
    by_name = {s.name: s for s in stages}
    names = [s.name for s in stages]
    if from_stage is not None and from_stage not in names:
        raise ConfigError(f"--from {from_stage}: this config has no {from_stage} stage")
    forced = set(names[names.index(from_stage) :]) if from_stage else set()

    records = []
    for stage in stages:
        if only is not None and stage.name != only:
            action = "skip"
        elif stage.name in forced or stage.name == only:
            action = "rerun" if stage.folder.exists() else "run"
        else:
            action = "reuse" if stage.finished else "run"
        records.append(
            {"stage": stage.name, "key": stage.key, "folder": str(stage.folder), "action": action}
        )
    if only is not None:
        for up in by_name[only].after:
            if not by_name[up].finished:
                raise RunFolderError(
                    f"{run_dir}: --only {only} needs the finished upstream stage {up} "
                    f"({by_name[up].folder}); run without --only first"
                )
    # The adaptation's memory and schedule are checked before any stage runs: a config that
    # cannot fit its GPUs, or whose warmup outlasts the run, fails now, not after the annotator.
    adapt_record = next((r for r in records if r["stage"] == "adapt"), None)
    adapt_plan = None
    if adapt_record and (dry_run or adapt_record["action"] in ("run", "rerun")):
        adapt_plan = _adapt_plan(by_name)
    if dry_run:
        for r, s in zip(records, stages, strict=True):
            r["config"] = s.config if isinstance(s.config, dict) else config_to_dict(s.config)
        if adapt_plan is not None:
            adapt_record["plan"] = adapt_plan
        _plan_ner(records, by_name, where)
        return records
    if adapt_plan is not None:
        from sdeid.adapt_job import refuse_bad_plan

        refuse_bad_plan(adapt_plan, f"{where}: adapt")

    run_dir.mkdir(parents=True, exist_ok=True)
    _write_json(run_dir / "plan.json", {"created_unix": time.time(), "stages": records})
    for record, stage in zip(records, stages, strict=True):
        if record["action"] == "skip":
            continue
        if record["action"] == "reuse":
            print(f"[run] {stage.name}: reused {stage.folder.name}", flush=True)
            _link(run_dir, stage)
            continue
        if record["action"] == "rerun":
            # Keep what was there: a rerun starts from an empty folder, the old one is renamed.
            old = stage.folder.with_name(f"{stage.folder.name}.prev-{int(time.time())}")
            stage.folder.rename(old)
            print(f"[run] {stage.name}: previous output kept as {old.name}", flush=True)
        print(f"[run] {stage.name}: running into {stage.folder.name}", flush=True)
        stage.folder.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        run_stage(stage, by_name, ray_address)
        record["wall_s"] = time.time() - t0
        _write_json(
            stage.folder / DONE,
            {"stage": stage.name, "key": stage.key, "wall_s": record["wall_s"]},
        )
        _link(run_dir, stage)
        print(f"[run] {stage.name}: done in {record['wall_s']:.0f}s", flush=True)
    _write_json(run_dir / "plan.json", {"created_unix": time.time(), "stages": records})
    return records


def _check_adapter_served(adapt, base: str, where: str) -> None:
    """generate.use_adapter is refused with the config, not when the engines start."""
    from sdeid.causal_lm_init import llama_config
    from sdeid.generate_job import check_vllm_lora
    from sdeid.lm_arch import read_model_config

    if adapt.method != "lora":
        raise ConfigError(f"{where}: generate: use_adapter needs adapt.method lora")
    init = isinstance(base, str) and base.startswith("init:")
    model_config = llama_config(base[5:]).to_dict() if init else read_model_config(adapt.base_model)
    try:
        check_vllm_lora(model_config, adapt.base_model, adapt.lora_r)
    except SdeidError as e:
        raise ConfigError(f"{where}: generate: {e}") from None


def _adapt_plan(by_name: dict[str, Stage]) -> dict:
    """adapt's plan; a base model that base_lm has not built yet is planned from its preset
    (its token count then estimated from characters: the tokenizer does not exist yet)."""
    from sdeid.adapt_job import adapt_plan
    from sdeid.causal_lm_init import llama_config

    base_lm = by_name.get("base_lm")
    if base_lm is not None and not base_lm.finished:
        return adapt_plan(
            by_name["adapt"].config, model_config=llama_config(base_lm.config["preset"])
        )
    return adapt_plan(by_name["adapt"].config)


def _plan_ner(records: list[dict], by_name: dict[str, Stage], where: str) -> None:
    """The NER stages' schedules, where their training notes exist: the annotator's always
    (the private corpus), the synthetic model's once the audit has written its notes."""
    from sdeid.ner_job import ner_plan

    for r in records:
        stage = by_name[r["stage"]]
        ready = all(by_name[up].finished for up in stage.after)
        if r["stage"] in ("annotator", "synthetic_ner") and ready:
            r["plan"] = ner_plan(stage.config, f"{where}: {r['stage']}")


def _write_json(path: Path, value) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=2, default=str))
    os.replace(tmp, path)


def _link(run_dir: Path, stage: Stage) -> None:
    """<run>/<stage> -> stages/<stage>-<key>, replaced atomically."""
    link = run_dir / stage.name
    tmp = run_dir / f".{stage.name}.link"
    if tmp.is_symlink():
        tmp.unlink()
    tmp.symlink_to(os.path.relpath(stage.folder, run_dir))
    os.replace(tmp, link)


def gate_config(cfg: PipelineConfig, where: str = "config"):
    from sdeid.release import GateConfig

    return build_config(GateConfig, cfg.gate, f"{where}: gate")


def refresh(
    cfg: PipelineConfig,
    root,
    keep: int,
    ray_address=None,
    where="config",
    run_id=None,
    formats=(),
):
    """The scheduled entrypoint: a new dated run whose stages live in ROOT/stages (so what did
    not change is reused), then the gate, publish, and keep the newest `keep` releases."""
    from sdeid.release import prune, publish

    root = Path(root)
    gate = gate_config(cfg, where)  # a bad gate setting fails before hours of work
    run_id = run_id or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    run_dir = root / "runs" / run_id
    records = run_pipeline(
        cfg, run_dir, ray_address=ray_address, where=where, stages_dir=root / "stages"
    )
    release = publish(run_dir, root / "releases", gate, run_id, formats)
    pruned = prune(root / "releases", keep)
    return {"run": str(run_dir), "release": str(release), "pruned": pruned, "stages": records}
