"""The GPU path computed without a GPU: a model's shape from its config alone, its context
length whatever the config calls it, vLLM's LoRA ranks, and the adaptation's memory and schedule
plan, which refuses a config that cannot fit or whose warm-up outlasts the run."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT
from faults.fault_log import sdeid

from sdeid.adapt import AdaptConfig
from sdeid.adapt_plan import GIB, memory_per_gpu, schedule
from sdeid.config import ConfigError, load_config
from sdeid.errors import SdeidError
from sdeid.lm_arch import context_length, model_shape, vllm_max_lora_rank

FLOR = ROOT / "configs" / "models" / "flor-6.3b"
FLOR_TARGETS = ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h")


def _cfg(**over):
    values = dict(
        corpus="c",
        dev="d",
        base_model=str(FLOR),
        lora_target_modules=list(FLOR_TARGETS),
        precision="bf16",
        num_workers=4,
        context_length=2048,
        micro_batch_size=4,
        gradient_accumulation=4,
        use_gpu=True,
    )
    return AdaptConfig(**{**values, **over})


def test_flor_shape_from_its_config_alone():
    shape = model_shape(FLOR, FLOR_TARGETS, 8)
    assert (shape.layers, shape.hidden, shape.heads, shape.vocab) == (30, 4096, 32, 50257)
    assert shape.params == 6_247_264_256  # BLOOM-7b1's body with a 50k vocabulary
    # LoRA r=8 per layer: qkv 8*(4096+12288) + dense 8*8192 + two MLP 8*(4096+16384)
    assert shape.lora_params == 30 * 8 * (16384 + 8192 + 2 * 20480)


def test_memory_by_part():
    shape = model_shape(FLOR, FLOR_TARGETS, 8)
    plain = memory_per_gpu(_cfg(), shape, checkpointing=False)
    assert plain.weights == shape.params * 2  # bf16, replicated under ZeRO-2
    assert plain.optimizer == shape.lora_params * 12 // 4  # fp32 master + Adam, over 4 ranks
    # Korthikanti et al.: s*b*h*(34 + 5*a*s/h) bytes a layer at 16 bits: 3.56 GiB a layer here
    per_layer = 2048 * 4 * 4096 * (34 + 5 * 32 * 2048 / 4096)
    assert plain.activations == int(30 * per_layer)
    assert 100 < plain.activations / GIB < 110
    ckpt = memory_per_gpu(_cfg(), shape, checkpointing=True)
    assert ckpt.activations == int(30 * 2 * 2048 * 4 * 4096 + per_layer)
    zero3 = memory_per_gpu(_cfg(zero_stage=3), shape, checkpointing=True)
    assert zero3.weights == shape.params * 2 // 4


def test_schedule_counts_steps_and_tops_up_the_last_batch():
    s = schedule(_cfg(), tokens=355_516)  # MEDDOCAN train at 4 characters a token
    assert (s.blocks, s.blocks_per_step, s.steps_per_epoch) == (173, 64, 3)
    assert schedule(_cfg(epochs=3), tokens=355_516).total_steps == 9
    assert schedule(_cfg(epochs=3, max_steps=5), tokens=355_516).total_steps == 5


def test_context_length_by_any_name_capped():
    assert context_length({"max_position_embeddings": 131072}, 2048, "m") == 2048
    assert context_length({"n_positions": 1024}, 2048, "m") == 1024
    assert context_length({"seq_length": 4096}, 0, "m") == 4096
    assert context_length({"n_layer": 30}, 2048, "m") == 2048  # BLOOM: ALiBi, no length
    with pytest.raises(SdeidError, match="set max_model_len"):
        context_length({"n_layer": 30}, 0, "generator x")


def test_vllm_lora_ranks():
    assert [vllm_max_lora_rank(r) for r in (4, 8, 12, 300)] == [8, 8, 16, 320]
    with pytest.raises(SdeidError, match="above vLLM's largest"):
        vllm_max_lora_rank(600)


def test_fp16_under_ddp_is_refused(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text(
        json.dumps(dict(corpus="c", dev="d", base_model="b", precision="fp16", strategy="ddp"))
    )
    with pytest.raises(ConfigError, match="fp16 needs loss scaling"):
        load_config(AdaptConfig, path)


def test_dry_run_prints_the_plan_and_refuses_what_cannot_fit(lm_corpus, tmp_path):
    _, train, dev, _ = lm_corpus
    path = tmp_path / "gpu.yaml"
    base = dict(
        corpus=str(train),
        dev=str(dev),
        base_model=str(FLOR),
        lora_target_modules=list(FLOR_TARGETS),
        precision="bf16",
        num_workers=4,
        use_gpu=True,
        context_length=128,
        micro_batch_size=1,
        warmup_steps=1,
        gpu_memory_gib=24,
    )
    path.write_text(json.dumps(base))
    ok = sdeid("adapt", "--config", path, "--out", tmp_path / "o", "--dry-run")
    assert ok.returncode == 0, ok.stderr[-2000:]
    plan = json.loads(ok.stdout)["plan"]
    assert plan["fits"] and plan["schedule"]["tokens_estimated"]  # no tokenizer in FLOR's folder

    big = sdeid(
        "adapt", "--config", path, "--out", tmp_path / "o", "--dry-run",
        "--set", "context_length=2048", "--set", "micro_batch_size=4",
    )  # fmt: skip
    assert big.returncode == 2
    assert "more than gpu_memory_gib 24.0 (gradient_checkpointing: true would need" in big.stderr
    assert "activations" in big.stderr

    estimated = sdeid(
        "adapt", "--config", path, "--out", tmp_path / "o", "--dry-run",
        "--set", "warmup_steps=500",
    )  # fmt: skip
    assert estimated.returncode == 0, estimated.stderr[-2000:]  # tokens estimated: a warning
    assert "warmup_steps 500 > the run's" in json.loads(estimated.stdout)["plan"]["warnings"][0]


def test_a_warmup_longer_than_the_run_is_refused_before_work(lm_corpus, tmp_path):
    _, train, dev, base = lm_corpus
    path = tmp_path / "a.yaml"
    cfg = dict(corpus=str(train), dev=str(dev), base_model=str(base), warmup_steps=500)
    path.write_text(json.dumps(cfg))
    run = sdeid("adapt", "--config", path, "--out", tmp_path / "o")
    assert run.returncode == 2
    assert "warmup_steps 500 > the run's" in run.stderr
    assert "the learning rate never reaches its peak" in run.stderr
    assert not (tmp_path / "o").exists()  # refused before any work, with the counted tokens
