"""Pod-hours per stage for 10M and 100M notes on the GPU cluster config, before a GPU is rented.

    .venv/bin/python benchmarks/extrapolate.py   # -> benchmarks/results/extrapolate.{md,json}

The cluster is configs/meddocan-gpu.yaml's stages on cluster/raycluster.yaml's GPU pods (4 A10G
and 44 CPUs each, at most `maxReplicas` of them). Where each figure comes from:

- clean-up, the audit and the NER stage's preparation (notes checked and cut into windows by
  Ray Data tasks) run on CPUs: their CPU-seconds per note are measured, by benchmarks/scale.py
  at the largest size it ran on 2 CPUs (benchmarks/results/scale.json), and spread over every
  CPU of every pod (each is a task per shard or per file).
- generate is not measured on a GPU here, so it is a roofline: decoding is bound by memory
  bandwidth, one engine step reads the weights once and the KV cache of every live sequence, and
  the live sequences are as many as the KV cache left beside the weights holds (at most
  `max_num_seqs`). Tokens/s = sequences / step time, times an assumed efficiency.
- annotate and the synthetic NER model are encoder passes, bound by compute: 2 FLOPs per
  parameter per token to tag, 6 to train, at an assumed fraction of the GPU's bf16 peak.
  An annotator actor also tokenizes, decodes spans and builds its shard in its own process,
  between forward passes: that CPU time per note is measured (benchmarks/annotate_cpu.py, the
  gold annotator on MEDDOCAN dev notes, this tree) and added to the GPU's.
- adaptation does not grow with the notes (benchmarks/results/gpu_plan.md plans it).
A note's tokens: MEDDOCAN train's mean length at 4 characters a token (the adaptation plan's
estimate), capped by `max_new_tokens`. The assumptions are printed with the table.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# NVIDIA's A10 datasheet (the A10G is AWS's A10): memory bandwidth and dense bf16 tensor peak.
GPU = {"name": "A10G", "gib": 24, "bandwidth_gb_s": 600, "bf16_tflops": 125}
DECODE_EFFICIENCY = 0.5  # share of the bandwidth roofline an engine reaches (assumed)
ENCODER_MFU = 0.3  # share of the bf16 peak an encoder pass reaches (assumed)
GPU_MEMORY_UTILIZATION = 0.9  # vLLM's default share of the GPU it may take
# roberta-base-bne, the paper's annotator: RoBERTa-base with a 50,262-token vocabulary.
CPU_STAGES = {"ner": "synthetic NER: windows", "cleanup": "clean-up", "audit": "audit"}
ENCODER = dict(vocab_size=50262, max_position_embeddings=514, type_vocab_size=1, num_labels=45)


def scale_costs(results: Path) -> dict:
    """{stage: (CPU-seconds per note, notes it was measured at)} from scale.py's largest size."""
    costs = {}
    for r in json.loads(results.read_text()):
        one_node = r.get("nodes", 1) == 1  # two nodes on these same 2 CPUs add overhead
        if r["stage"] in ("cleanup", "audit", "ner") and r["cpus"] == 2 and one_node:
            seconds = sorted(r["seconds"])[len(r["seconds"]) // 2]
            if r["stage"] == "ner":  # the preparation only: training is computed below
                seconds = r["counts"]["prepare_s"]
            if r["notes"] > costs.get(r["stage"], (0, 0))[1]:
                costs[r["stage"]] = (seconds * r["cpus"] / r["notes"], r["notes"])
    return costs


def annotator_cpu(results: Path) -> tuple[float, int]:
    """(CPU-seconds per note an annotator actor spends outside the model, notes measured):
    the gold annotator with this tree's code, median of the repeats."""
    m = json.loads(results.read_text())["models"]["gold annotator"]
    runs = m["runs"]["this tree"]
    per_note = sorted((r["total_s"] - r["forward_s"]) / r["notes"] for r in runs)
    return per_note[len(per_note) // 2], m["notes"]


def encoder_params() -> int:
    import torch
    from transformers import RobertaConfig, RobertaForTokenClassification

    with torch.device("meta"):
        model = RobertaForTokenClassification(RobertaConfig(**ENCODER))
    return sum(p.numel() for p in model.parameters())


def decode_tokens_per_s(shape, note_tokens: int, prompt_tokens: int, max_num_seqs: int) -> dict:
    """One engine's decoding rate on one GPU, from the bandwidth roofline."""
    weight_bytes = 2 * shape.params  # bf16
    kv_per_token = 2 * shape.layers * shape.hidden * 2  # K and V, every layer, bf16
    kv_budget = GPU_MEMORY_UTILIZATION * GPU["gib"] * 2**30 - weight_bytes - 2**30  # 1 GiB runtime
    live = prompt_tokens + note_tokens / 2  # a sequence's mean length over its life
    seqs = max(1, min(max_num_seqs, int(kv_budget / (kv_per_token * live))))
    step_s = (weight_bytes + seqs * live * kv_per_token) / (GPU["bandwidth_gb_s"] * 1e9)
    return {
        "kv_cache_gib": kv_budget / 2**30,
        "live_sequences": seqs,
        "step_ms": step_s * 1000,
        "tokens_per_s": DECODE_EFFICIENCY * seqs / step_s,
    }


def plan(notes: int, cfg: dict, pod: dict, costs: dict, shape, enc_params: int, tokens: dict):
    """[(stage, GPUs or CPUs held, pods held, hours, pod-hours)] for `notes` notes."""
    gen, ann, syn = cfg["generate"], cfg["annotate"], {**cfg["annotator"], **cfg["synthetic_ner"]}
    rows = []
    engines = gen["engine_replicas"]
    rate = tokens["decode"]["tokens_per_s"]
    hours = notes * tokens["note"] / (engines * rate) / 3600
    rows.append(("generate", f"{engines} GPUs", math.ceil(engines / pod["gpus"]), hours))
    flops = ENCODER_MFU * GPU["bf16_tflops"] * 1e12
    tagged = notes * tokens["note"] * tokens["window_overlap"]
    # The actor's own CPU work runs between its forward passes, so the two add up.
    busy_s = 2 * enc_params * tagged / flops + notes * costs["annotate_actor"][0]
    hours = busy_s / ann["annotators"] / 3600
    rows.append(("annotate", f"{ann['annotators']} GPUs", math.ceil(ann["annotators"] / 4), hours))
    workers, epochs = syn["num_workers"], syn["epochs"]
    hours = 6 * enc_params * tagged * epochs / (workers * flops) / 3600
    rows.append((f"synthetic NER ({epochs} epochs)", f"{workers} GPUs", 1, hours))
    cpus = pod["replicas"] * (pod["cpus"] - 1)  # one CPU a pod kept for Ray's small tasks
    for stage, name in CPU_STAGES.items():
        hours = notes * costs[stage][0] / cpus / 3600
        rows.append((name, f"{cpus} CPUs", pod["replicas"], hours))
    return [(s, held, pods, h, h * pods) for s, held, pods, h in rows]


def main(argv=None) -> int:
    from sdeid.corpus_io import read_corpus
    from sdeid.lm_arch import model_shape

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--notes", type=int, nargs="+", default=[10_000_000, 100_000_000])
    ap.add_argument("--corpus", default=str(ROOT.parent / "shared/data/meddocan/train"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/extrapolate"))
    args = ap.parse_args(argv)

    cfg = yaml.safe_load((ROOT / "configs/meddocan-gpu.yaml").read_text())
    manifest = yaml.safe_load((ROOT / "cluster/raycluster.yaml").read_text())
    group = manifest["spec"]["workerGroupSpecs"][0]
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    pod = {
        "cpus": int(limits["cpu"]),
        "gpus": int(limits["nvidia.com/gpu"]),
        "replicas": group["maxReplicas"],
    }
    costs = scale_costs(ROOT / "benchmarks/results/scale.json")
    costs["annotate_actor"] = annotator_cpu(ROOT / "benchmarks/results/annotate_cpu.json")
    shape = model_shape(ROOT / "configs/models/flor-6.3b")
    enc_params = encoder_params()
    texts = [n.text for n in read_corpus(args.corpus, allow_overlap=True)]
    mean_chars = sum(map(len, texts)) / len(texts)
    gen = cfg["generate"]
    note_tokens = min(gen["max_new_tokens"], round(mean_chars / 4))
    ann = cfg["annotator"]
    tokens = {
        "note": note_tokens,
        "window_overlap": ann["max_length"] / (ann["max_length"] - ann["stride"]),
        "decode": decode_tokens_per_s(shape, note_tokens, 8, gen["max_num_seqs"]),
    }
    usd_pod_hour = cfg["usd_per_gpu_hour"] * pod["gpus"]
    plans = {n: plan(n, cfg, pod, costs, shape, enc_params, tokens) for n in args.notes}

    out = Path(args.out)
    record = {
        "gpu": GPU,
        "assumed": {"decode_efficiency": DECODE_EFFICIENCY, "encoder_mfu": ENCODER_MFU},
        "pod": pod,
        "generator_params": shape.params,
        "encoder_params": enc_params,
        "tokens": tokens,
        "measured_cpu_s_per_note": {k: {"s": v[0], "at_notes": v[1]} for k, v in costs.items()},
        "plans": {
            str(n): [
                dict(zip(("stage", "held", "pods", "hours", "pod_hours"), r, strict=True))
                for r in rows
            ]
            for n, rows in plans.items()
        },
    }
    out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    d = tokens["decode"]
    lines = [
        "# 10M and 100M notes on the GPU cluster config (`benchmarks/extrapolate.py`)",
        "",
        f"configs/meddocan-gpu.yaml on cluster/raycluster.yaml's pods ({pod['gpus']} "
        f"{GPU['name']}, {pod['cpus']} CPUs; at most {pod['replicas']}), "
        f"${usd_pod_hour:.2f} a pod-hour at the config's ${cfg['usd_per_gpu_hour']:.2f} a GPU-hour.",
        f"A note: {note_tokens} tokens (MEDDOCAN train's mean, {mean_chars:,.0f} characters, at "
        f"4 a token). Generator FLOR-6.3B ({shape.params / 1e9:.2f}B parameters); annotator and "
        f"synthetic NER RoBERTa-base ({enc_params / 1e6:.0f}M), windows of "
        f"{ann['max_length']} with stride {ann['stride']} (each token tagged "
        f"{tokens['window_overlap']:.2f} times).",
        "",
        "**Measured:** clean-up, audit and the NER notes cut into windows, CPU-seconds per note "
        "on this project's benchmark machine: "
        + "; ".join(
            f"{CPU_STAGES[k]} {v[0] * 1000:.2f} ms (at {v[1]:,} notes)"
            for k, v in sorted(costs.items())
            if k in CPU_STAGES
        )
        + f"; an annotator actor's own work outside the model (tokenizing, decoding spans, "
        f"building its shard; one core) {costs['annotate_actor'][0] * 1000:.2f} ms a note, "
        "added to its GPU time.",
        "",
        f"**Computed, not measured** (no GPU here): decoding on one {GPU['name']} "
        f"({GPU['bandwidth_gb_s']} GB/s): {d['kv_cache_gib']:.1f} GiB of KV cache beside the "
        f"weights holds {d['live_sequences']} live sequences; a step reads weights and cache in "
        f"{d['step_ms']:.1f} ms; at an assumed {DECODE_EFFICIENCY:.0%} of that roofline, "
        f"{d['tokens_per_s']:,.0f} tokens/s per engine. Encoder passes at an assumed "
        f"{ENCODER_MFU:.0%} of {GPU['bf16_tflops']} bf16 TFLOPS.",
        "",
        "| notes | stage | holds | pods | hours | pod-hours | USD |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, rows in plans.items():
        for stage, held, pods, hours, pod_hours in rows:
            lines.append(
                f"| {n:,} | {stage} | {held} | {pods} | {hours:,.1f} | {pod_hours:,.1f} "
                f"| {pod_hours * usd_pod_hour:,.0f} |"
            )
        total = sum(r[4] for r in rows)
        lines.append(f"| {n:,} | **all** | | | | **{total:,.1f}** | {total * usd_pod_hour:,.0f} |")
    rows = plans[args.notes[0]]
    total = sum(r[4] for r in rows)
    shares = ", ".join(f"{stage} {pod_hours / total:.2%}" for stage, _, _, _, pod_hours in rows)
    lines += [
        "",
        f"Shares of the pod-hours (the same at every size: every stage is linear in the notes): "
        f"{shares}.",
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
