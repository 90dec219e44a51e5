"""`auto` precision: bf16 only where the device computes it natively."""

from __future__ import annotations

import pytest

from sdeid import hardware


@pytest.mark.parametrize(
    "flags, precision, dtype",
    [
        ({"avx2", "fma"}, "fp32", "float32"),  # an AVX2 CPU: bf16 would be emulated
        ({"avx512f", "avx512bw"}, "fp32", "float32"),  # AVX-512 without its bf16 extension
        ({"avx512f", "avx512_bf16"}, "bf16", "bfloat16"),
        ({"amx_bf16", "amx_tile"}, "bf16", "bfloat16"),
    ],
)
def test_auto_follows_the_cpu_flags(monkeypatch, flags, precision, dtype):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: flags)
    assert hardware.resolve_precision("auto", use_gpu=False) == precision
    assert hardware.resolve_dtype("auto", use_gpu=False) == dtype
    # An explicit setting is kept, native or not.
    assert hardware.resolve_precision("bf16", use_gpu=False) == "bf16"
    assert hardware.resolve_dtype("float32", use_gpu=False) == "float32"


def test_this_machines_flags_are_read():
    flags = hardware.cpu_flags()
    assert not flags or "fpu" in flags  # Linux lists its flags; elsewhere there are none
    expected = "bf16" if {"avx512_bf16", "amx_bf16"} & flags else "fp32"
    assert hardware.resolve_precision("auto", use_gpu=False) == expected


def test_auto_is_a_valid_setting_for_each_stage():
    from sdeid.annotate import AnnotateConfig
    from sdeid.generate import GenerateConfig
    from sdeid.ner_train import NerTrainConfig

    NerTrainConfig(train="-", base_model="-", precision="auto").check()
    AnnotateConfig(notes="-", model="-", dtype="auto").check()
    GenerateConfig(model="-", prompt_file="-", dtype="auto").check()
    with pytest.raises(ValueError, match="precision must be fp32, bf16 or auto"):
        NerTrainConfig(train="-", base_model="-", precision="fp16").check()
