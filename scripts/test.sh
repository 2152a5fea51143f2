#!/usr/bin/env bash
# The whole suite on a fresh Debian machine: system packages, a pinned venv,
# lint, types, unit tests, then integration tests against real registries and clients.
# Usage: scripts/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-deps.sh

PYTHON=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -c constraints.txt -e '.[test]'

echo "== ruff"; .venv/bin/ruff check src tests benchmarks && .venv/bin/ruff format --check src tests benchmarks
echo "== mypy"; .venv/bin/mypy
echo "== pytest"
export PATH="$PATH:/usr/sbin:/sbin"
exec .venv/bin/pytest -p no:cacheprovider "$@"
