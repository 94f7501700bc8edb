#!/usr/bin/env bash
# The whole test suite (README.md's test command): installs if needed, lints, runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
"$PYTHON" -c "import tyllm, tvm, vllm, xdist" 2>/dev/null || bash scripts/install.sh
"$PYTHON" -m ruff check .
# Two xdist workers: most tests keep one core busy (compiles, engine starts); files that share
# session fixtures run on one worker (tests/conftest.py::pytest_collection_modifyitems). The
# pytest-benchmark plugin some environments carry is kept off: it only warns under xdist.
"$PYTHON" -m pytest -q -ra --durations=30 -p no:benchmark -n "${TEST_WORKERS:-2}" --dist loadgroup \
  --no-loadscope-reorder "$@"
