#!/usr/bin/env bash
# The whole test suite (README.md's test command): installs if needed, lints, runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
"$PYTHON" -c "import tyllm, tvm, vllm" 2>/dev/null || bash scripts/install.sh
"$PYTHON" -m ruff check .
"$PYTHON" -m pytest -q -ra --durations=30 "$@"
