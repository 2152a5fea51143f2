#!/usr/bin/env bash
# The README's first command: the cache with its embedded defaults (0.0.0.0:5000, ./data
# and the .env of the working directory, docker.io + ghcr.io + quay.io).
# Works on a fresh Debian machine, as root or as a user with sudo: python3-venv is
# installed (apt) only when python3 cannot make a venv. Arguments go to `serve`.
# Usage: bash scripts/run.sh [serve options]   (env: PYTHON, VENV)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$root/scripts/lib.sh"

PYTHON=${PYTHON:-python3}
VENV=${VENV:-$root/.venv}
ensure_venv "$PYTHON" "$VENV"
# Reinstall only when the dependencies changed (the install is editable: src is live).
stamp=$VENV/.registry-cache-installed
want=$(cat "$root/pyproject.toml" "$root/constraints.txt" | cksum)
if [[ ! -x $VENV/bin/registry-cache || ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  "$VENV/bin/python" -m pip install -q -c "$root/constraints.txt" -e "$root"
  echo "$want" >"$stamp"
fi
exec "$VENV/bin/registry-cache" serve "$@"
