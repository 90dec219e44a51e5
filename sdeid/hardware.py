"""Whether this process's device computes bfloat16 natively, for the `auto` precision settings.

A GPU with bf16 does; a CPU does with AVX512-BF16 or AMX. Without them torch emulates bf16 in
software: on a 2-core AVX2 EPYC, NER training under bf16 autocast ran at 45 subword tokens/s,
against about 1.6k on the AVX512-BF16 machines the CPU recipe was measured on, where bf16 is
1.3x faster than fp32 (benchmarks/results/ner_precision.md). So `auto` means bf16 where it is
native and float32 elsewhere, decided where the work runs (a worker's node, not the driver's).
"""

from __future__ import annotations

from pathlib import Path

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags() -> set[str]:
    """The processor's feature flags (Linux); empty where /proc/cpuinfo is absent."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def native_bf16(use_gpu: bool) -> bool:
    if use_gpu:
        import torch

        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return any(f in cpu_flags() for f in NATIVE_BF16_FLAGS)


def resolve_precision(setting: str, use_gpu: bool) -> str:
    """`fp32` / `bf16` as given; `auto`: bf16 where native, else fp32."""
    if setting != "auto":
        return setting
    return "bf16" if native_bf16(use_gpu) else "fp32"


def resolve_dtype(setting: str, use_gpu: bool) -> str:
    """A torch dtype name as given; `auto`: bfloat16 where native, else float32. (vLLM's own
    `auto`, the checkpoint's dtype, is not what this means.)"""
    if setting != "auto":
        return setting
    return "bfloat16" if native_bf16(use_gpu) else "float32"
