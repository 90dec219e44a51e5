"""The GPU path's architectures on CPU: tiny random models built from the real configurations of
Llama, BLOOM (FLOR's architecture) and Qwen2, each adapted with LoRA under DeepSpeed ZeRO on 2
Ray Train workers in bf16 with gradient checkpointing, killed (-9) after a checkpoint and resumed,
exported in the base model's own dtype, and served by vLLM: the merged model always, the LoRA
adapter where vLLM's implementation takes adapters (refused with the reason where it does not).

Every architecture runs under ZeRO-2 and ZeRO-3 (3 minutes a cell on 2 cores); CI runs the cell
in CI_CELLS (it also reloads the adapter with PEFT against the merged model) and the rest are
marked slow (`.venv/bin/python -m pytest -m slow` runs them, and tests/test_adapt.py's Llama
under ZeRO-2). Each cell appends its row to the file named by
SDEID_ARCH_LOG (JSON lines), from which benchmarks/results/architectures.md is made.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT, toy_notes
from faults.fault_log import kill_when, registered_metric, sdeid

FAMILIES = ("llama", "bloom", "qwen2")
CI_CELLS = {("bloom", 3)}  # FLOR's architecture under the stage that used to hang
CELLS = [
    pytest.param(f, z, id=f"{f}-zero{z}", marks=() if (f, z) in CI_CELLS else pytest.mark.slow)
    for f in FAMILIES
    for z in (2, 3)
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from sdeid.brat import write_brat

    root = tmp_path_factory.mktemp("arch")
    return write_brat(toy_notes(copies=30), root / "train"), write_brat(toy_notes(2), root / "dev")


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    from sdeid.causal_lm_init import build_tiny_causal_lm

    root = tmp_path_factory.mktemp("bases")
    texts = [n.text for n in toy_notes(copies=3)]
    return {f: build_tiny_causal_lm(root / f, texts, f) for f in FAMILIES}


# Loads the merged model in vLLM and generates; then, where vLLM serves LoRA for the
# architecture, the base model with the adapter. One process, engines one after the other.
VLLM_SCRIPT = """
import json, os, sys
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
if __name__ == "__main__":
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest
    from sdeid.lm_arch import context_length, read_model_config, vllm_max_lora_rank
    merged, base, adapter, serves = sys.argv[1:5]
    params = SamplingParams(max_tokens=12, seed=1, temperature=1.0, top_p=0.95)
    ctx = context_length(read_model_config(merged), 128, merged)
    llm = LLM(model=merged, dtype="auto", enforce_eager=True, max_model_len=ctx)
    out = {"merged": len(llm.generate(["Paciente de"], params)[0].outputs[0].token_ids)}
    print("MERGED", json.dumps(out), flush=True)
    if serves == "1":
        del llm
        rank = json.load(open(os.path.join(adapter, "adapter_config.json")))["r"]
        llm = LLM(model=base, dtype="auto", enforce_eager=True, max_model_len=ctx,
                  enable_lora=True, max_lora_rank=vllm_max_lora_rank(rank), max_loras=1)
        res = llm.generate(["Paciente de"], params, lora_request=LoRARequest("a", 1, adapter))
        print("ADAPTER", json.dumps({"adapter": len(res[0].outputs[0].token_ids)}), flush=True)
"""


def _adapt_config(path, train, dev, base, family, zero_stage):
    from sdeid.causal_lm_init import LORA_TARGETS

    path.write_text(
        json.dumps(
            dict(
                corpus=str(train),
                dev=str(dev),
                base_model=str(base),
                method="lora",
                lora_r=8,
                lora_target_modules=list(LORA_TARGETS[family]),
                strategy="deepspeed",
                zero_stage=zero_stage,
                precision="bf16",
                gradient_checkpointing=True,
                num_workers=2,
                cpus_per_worker=1.0,
                context_length=64,
                epochs=2,
                micro_batch_size=2,
                learning_rate=1e-2,
                warmup_steps=2,
                checkpoint_every=3,
                log_every=2,
            )
        )
    )
    return path


def _log_row(row):
    path = os.environ.get("SDEID_ARCH_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")


@pytest.mark.parametrize("family,zero_stage", CELLS)
def test_adapt_resume_export_and_serve(family, zero_stage, corpus, bases, tmp_path):
    import torch

    from sdeid.lm_arch import read_model_config, vllm_serves_lora

    train, dev = corpus
    base = bases[family]
    cfg = _adapt_config(tmp_path / "adapt.yaml", train, dev, base, family, zero_stage)
    out = tmp_path / "adapt"
    ckpts = out / "ray" / "adapt"
    snapshot = ckpts / "checkpoint_manager_snapshot.json"
    kill_when(
        ["adapt", "--config", cfg, "--out", out], lambda: registered_metric(snapshot, "step") > 0
    )
    run = sdeid("adapt", "--config", cfg, "--out", out)
    assert run.returncode == 0, run.stderr[-3000:]
    resumed = re.search(r"\[adapt\] resumed at optimizer step (\d+)", run.stdout + run.stderr)
    assert resumed, "the rerun did not resume"
    metrics = json.loads((out / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["dev_by_epoch"]] == [1, 2]

    # The DeepSpeed checkpoint holds the trainable (LoRA) weights only, not the frozen base.
    latest = max(p for p in ckpts.glob("checkpoint_*") if p.is_dir())
    states = list(latest.glob("engine/*model_states.pt"))  # one per rank under ZeRO-3
    assert states
    for path in states:
        module = torch.load(path, map_location="cpu", weights_only=False)["module"] or {}
        # A tied output embedding (Llama's tie_word_embeddings) is an alias DeepSpeed keeps.
        frozen = [k for k in module if "lora_" not in k and not k.endswith("lm_head.weight")]
        assert not frozen, frozen[:3]

    base_dtype = read_model_config(base)["dtype"]
    merged_dtype = read_model_config(out / "merged")["dtype"]
    assert merged_dtype == base_dtype

    # The adapter reloads with PEFT on the base model and matches the merged model.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[1, 50, 60, 70, 80]])
    with torch.no_grad():
        adapted = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), out / "adapter"
        )(input_ids=ids).logits
        merged = AutoModelForCausalLM.from_pretrained(out / "merged", dtype=torch.float32)
        plain = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        merged_logits, base_logits = merged(input_ids=ids).logits, plain(input_ids=ids).logits
    # merged/ holds W + BA rounded to the base's dtype: much closer to the adapter than the
    # base is, and the adapter did change the model.
    to_merged = (adapted - merged_logits).abs().max().item()
    to_base = (adapted - base_logits).abs().max().item()
    assert to_base > 1e-4 and to_merged < to_base / 4, (to_merged, to_base)

    serves = vllm_serves_lora(read_model_config(base)["architectures"][0])
    (tmp_path / "serve.py").write_text(VLLM_SCRIPT)
    args = [str(out / "merged"), str(base), str(out / "adapter"), "1" if serves else "0"]
    gen = subprocess.run(
        [sys.executable, str(tmp_path / "serve.py"), *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=600,
    )
    lines = dict(x.split(" ", 1) for x in gen.stdout.splitlines() if x[:6] in ("MERGED", "ADAPTE"))
    assert "MERGED" in lines, gen.stderr[-3000:]
    assert json.loads(lines["MERGED"])["merged"] > 0
    if serves:
        assert "ADAPTER" in lines, gen.stderr[-3000:]
        adapter_result = "served"
    else:
        from sdeid.errors import SdeidError
        from sdeid.generate_job import check_vllm_lora

        with pytest.raises(SdeidError, match="vLLM serves no LoRA adapters") as refused:
            check_vllm_lora(read_model_config(base), base, 8)
        adapter_result = f"refused: {refused.value}"
    _log_row(
        dict(
            architecture=read_model_config(base)["architectures"][0],
            zero_stage=zero_stage,
            resume=f"killed after a checkpoint, resumed at step {resumed.group(1)}",
            export_dtype=f"{merged_dtype} (base {base_dtype})",
            checkpoint="LoRA weights only",
            vllm_merged="generated",
            vllm_adapter=adapter_result,
        )
    )
