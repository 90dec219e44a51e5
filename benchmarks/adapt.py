"""Adaptation on MEDDOCAN with the CPU preset: throughput, the main run, kill -9 + resume, samples.

    .venv/bin/python benchmarks/adapt.py throughput   # tokens/s: 1 vs 2 workers, ZeRO-2 vs DDP
    .venv/bin/python benchmarks/adapt.py main         # the configs/adapt-meddocan-cpu.yaml run
    .venv/bin/python benchmarks/adapt.py resume       # kill -9 mid-epoch, rerun, compare
    .venv/bin/python benchmarks/adapt.py samples      # 3 sampled texts from the main run
    .venv/bin/python benchmarks/adapt.py report       # write results/adapt_meddocan.{json,md}

Each part stores its numbers in benchmarks/results/adapt_meddocan.json (merged, so parts can run
at different times); `report` renders the Markdown table from them.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from sdeid.kill_job import kill_session

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "adapt_meddocan.json"
SDEID = str(Path(sys.executable).parent / "sdeid")
BASE = ROOT / "runs" / "llama-cpu"
ENV = {**os.environ, "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}


def _save(part: str, value):
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data[part] = value
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=2))


def _base_model():
    if not (BASE / "config.json").exists():
        subprocess.run(
            [
                SDEID,
                "model",
                "init",
                "--corpus",
                "../shared/data/meddocan/train",
                "--preset",
                "cpu",
                "--out",
                str(BASE),
            ],
            cwd=ROOT,
            check=True,
        )


def _adapt(out, *sets, check=True):
    args = [SDEID, "adapt", "--config", "configs/adapt-meddocan-cpu.yaml", "--out", str(out)]
    for s in sets:
        args += ["--set", s]
    t0 = time.time()
    run = subprocess.run(args, cwd=ROOT, env=ENV, capture_output=True, text=True)
    if check and run.returncode != 0:
        sys.exit(run.stderr[-4000:])
    return time.time() - t0, json.loads((Path(out) / "metrics.json").read_text())


def throughput(steps: int = 20):
    """The same 20 optimizer steps (8 blocks of 512 tokens each, split across workers) under
    each setting; tokens/s is the median over 4-step intervals after the first interval, wall
    time is the training time of the 20 steps. Dev is cut to 5 documents: only speed counts."""
    from sdeid.brat import read_brat, write_brat

    _base_model()
    dev5 = ROOT / "runs" / "bench-adapt" / "dev5"
    if not dev5.exists():
        write_brat(read_brat(ROOT.parent / "shared/data/meddocan/dev")[:5], dev5)
    settings = {
        "ddp_1_worker": [
            "strategy=ddp",
            "num_workers=1",
            "cpus_per_worker=2",
            "micro_batch_size=8",
        ],
        "ddp_2_workers": [
            "strategy=ddp",
            "num_workers=2",
            "cpus_per_worker=1",
            "micro_batch_size=4",
        ],
        "zero2_2_workers": [
            "strategy=deepspeed",
            "zero_stage=2",
            "num_workers=2",
            "cpus_per_worker=1",
            "micro_batch_size=4",
        ],
    }
    out = {}
    for name, sets in settings.items():
        d = ROOT / "runs" / "bench-adapt" / name
        subprocess.run(["rm", "-rf", str(d)])
        wall, m = _adapt(
            d, *sets, f"max_steps={steps}", "log_every=4", "checkpoint_every=1000", f"dev={dev5}"
        )
        rates = [h["tokens_per_s"] for h in m["history"] if "tokens_per_s" in h and h["step"] > 4]
        out[name] = {
            "tokens_per_s_median": statistics.median(rates),
            "tokens_per_s": rates,
            "train_wall_s": m["trained_s"],
            "command_wall_s": wall,
            "tokens": steps * 8 * 512,
        }
        print(name, out[name], flush=True)
    _save("throughput", out)


def main_run():
    _base_model()
    out = ROOT / "runs" / "adapt-meddocan"
    wall, m = _adapt(out)
    _save(
        "main",
        {
            "command": "sdeid adapt --config configs/adapt-meddocan-cpu.yaml --out "
            "runs/adapt-meddocan",
            "wall_s": wall,
            "dev_by_epoch": m["dev_by_epoch"],
            "train_tokens_per_s": m["train_tokens_per_s"],
            "trained_s": m["trained_s"],
        },
    )


def resume(steps: int = 40, kill_after_step: int = 25):
    """Uninterrupted vs killed-after-step-25-and-rerun, same config, 40 steps of the first
    epoch (83 steps), checkpoints every 10 steps; dev loss on the first 25 dev documents."""
    from sdeid.brat import read_brat, write_brat

    _base_model()
    dev25 = ROOT / "runs" / "bench-adapt" / "dev25"
    if not dev25.exists():
        write_brat(read_brat(ROOT.parent / "shared/data/meddocan/dev")[:25], dev25)
    sets = [f"max_steps={steps}", "checkpoint_every=10", "log_every=5", f"dev={dev25}"]
    a = ROOT / "runs" / "bench-adapt" / "uninterrupted"
    b = ROOT / "runs" / "bench-adapt" / "killed"
    for d in (a, b):
        subprocess.run(["rm", "-rf", str(d)])
    _, ma = _adapt(a, *sets)
    args = [SDEID, "adapt", "--config", "configs/adapt-meddocan-cpu.yaml", "--out", str(b)]
    for s in sets:
        args += ["--set", s]
    proc = subprocess.Popen(
        args,
        cwd=ROOT,
        env=ENV,
        start_new_session=True,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    killed_at = None
    for line in proc.stdout:
        m = re.search(r"\[adapt\] epoch \d+ step (\d+)/", line)
        if m and int(m.group(1)) >= kill_after_step:
            killed_at = int(m.group(1))
            kill_session(proc.pid)
            break
    proc.wait()
    run = subprocess.run(args, cwd=ROOT, env=ENV, capture_output=True, text=True)
    resumed = re.search(r"resumed at optimizer step (\d+)", run.stdout + run.stderr)
    mb = json.loads((b / "metrics.json").read_text())
    result = {
        "steps": steps,
        "killed_after_step": killed_at,
        "resumed_at_step": int(resumed.group(1)) if resumed else None,
        "final_dev_loss_uninterrupted": ma["dev_by_epoch"][-1]["dev_loss"],
        "final_dev_loss_resumed": mb["dev_by_epoch"][-1]["dev_loss"],
    }
    print(result)
    _save("resume", result)


def samples(n: int = 30, show: int = 3, max_new_tokens: int = 400):
    """Sample n notes (prompt: first 3 words of a dev note; top-p 0.95, T 1.0), keep `show` for
    the report, and measure PHI in all n with the gold NER model against the same dev notes cut
    to the same lengths: PHI spans per 1,000 characters, overall and by label."""
    from collections import Counter

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sdeid.corpus_io import read_corpus
    from sdeid.ner_predict import NerTagger
    from sdeid.prompt_plan import first_words
    from sdeid.schema import Note

    model_dir = ROOT / "runs" / "adapt-meddocan" / "merged"
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    dev = read_corpus(str(ROOT.parent / "shared/data/meddocan/dev"))[:n]
    prompts = [first_words(d.text, 3) for d in dev]
    torch.manual_seed(0)
    texts = []
    for b in range(0, n, 10):
        enc = tok(prompts[b : b + 10], return_tensors="pt", padding=True)
        with torch.inference_mode():
            out = model.generate(
                **enc,
                do_sample=True,
                top_p=0.95,
                temperature=1.0,
                max_new_tokens=max_new_tokens,
                pad_token_id=tok.pad_token_id,
            )
        texts += tok.batch_decode(out, skip_special_tokens=True)
    real = [d.text.lstrip("\ufeff")[: len(t)] for d, t in zip(dev, texts, strict=True)]
    tagger = NerTagger(ROOT / "runs" / "ner-meddocan" / "model")

    def phi(docs):
        tagged = tagger.tag([Note(f"d{i}", t) for i, t in enumerate(docs)])
        labels = Counter(s.label for x in tagged for s in x.spans)
        chars = sum(len(t) for t in docs)
        return {
            "chars": chars,
            "spans_per_1k_chars": 1000 * sum(labels.values()) / chars,
            "by_label_per_1k_chars": {
                k: round(1000 * v / chars, 3) for k, v in labels.most_common()
            },
        }

    _save(
        "samples",
        {
            "prompts": prompts[:show],
            "texts": texts[:show],
            "top_p": 0.95,
            "temperature": 1.0,
            "n_measured": n,
            "phi_synthetic": phi(texts),
            "phi_real_dev_same_lengths": phi(real),
        },
    )
    for t in texts[:show]:
        print(t, "\n---")


def report():
    data = json.loads(RESULTS.read_text())
    lines = ["# Adaptation on MEDDOCAN (CPU preset, 2 cores)", ""]
    if "main" in data:
        m = data["main"]
        lines += [
            f"Command: `{m['command']}` ({m['wall_s'] / 60:.1f} min wall, "
            f"{m['train_tokens_per_s']:.0f} tokens/s)",
            "",
            "| epoch | step | dev loss/token | dev perplexity | dev bits/char |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {e['epoch']} | {e['step']} | {e['dev_loss']:.3f} | {e['dev_perplexity']:.1f} | "
            f"{e['dev_bits_per_char']:.3f} |"
            for e in m["dev_by_epoch"]
        ]
        lines.append("")
    if "throughput" in data:
        lines += [
            "## Throughput (the same 20 steps of 8 x 512 tokens; median over 4-step intervals)",
            "",
            "| setting | tokens/s | training wall s |",
            "|---|---|---|",
        ]
        lines += [
            f"| {k} | {v['tokens_per_s_median']:.0f} | {v['train_wall_s']:.1f} |"
            for k, v in data["throughput"].items()
        ]
        lines.append("")
    if "resume" in data:
        r = data["resume"]
        lines += [
            "## kill -9 and resume",
            "",
            f"Killed after step {r['killed_after_step']}, resumed at step "
            f"{r['resumed_at_step']}; final dev loss {r['final_dev_loss_resumed']:.4f} vs "
            f"{r['final_dev_loss_uninterrupted']:.4f} uninterrupted ({r['steps']} steps).",
            "",
        ]
    if "samples" in data:
        sm = data["samples"]
        syn, real = sm["phi_synthetic"], sm["phi_real_dev_same_lengths"]
        lines += [
            f"## PHI in {sm['n_measured']} samples, tagged by the gold NER model",
            "",
            "| | PHI spans per 1,000 characters | characters |",
            "|---|---|---|",
            f"| synthetic | {syn['spans_per_1k_chars']:.2f} | {syn['chars']} |",
            f"| real dev notes, same lengths | {real['spans_per_1k_chars']:.2f} | "
            f"{real['chars']} |",
            "",
            "| label | synthetic per 1k chars | real per 1k chars |",
            "|---|---|---|",
        ]
        by_syn, by_real = syn["by_label_per_1k_chars"], real["by_label_per_1k_chars"]
        for lab in sorted(set(by_syn) | set(by_real), key=lambda k: -by_real.get(k, 0)):
            lines.append(f"| {lab} | {by_syn.get(lab, 0):.2f} | {by_real.get(lab, 0):.2f} |")
        lines += [
            "",
            "## Samples (top-p 0.95, temperature 1.0, prompt = first 3 words of a dev note)",
            "",
        ]
        for t in data["samples"]["texts"]:
            lines += ["```", t.strip(), "```", ""]
    (RESULTS.with_suffix(".md")).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    {
        "throughput": throughput,
        "main": main_run,
        "resume": resume,
        "samples": samples,
        "report": report,
    }[sys.argv[1]]()
