#!/usr/bin/env bash
# The performance suite on a fresh Debian machine: system packages (docker-registry,
# nginx, wrk, skopeo, ...), the venv, then the suite (`python -m benchmarks`) with your args.
# Usage: scripts/bench.sh [--quick] [--reps N] [--out DIR] [--scenario NAME]...
# Run it on an idle machine: figures from a busy one are noise (check `uptime`).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-deps.sh

PYTHON=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q -c constraints.txt -e . >/dev/null

export PATH="$PATH:/usr/sbin:/sbin"
echo "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores" >&2
exec .venv/bin/python -m benchmarks "$@"
