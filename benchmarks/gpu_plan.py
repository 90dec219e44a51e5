"""The paper's adaptation planned on three GPU types, before any GPU is rented.

Reads configs/meddocan-gpu.yaml's adapt section, puts FLOR-6.3B's shape in for the model
(configs/models/flor-6.3b: a config.json only) and MEDDOCAN train for the corpus, and prints
sdeid's plan (sdeid/adapt_plan.py) per GPU type, with and without gradient checkpointing, for the
corrected settings and for the paper config's old batch (2,048-token blocks x micro-batch 4):

    .venv/bin/python benchmarks/gpu_plan.py   # -> benchmarks/results/gpu_plan.{md,json}
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GPUS = {"A10G 24 GB": 24, "A100 80 GB": 80, "H100 80 GB": 80}
OLD_BATCH = dict(context_length=2048, micro_batch_size=4, gradient_accumulation=4, warmup_steps=20)


def main(argv=None) -> int:
    from sdeid.adapt import AdaptConfig
    from sdeid.adapt_job import adapt_plan
    from sdeid.config import build_config
    from sdeid.pipeline import load_pipeline_config

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default=str(ROOT.parent / "shared/data/meddocan/train"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/gpu_plan"))
    args = ap.parse_args(argv)

    section = dict(load_pipeline_config(ROOT / "configs/meddocan-gpu.yaml").adapt)
    section.update(base_model=str(ROOT / "configs/models/flor-6.3b"), corpus=args.corpus)
    base = build_config(AdaptConfig, {**section, "dev": args.corpus}, "meddocan-gpu adapt")
    rows = []
    for name, settings in (("corrected", {}), ("paper config's old batch", OLD_BATCH)):
        for gpu, gib in GPUS.items():
            cfg = dataclasses.replace(base, gpu_memory_gib=gib, **settings)
            plan = adapt_plan(cfg)
            for ckpt in (False, True):
                mem = plan["memory_gib_per_gpu"][
                    "with_checkpointing" if ckpt else "without_checkpointing"
                ]
                rows.append(
                    dict(
                        settings=name,
                        gpu=gpu,
                        checkpointing=ckpt,
                        **{
                            k: mem[k]
                            for k in (
                                "weights",
                                "gradients",
                                "optimizer",
                                "activations",
                                "logits",
                                "runtime",
                                "total",
                            )
                        },
                        fits=mem["total"] <= gib,
                        steps_per_epoch=plan["schedule"]["steps_per_epoch"],
                        total_steps=plan["schedule"]["total_steps"],
                        warmup_steps=cfg.warmup_steps,
                    )
                )
    sched = plan["schedule"]
    out = Path(args.out)
    out.with_suffix(".json").write_text(
        json.dumps({"model": plan["model"], "rows": rows}, indent=2)
    )
    lines = [
        "# The paper's adaptation planned per GPU (`benchmarks/gpu_plan.py`)",
        "",
        f"FLOR-6.3B shape (configs/models/flor-6.3b): {plan['model']['params']:,} parameters, "
        f"LoRA r={base.lora_r} on {', '.join(base.lora_target_modules)}: "
        f"{plan['model']['lora_params']:,} trainable. MEDDOCAN train: {sched['tokens']:,} tokens "
        f"({'estimated at 4 characters a token: no FLOR tokenizer here' if sched['tokens_estimated'] else 'counted'}). "
        "4 workers, ZeRO-2, bf16. GiB per GPU; 'runtime' is a fixed allowance.",
        "",
        "| settings | GPU | checkpointing | weights | grads | optimizer | activations | logits | runtime | total | fits | steps/epoch | steps (warm-up) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['settings']} | {r['gpu']} | {'on' if r['checkpointing'] else 'off'} | {r['weights']} | "
            f"{r['gradients']} | {r['optimizer']} | {r['activations']} | {r['logits']} | {r['runtime']} | "
            f"**{r['total']}** | {'yes' if r['fits'] else 'no'} | {r['steps_per_epoch']} | "
            f"{r['total_steps']} ({r['warmup_steps']}) |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
