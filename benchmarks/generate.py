"""Generation throughput and memory: naive transformers loop vs batched generate vs sdeid/vLLM.

    .venv/bin/python benchmarks/generate.py throughput [--model DIR]  # same prompts and budget
    .venv/bin/python benchmarks/generate.py memory [--model DIR]      # peak RSS at 1k vs 10k notes

The same model, the same prompts (first 3 words of MEDDOCAN dev documents, or toy prompts), and
the same token budget per note (`max_new_tokens`, EOS ignored nowhere: tokens/s counts the tokens
each backend actually produced). Medians of 3 repeats. Writes benchmarks/results/generate.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "generate.json"
SDEID = str(Path(sys.executable).parent / "sdeid")
MEDDOCAN_DEV = ROOT.parent / "shared" / "data" / "meddocan" / "dev"


def _save(part, value):
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data[part] = value
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=2))


def _prompts(n):
    from sdeid.parquet_io import read_corpus
    from sdeid.prompt_plan import first_words

    return [first_words(d.text, 3) for d in read_corpus(str(MEDDOCAN_DEV))[:n]]


def naive_loop(model_dir, prompts, max_new_tokens):
    """One prompt at a time: what a first script would do."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokens, t0 = 0, time.time()
    for i, p in enumerate(prompts):
        torch.manual_seed(i)
        enc = tok(p, return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(
                **enc,
                do_sample=True,
                top_p=0.95,
                temperature=1.0,
                max_new_tokens=max_new_tokens,
                pad_token_id=tok.pad_token_id,
            )
        tokens += out.shape[1] - enc["input_ids"].shape[1]
    return tokens, time.time() - t0


def _config(tmp, model_dir, prompts, max_new_tokens, backend, **extra):
    pf = tmp / "prompts.txt"
    pf.write_text("\n".join(prompts) + "\n")
    cfg = dict(
        model=str(model_dir),
        prompt_file=str(pf),
        samples_per_prompt=1,
        max_new_tokens=max_new_tokens,
        backend=backend,
        min_chars=1,
        notes_per_shard=max(1, len(prompts)),
        **extra,
    )
    path = tmp / f"{backend}.yaml"
    path.write_text(json.dumps(cfg))
    return path


def sdeid_run(tmp, model_dir, prompts, max_new_tokens, backend, **extra):
    """The sdeid command end to end; tokens/s over the generation phase from its manifest."""
    out = tmp / f"out-{backend}"
    subprocess.run(["rm", "-rf", str(out)])
    t0 = time.time()
    run = subprocess.run(
        [
            SDEID,
            "generate",
            "--config",
            str(_config(tmp, model_dir, prompts, max_new_tokens, backend, **extra)),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if run.returncode:
        sys.exit(run.stderr[-3000:])
    counts = json.loads((out / "_manifest.json").read_text())["counts"]
    return counts["output_tokens_this_run"], counts["generate_s"], time.time() - t0


def throughput(model_dir, n_prompts=32, max_new_tokens=128, repeats=3):
    tmp = ROOT / "runs" / "bench-generate"
    tmp.mkdir(parents=True, exist_ok=True)
    prompts = _prompts(n_prompts)
    rows = {"naive_hf_batch1": [], "hf_batched_16": [], "sdeid_vllm": []}
    for _ in range(repeats):
        t, s = naive_loop(model_dir, prompts, max_new_tokens)
        rows["naive_hf_batch1"].append(t / s)
        t, s, _ = sdeid_run(tmp, model_dir, prompts, max_new_tokens, "hf", hf_batch_size=16)
        rows["hf_batched_16"].append(t / s)
        t, s, _ = sdeid_run(
            tmp, model_dir, prompts, max_new_tokens, "vllm", max_num_seqs=64, batch_size=16
        )
        rows["sdeid_vllm"].append(t / s)
        print({k: v[-1] for k, v in rows.items()}, flush=True)
    med = {k: statistics.median(v) for k, v in rows.items()}
    result = {
        "model": str(model_dir),
        "prompts": n_prompts,
        "max_new_tokens": max_new_tokens,
        "tokens_per_s": rows,
        "median_tokens_per_s": med,
        "vllm_vs_naive": med["sdeid_vllm"] / med["naive_hf_batch1"],
        "vllm_vs_batched": med["sdeid_vllm"] / med["hf_batched_16"],
        "note": "sdeid_vllm tokens/s is over the whole generation phase including the "
        "engine start (about 20-40 s on CPU)",
    }
    print(json.dumps(result, indent=2))
    _save("throughput", result)


def memory(model_dir, sizes=(1000, 10000), max_new_tokens=32):
    """Peak RSS of the driver and of the whole process tree, sampled every 0.2 s."""
    tmp = ROOT / "runs" / "bench-generate"
    prompts = _prompts(250)
    out = {}
    for n in sizes:
        per = max(1, n // len(prompts))
        cfg = dict(
            model=str(model_dir),
            prompt_file=str(tmp / "p.txt"),
            samples_per_prompt=per,
            max_new_tokens=max_new_tokens,
            min_chars=1,
            notes_per_shard=500,
        )
        (tmp / "p.txt").write_text("\n".join(prompts) + "\n")
        (tmp / "mem.yaml").write_text(json.dumps(cfg))
        d = tmp / f"mem-{n}"
        subprocess.run(["rm", "-rf", str(d)])
        proc = subprocess.Popen(
            [SDEID, "generate", "--config", str(tmp / "mem.yaml"), "--out", str(d)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        peak_driver = peak_tree = 0
        while proc.poll() is None:
            driver, tree = _rss_mb(proc.pid)
            peak_driver, peak_tree = max(peak_driver, driver), max(peak_tree, tree)
            time.sleep(0.2)
        out[str(n * 1)] = {
            "notes": per * len(prompts),
            "peak_driver_rss_mb": peak_driver,
            "peak_process_tree_rss_mb": peak_tree,
            "exit": proc.returncode,
        }
        print(n, out[str(n)], flush=True)
    a, b = (out[str(s)] for s in sizes)
    out["driver_growth"] = b["peak_driver_rss_mb"] / a["peak_driver_rss_mb"]
    out["tree_growth"] = b["peak_process_tree_rss_mb"] / a["peak_process_tree_rss_mb"]
    _save("memory", out)


def _rss_mb(pid):
    """(RSS of pid, RSS of pid and all its descendants) in MB, from /proc."""
    children = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                ppid = int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(p))
            except (OSError, IndexError, ValueError):
                pass

    def rss(p):
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    total, stack = 0.0, [pid]
    while stack:
        p = stack.pop()
        total += rss(p)
        stack += children.get(p, [])
    return rss(pid), total


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("part", choices=["throughput", "memory"])
    ap.add_argument("--model", default=str(ROOT / "runs" / "adapt-meddocan" / "merged"))
    args = ap.parse_args()
    {"throughput": throughput, "memory": memory}[args.part](args.model)
