"""generate: the prompt plan, Ray Data + vLLM engine actors into shards, resume, clean-up.

The checks of a plain vLLM run (shards, columns, manifest, rerun, another plan refused) are
made on the smoke run's generate stage (tests/test_pipeline.py), so CI starts that engine once."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from conftest import ROOT

from sdeid.config import ConfigError, load_config
from sdeid.dedup import clean_notes
from sdeid.generate import GenerateConfig
from sdeid.prompt_plan import Plan, build_plan, first_words, prompts_from_file


def _config(root, base, prompts, **over):
    cfg = dict(
        model=str(base),
        prompts_from=str(prompts),
        samples_per_prompt=4,
        max_new_tokens=24,
        notes_per_shard=5,
        min_chars=1,
        batch_size=4,
    )
    cfg.update(over)
    path = root / f"gen-{len(list(root.glob('gen-*.yaml')))}.yaml"
    path.write_text(json.dumps(cfg))
    return path


def _sdeid(*args, **kw):
    return subprocess.run(
        [sys.executable, "-m", "sdeid.cli", *args], capture_output=True, text=True, cwd=ROOT, **kw
    )


def _ids(folder):
    return sorted(pq.read_table(folder, columns=["doc_id"])["doc_id"].to_pylist())


def test_plan_is_deterministic_and_sharded():
    prompts = [("a", "Nombre: Ana"), ("b", "Paciente de")]
    plan = build_plan(prompts, 3, run_seed=7, notes_per_shard=4)
    again = build_plan(prompts, 3, run_seed=7, notes_per_shard=4)
    assert plan == again
    assert [r.note_id for r in plan] == [
        "a-s0000",
        "a-s0001",
        "a-s0002",
        "b-s0000",
        "b-s0001",
        "b-s0002",
    ]
    assert [r.shard for r in plan] == [0, 0, 0, 0, 1, 1]
    assert len({r.seed for r in plan}) == 6
    assert build_plan(prompts, 3, run_seed=8, notes_per_shard=4)[0].seed != plan[0].seed
    assert first_words("\ufeffNombre:  Ana\nGarcía López", 3) == "Nombre: Ana García"
    with pytest.raises(ValueError, match="prompt id 'a' occurs more than once"):
        build_plan([("a", "x"), ("a", "y")], 1, 0, 10)


def test_a_plan_computes_any_range_from_indices():
    prompts = tuple((f"p{i}", f"Paciente {i}") for i in range(3))
    plan = Plan(prompts, 3, run_seed=7, notes_per_shard=4)
    every = build_plan(list(prompts), 3, run_seed=7, notes_per_shard=4)
    assert (plan.notes, plan.shards, plan.shard_range(2)) == (9, 3, (8, 9))
    assert plan.rows(3, 7) == every[3:7]
    # Engine batches: consecutive shards cut as one range, a gap starts a new one.
    assert plan.pieces([0, 1, 2], 3) == [(0, 3), (3, 6), (6, 9)]
    assert plan.pieces([0, 2], 3) == [(0, 3), (3, 4), (8, 9)]
    # Ten million notes are 125,000 prompts and four numbers; any row is computed on demand.
    big = Plan(tuple((f"d{i}", "Paciente de") for i in range(125_000)), 80, 0, 1000)
    assert (big.notes, big.shards) == (10_000_000, 10_000)
    last = big.rows(9_999_999, 10_000_000)[0]
    assert (last.note_id, last.shard) == ("d124999-s0079", 9999)


def test_prompt_file_errors(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("Paciente de\n\nNombre:\n")
    with pytest.raises(ValueError, match=r"p.txt:2: empty prompt line"):
        prompts_from_file(f)
    f.write_text("Paciente de\nNombre:\n")
    assert [p for _, p in prompts_from_file(f)] == ["Paciente de", "Nombre:"]


def test_clean_up_counts_each_rule():
    base = "el paciente ingresa en el hospital con dolor abdominal intenso y fiebre alta " * 3
    texts = [
        base,
        base,
        base.replace("fiebre", "tos"),
        "corto",
        "x" * 5000,
        "texto completamente distinto sobre una fractura de cadera en una mujer mayor " * 3,
    ]
    kept, removed = clean_notes(
        [f"n{i}" for i in range(6)], texts, min_chars=20, max_chars=1000, near_dup_threshold=0.5
    )
    assert kept == ["n0", "n5"]
    assert removed == {"too_short": 1, "too_long": 1, "exact_duplicate": 1, "near_duplicate": 1}


@pytest.mark.parametrize(
    "over,message",
    [
        ({"prompt_file": "x.txt"}, "exactly one of prompts_from, prompt_file, unconditional"),
        ({"top_p": 0}, r"top_p must be in \(0, 1\]"),
        ({"backend": "tgi"}, "backend must be 'vllm' or 'hf'"),
        ({"samples": 3}, r"unknown key\(s\) \['samples'\]"),
    ],
)
def test_config_errors(generator, over, message):
    with pytest.raises(ConfigError, match=message):
        load_config(GenerateConfig, _config(*generator, **over))


def test_missing_model_is_named(generator, tmp_path):
    root, _, prompts = generator
    run = _sdeid(
        "generate",
        "--config",
        str(_config(root, tmp_path / "none", prompts)),
        "--out",
        str(tmp_path / "o"),
    )
    assert run.returncode == 2 and "neither an adapt output folder" in run.stderr


def test_lora_adapter_served_by_vllm(generator, tmp_path):
    """use_adapter: vLLM serves the base model with the adapt run's LoRA adapter."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sdeid.manifest import write_manifest

    root, base, prompts = generator
    adapt = tmp_path / "adapt"
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base),
        LoraConfig(r=8, lora_alpha=32, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)  # a trained adapter is non-zero; PEFT initialises B to 0
    model.save_pretrained(adapt / "adapter")
    AutoTokenizer.from_pretrained(base).save_pretrained(adapt / "adapter")
    write_manifest(adapt, "adapt", {"base_model": str(base), "method": "lora"}, {})

    # One Ray Data run: the loop over runs (window_batches) is the annotate stage's too, and
    # tests/test_annotate.py runs it; a second engine start here would double this test.
    cfg = _config(root, adapt, prompts, use_adapter=True, samples_per_prompt=2)
    out = tmp_path / "gen"
    run = _sdeid("generate", "--config", str(cfg), "--out", str(out))
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(_ids(out / "shards")) == 6
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["inputs"]["adapter"]["path"] == str(adapt / "adapter")
    assert manifest["inputs"]["adapt_manifest"]["stage"] == "adapt"
