"""Generation throughput and memory: naive transformers loop vs batched generate vs sdeid/vLLM.

    .venv/bin/python benchmarks/generate.py throughput --model DIR  # same prompts and budget
    .venv/bin/python benchmarks/generate.py memory --config FILE    # peak RSS at 1k vs 10k notes
    .venv/bin/python benchmarks/generate.py kill --config FILE      # kill -9 a 10k run, rerun

Throughput: the same model, the same prompts (first 3 words of MEDDOCAN dev documents) and the
same budget of new tokens per note, by default the main job's (384, configs/meddocan-cpu.yaml);
tokens/s counts the tokens each backend actually produced (a note may end early at EOS, and a
static batch keeps stepping until its longest note ends). Medians of 3 repeats. The
transformers loops run in this process and are timed once the model is loaded: the naive loop
in float32 (what a first script does), batched `generate` in bfloat16 (faster on this CPU) at
batch 16, 64 and 128; the fastest batched one is the baseline. sdeid/vLLM is the real
`sdeid generate` command. Its engine takes about a minute to start on CPU (and that minute
varies by 15 s from run to run), a fixed cost that a run of millions of notes pays once; so
each repeat runs it twice, on 4 and on 12 copies of the prompts, and the steady rate is the
marginal one, (tokens of the large run - tokens of the small) / (seconds of the large -
seconds of the small): the start, the same in both, cancels, as the transformers loops' model
load is left out of theirs. The rate of the large run whole, start-up included, is reported
beside it. Writes benchmarks/results/generate.json and generate-throughput.md.
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

from md_table import rate_rows  # benchmarks/, beside this script

from sdeid.kill_job import kill_session

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "generate.json"
SDEID = str(Path(sys.executable).parent / "sdeid")
MEDDOCAN_DEV = ROOT.parent / "shared" / "data" / "meddocan" / "dev"
WORK = ROOT / "runs" / "bench-generate"


def _save(part, value):
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data[part] = value
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=2))


def _prompts(n):
    from sdeid.corpus_io import read_corpus
    from sdeid.prompt_plan import first_words

    return [first_words(d.text, 3) for d in read_corpus(str(MEDDOCAN_DEV))[:n]]


def hf_loop(model_dir, prompts, max_new_tokens, batch_size, dtype="float32"):
    """transformers `generate` over the prompts, `batch_size` at a time (1: the naive loop)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval()
    tokens, t0 = 0, time.time()
    for b in range(0, len(prompts), batch_size):
        torch.manual_seed(b)
        enc = tok(prompts[b : b + batch_size], return_tensors="pt", padding=True)
        with torch.inference_mode():
            out = model.generate(
                **enc,
                do_sample=True,
                top_p=0.95,
                temperature=1.0,
                max_new_tokens=max_new_tokens,
                pad_token_id=tok.pad_token_id,
            )
        new = out[:, enc["input_ids"].shape[1] :]
        tokens += int((new != tok.pad_token_id).sum())
    return tokens, time.time() - t0


def sdeid_vllm(model_dir, prompts, max_new_tokens, copies, **engine):
    """`sdeid generate` with vLLM on `copies` copies of the prompts, one shard per batch.
    Returns (output tokens, seconds) of the whole command's generation, engine start included."""
    pf = WORK / f"prompts-x{copies}.txt"
    pf.write_text("\n".join(prompts * copies) + "\n")
    cfg = dict(
        model=str(model_dir),
        prompt_file=str(pf),
        samples_per_prompt=1,
        max_new_tokens=max_new_tokens,
        backend="vllm",
        min_chars=1,
        notes_per_shard=engine["batch_size"],
        **engine,
    )
    (WORK / "vllm.yaml").write_text(json.dumps(cfg))
    out = WORK / "out-vllm"
    subprocess.run(["rm", "-rf", str(out)])
    run = subprocess.run(
        [SDEID, "generate", "--config", str(WORK / "vllm.yaml"), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    (WORK / f"vllm-x{copies}.log").write_text(run.stdout + run.stderr)
    if run.returncode:
        sys.exit(run.stderr[-3000:])
    counts = json.loads((out / "_manifest.json").read_text())["counts"]
    return counts["output_tokens_this_run"], counts["generate_s"]


def throughput(
    model_dir,
    n_prompts,
    max_new_tokens,
    repeats=3,
    hf_batches=(16, 64, 128),
    copies=(4, 12),
    **engine,
):
    WORK.mkdir(parents=True, exist_ok=True)
    prompts = _prompts(n_prompts)
    batched = {f"hf_batched_{b}_bfloat16": b for b in hf_batches}
    names = ["naive_hf_batch1", *batched, "sdeid_vllm_steady", "sdeid_vllm_whole_run_incl_start"]
    rows = {k: [] for k in names}
    runs = []  # (tokens, seconds) of the small and the large sdeid run, per repeat
    for _ in range(repeats):
        t, s = hf_loop(model_dir, prompts, max_new_tokens, 1)
        rows["naive_hf_batch1"].append(t / s)
        for name, batch in batched.items():
            t, s = hf_loop(model_dir, prompts, max_new_tokens, batch, "bfloat16")
            rows[name].append(t / s)
        (t1, s1), (t2, s2) = (
            sdeid_vllm(model_dir, prompts, max_new_tokens, c, **engine) for c in copies
        )
        runs.append({"small": [t1, round(s1, 1)], "large": [t2, round(s2, 1)]})
        rows["sdeid_vllm_steady"].append((t2 - t1) / (s2 - s1))
        rows["sdeid_vllm_whole_run_incl_start"].append(t2 / s2)
        print({k: round(v[-1]) for k, v in rows.items()}, flush=True)
    med = {k: statistics.median(v) for k, v in rows.items()}
    best_batched = max(batched, key=med.get)
    result = {
        "model": str(model_dir),
        "prompts": n_prompts,
        "max_new_tokens": max_new_tokens,
        "engine": engine,
        "tokens_per_s": rows,
        "vllm_copies_of_the_prompts": list(copies),
        "vllm_runs_tokens_seconds": runs,
        "median_tokens_per_s": med,
        "baseline_batched": best_batched,
        "vllm_vs_naive": med["sdeid_vllm_steady"] / med["naive_hf_batch1"],
        "vllm_vs_batched": med["sdeid_vllm_steady"] / med[best_batched],
        "vllm_whole_run_vs_batched": med["sdeid_vllm_whole_run_incl_start"] / med[best_batched],
    }
    print(json.dumps(result, indent=2))
    data = json.loads(RESULTS.read_text()).get("throughput", {}) if RESULTS.exists() else {}
    data = data if "model" not in data else {}  # drop the old single-model layout
    name = Path(model_dir).name
    data["adapted-cpu" if name == "merged" else name] = result
    _save("throughput", data)
    RESULTS.with_name("generate-throughput.md").write_text(throughput_table(result))


def throughput_table(result: dict) -> str:
    base = result["baseline_batched"]
    small, large = result["vllm_copies_of_the_prompts"]
    lines = [
        "# Generation throughput (`benchmarks/generate.py throughput`)",
        "",
        f"`{result['model']}`, the first 3 words of {result['prompts']} MEDDOCAN dev notes, "
        f"{result['max_new_tokens']} new tokens at most per note, top-p 0.95, T 1.0, 2 CPU "
        f"cores; tokens/s, median of {len(result['tokens_per_s'][base])} repeats. sdeid: "
        f"`sdeid generate`, engine {result['engine']}, on {small} and on {large} copies of the "
        f"prompts; steady is the marginal rate between the two runs (tokens_{large} - "
        f"tokens_{small}) / (seconds_{large} - seconds_{small}), the engine start cancelling; "
        f"whole run is the {large}-copy run, engine start included.",
        "",
        *rate_rows(result["tokens_per_s"], base, "tokens/s", 0),
    ]
    lines += [
        "",
        f"sdeid steady vs the naive loop: {result['vllm_vs_naive']:.1f}x (target 5x); vs the "
        f"fastest batched `generate`: {result['vllm_vs_batched']:.2f}x (target 1.5x); the "
        f"{large}-copy run whole: {result['vllm_whole_run_vs_batched']:.2f}x.",
    ]
    return "\n".join(lines) + "\n"


def _generate_watched(config, out, sets=(), kill_after_shards=None):
    """Run `sdeid generate`, sampling the RSS of its process tree every 0.2 s; optionally
    kill -9 the whole tree once `kill_after_shards` shards are done. (peak MB, exit code)."""
    cmd = [SDEID, "generate", "--config", str(config), "--out", str(out)]
    for x in sets:
        cmd += ["--set", x]
    log = open(Path(str(out) + ".log"), "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=log, start_new_session=True)
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, _rss_mb(proc.pid)[1])
        if kill_after_shards and len(list(Path(out, "shards", "_done").glob("*.json"))) >= (
            kill_after_shards
        ):
            kill_session(proc.pid)
            proc.wait()
            break
        time.sleep(0.2)
    return peak, proc.returncode


def memory(config, samples=(4, 40), out_prefix="mem"):
    """Peak RSS of the whole process tree (driver, Ray, engine) at 250 prompts x each sample
    count: 1k and 10k notes with the defaults."""
    result = {}
    for k in samples:
        out = WORK / f"{out_prefix}-{k}"
        subprocess.run(["rm", "-rf", str(out)])
        t0 = time.time()
        peak, rc = _generate_watched(config, out, [f"samples_per_prompt={k}"])
        if rc:
            sys.exit(f"generate failed, see {out}.log")
        m = json.loads((out / "_manifest.json").read_text())
        result[str(k)] = {
            "notes": m["counts"]["notes_raw"],
            "peak_process_tree_rss_mb": round(peak),
            "wall_s": round(time.time() - t0, 1),
            "output_tokens": m["counts"]["output_tokens_this_run"],
            "folder": str(out),
        }
        print(k, result[str(k)], flush=True)
    a, b = (result[str(k)] for k in samples)
    result["growth"] = b["peak_process_tree_rss_mb"] / a["peak_process_tree_rss_mb"]
    result["config"] = str(config)
    print(json.dumps(result, indent=2))
    data = json.loads(RESULTS.read_text()).get("memory", {}) if RESULTS.exists() else {}
    data[Path(config).stem] = result
    _save("memory", data)


def kill_resume(config, samples=40, kill_after_shards=8):
    """A 10k-note run killed with SIGKILL (the whole process group) once some shards are done,
    then the same command again; its note ids against an uninterrupted run's."""
    import pyarrow.parquet as pq

    sets = [f"samples_per_prompt={samples}"]
    whole, killed = WORK / "kill-uninterrupted", WORK / "kill-interrupted"
    for d in (whole, killed):
        subprocess.run(["rm", "-rf", str(d)])
    _, rc = _generate_watched(config, whole, sets)
    _, rc_kill = _generate_watched(config, killed, sets, kill_after_shards)
    done_at_kill = len(list((killed / "shards" / "_done").glob("*.json")))
    partial = [p.name for p in (killed / "shards").iterdir() if p.name.startswith(".")]
    _, rc_rerun = _generate_watched(config, killed, sets)
    rerun_log = Path(str(killed) + ".log").read_text()
    ids = {
        d: pq.read_table(d / "shards", columns=["doc_id"])["doc_id"].to_pylist()
        for d in (whole, killed)
    }
    result = {
        "notes_planned": json.loads((whole / "_manifest.json").read_text())["counts"][
            "notes_planned"
        ],
        "uninterrupted_exit": rc,
        "killed_exit": rc_kill,
        "shards_done_at_kill": done_at_kill,
        "temporaries_left_by_kill": partial,
        "rerun_exit": rc_rerun,
        "rerun_said": [x for x in rerun_log.splitlines() if "shards done" in x][:1],
        "notes_uninterrupted": len(ids[whole]),
        "notes_after_rerun": len(ids[killed]),
        "duplicates": len(ids[killed]) - len(set(ids[killed])),
        "missing": len(set(ids[whole]) - set(ids[killed])),
        "extra": len(set(ids[killed]) - set(ids[whole])),
        "id_sets_equal": set(ids[whole]) == set(ids[killed]),
        "texts_equal": pq.read_table(whole / "shards").sort_by("doc_id")["text"].to_pylist()
        == pq.read_table(killed / "shards").sort_by("doc_id")["text"].to_pylist(),
    }
    print(json.dumps(result, indent=2))
    _save("kill_resume", result)


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
    ap.add_argument("part", choices=["throughput", "memory", "kill"])
    ap.add_argument("--model", default=str(ROOT / "runs" / "adapt-meddocan" / "merged"))
    ap.add_argument("--config", help="memory, kill: a generate config (250 prompts)")
    ap.add_argument("--prompts", type=int, default=128)
    ap.add_argument("--max-new-tokens", type=int, default=384)
    ap.add_argument("--max-num-seqs", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--cpus-per-engine", type=float, default=2)
    ap.add_argument("--threads-bind", default="0-1", help="vLLM CPU cores for the engine")
    args = ap.parse_args()
    if args.part == "throughput":
        throughput(
            args.model,
            args.prompts,
            args.max_new_tokens,
            max_num_seqs=args.max_num_seqs,
            batch_size=args.batch_size,
            dtype=args.dtype,
            cpus_per_engine=args.cpus_per_engine,
            cpu_threads_bind=args.threads_bind,
        )
    elif args.part == "memory":
        memory(args.config, out_prefix=Path(args.config).stem)
    else:
        kill_resume(args.config)
