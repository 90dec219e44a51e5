"""What sdeid needs to know about a causal LM, read from its config.json alone.

The GPU path serves families whose configs disagree on names: BLOOM (FLOR) has no
`max_position_embeddings` and calls its layers `n_layer`; GPT-2 style configs say `n_positions`;
others `seq_length`. Everything here works from the config file (no weights are loaded), so a
dry run can plan a 6B model on a laptop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sdeid.errors import SdeidError

# Config keys that hold a model's trained context length, in the order they are tried.
CONTEXT_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "seq_length",
    "max_sequence_length",
    "max_seq_len",
    "n_ctx",
)

# The ranks vLLM's LoRA accepts for `max_lora_rank` (vllm/config/lora.py, MaxLoRARanks).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def read_model_config(model_dir) -> dict:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise SdeidError(f"{model_dir}: no config.json (not a model folder)")
    return json.loads(path.read_text())


def context_length(config: dict, max_model_len: int, where: str) -> int:
    """The context an engine should use: the model's own, capped by `max_model_len` (0: no cap).

    A model without a trained length (BLOOM's ALiBi) takes `max_model_len`; with neither, the
    caller must say. A long-context model (131k for Llama 3.1) is capped, so an engine does not
    reserve a KV cache for contexts no note needs.
    """
    own = next((int(config[k]) for k in CONTEXT_KEYS if config.get(k)), 0)
    if own and max_model_len:
        return min(own, max_model_len)
    if own or max_model_len:
        return own or max_model_len
    raise SdeidError(
        f"{where}: the model's config has none of {list(CONTEXT_KEYS)} (e.g. BLOOM, which uses "
        "ALiBi): set max_model_len to the context the engine should use"
    )


def vllm_max_lora_rank(rank: int) -> int:
    """The smallest rank vLLM accepts that holds an adapter of rank `rank`."""
    fitting = [r for r in VLLM_LORA_RANKS if r >= rank]
    if not fitting:
        raise SdeidError(f"LoRA rank {rank} is above vLLM's largest max_lora_rank (512)")
    return fitting[0]


def vllm_serves_lora(architecture: str) -> bool:
    """Whether vLLM's implementation of `architecture` takes LoRA adapters (asks vLLM itself)."""
    from vllm.model_executor.models import ModelRegistry
    from vllm.model_executor.models.interfaces import supports_lora

    cls = ModelRegistry._try_load_model_cls(architecture) if architecture else None
    return cls is not None and supports_lora(cls)


@dataclass(frozen=True)
class ModelShape:
    """Sizes the memory plan needs; parameter counts are exact (a model built on `meta`)."""

    architecture: str
    layers: int
    hidden: int
    heads: int
    vocab: int
    params: int
    lora_params: int
    dtype: str


def model_shape(config, lora_targets=(), lora_r: int = 0) -> ModelShape:
    """Build the model from its config (a model folder or a transformers config) on the meta
    device, which takes no memory, and count parameters; LoRA adds r * (in + out) for each
    linear layer whose name ends in a target."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if not hasattr(config, "to_dict"):
        config = AutoConfig.from_pretrained(config)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    params = sum(p.numel() for p in model.parameters())
    lora = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.split(".")[-1] in lora_targets:
            lora += lora_r * (module.in_features + module.out_features)
    return ModelShape(
        architecture=(getattr(config, "architectures", None) or [""])[0],
        layers=config.num_hidden_layers,
        hidden=config.hidden_size,
        heads=config.num_attention_heads,
        vocab=config.vocab_size,
        params=params,
        lora_params=lora,
        dtype=str(getattr(config, "dtype", None) or "float32").removeprefix("torch."),
    )
