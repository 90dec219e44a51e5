"""`sdeid model init`: a small Llama trained from scratch stands in for a pretrained LLM.

On machines with no pretrained causal LM (no model hub here), the generator is built from a
named size preset with a byte-level BPE tokenizer trained on the corpus, saved as an ordinary
Hugging Face model folder, and then trained by `sdeid adapt` with method `full`. On a cluster,
skip this: point `adapt` at any local causal LM and use LoRA.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LlamaPreset:
    hidden: int
    layers: int
    heads: int
    vocab: int
    context: int

    @property
    def intermediate(self) -> int:
        return int(self.hidden * 8 / 3 / 32 + 1) * 32  # SwiGLU's usual 8/3, rounded up to 32


PRESETS = {
    # Unit tests: builds in a second, trains in seconds.
    "tiny": LlamaPreset(hidden=64, layers=2, heads=2, vocab=512, context=128),
    # 5.7M parameters: the STACK.md baseline (template right, narrative word salad at 10 min).
    "cpu-small": LlamaPreset(hidden=256, layers=4, heads=4, vocab=6000, context=512),
    # The 2-core MEDDOCAN generator: see benchmarks/results/adapt_meddocan.md for why.
    "cpu": LlamaPreset(hidden=384, layers=4, heads=6, vocab=8000, context=512),
}

# Head sizes vLLM's CPU attention kernels support (vllm/v1/attention/backends/cpu_attn.py).
VLLM_CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)

SPECIAL = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}


def train_bpe_tokenizer(texts, vocab_size: int):
    """Byte-level BPE (no unknown characters, accents kept), adding <s> in front of each text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=list(SPECIAL.values()),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL)


def llama_config(preset: str, **token_ids):
    """The preset's LlamaConfig (vocab_size defaults to the preset's; the tokenizer trained on
    a corpus may have fewer entries). Dry runs plan from it before the model exists."""
    from transformers import LlamaConfig

    p = PRESETS[preset]
    return LlamaConfig(
        **{"vocab_size": p.vocab, **token_ids},
        hidden_size=p.hidden,
        intermediate_size=p.intermediate,
        num_hidden_layers=p.layers,
        num_attention_heads=p.heads,
        num_key_value_heads=p.heads,
        max_position_embeddings=p.context,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        torch_dtype="float32",
        architectures=["LlamaForCausalLM"],
    )


def build_llama(out_dir, texts, preset: str, seed: int = 0) -> Path:
    """Train the tokenizer on `texts`, build a randomly initialised Llama, save both."""
    import torch
    from transformers import LlamaForCausalLM

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: {sorted(PRESETS)}")
    p = PRESETS[preset]
    if p.hidden // p.heads not in VLLM_CPU_HEAD_SIZES:
        raise ValueError(
            f"preset {preset}: head size {p.hidden // p.heads} is not one vLLM's "
            f"CPU kernels support {VLLM_CPU_HEAD_SIZES}"
        )
    out_dir = Path(out_dir)
    tokenizer = train_bpe_tokenizer(texts, p.vocab)
    torch.manual_seed(seed)
    config = llama_config(
        preset,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(out_dir)
    tokenizer.model_max_length = p.context
    tokenizer.save_pretrained(out_dir)
    return out_dir


# LoRA targets per family: the attention and MLP projections, by each family's own names.
LORA_TARGETS = {
    "llama": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "qwen2": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "bloom": ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"),
}


def build_tiny_causal_lm(out_dir, texts, family: str, dtype: str = "bfloat16", seed: int = 0):
    """A 2-layer random model of a real family (the configs of FLOR = BLOOM, Qwen2, Llama), with
    head size 64 so vLLM's CPU kernels serve it, saved in `dtype` as pretrained models are."""
    import torch
    import transformers

    if family == "llama":
        return build_llama(out_dir, texts, "tiny", seed)
    out_dir = Path(out_dir)
    tokenizer = train_bpe_tokenizer(texts, 512)
    ids = dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if family == "bloom":  # no context length in the config: BLOOM uses ALiBi
        config = transformers.BloomConfig(hidden_size=128, n_layer=2, n_head=2, **ids)
        cls = transformers.BloomForCausalLM
    elif family == "qwen2":
        config = transformers.Qwen2Config(
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=256,
            tie_word_embeddings=True,
            **ids,
        )
        cls = transformers.Qwen2ForCausalLM
    else:
        raise ValueError(f"unknown family {family!r}; known: {sorted(LORA_TARGETS)}")
    torch.manual_seed(seed)
    model = cls(config).to(getattr(torch, dtype))
    model.save_pretrained(out_dir)
    tokenizer.model_max_length = 256
    tokenizer.save_pretrained(out_dir)
    return out_dir
