#!/usr/bin/env bash
# The README's second command: the whole suite on a fresh Debian machine, as root (no
# sudo needed) or as a user with sudo. System packages, a pinned venv, lint, types,
# unit tests, then integration tests against real registries and clients.
# The tests start daemons in private mount namespaces, so pytest runs as root: directly,
# or through sudo (without writing root-owned files into the checkout).
# Usage: bash scripts/test.sh [extra pytest args]   (env: PYTHON)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

bash scripts/install-test-deps.sh

PYTHON=${PYTHON:-python3}
ensure_venv "$PYTHON" .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -c constraints.txt -e '.[test]'

echo "== ruff"; .venv/bin/ruff check src tests benchmarks && .venv/bin/ruff format --check src tests benchmarks
echo "== mypy"; .venv/bin/mypy
echo "== pytest"
path="$PATH:/usr/sbin:/sbin"
if [[ $(id -u) -eq 0 ]]; then
  PATH=$path exec .venv/bin/pytest -p no:cacheprovider "$@"
fi
scratch=$(mktemp -d)
trap 'as_root rm -rf "$scratch"' EXIT
as_root env PATH="$path" CI="${CI:-}" PYTHONDONTWRITEBYTECODE=1 \
  HYPOTHESIS_STORAGE_DIRECTORY="$scratch/hypothesis" \
  "$PWD/.venv/bin/pytest" -p no:cacheprovider "$@"
