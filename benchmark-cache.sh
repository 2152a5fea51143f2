#!/bin/sh
# Kept so the seed's command keeps working: everything lives in `registry-cache benchmark`
# (run `registry-cache benchmark --help`). Environment overrides still apply.
here=$(cd "$(dirname "$0")" && pwd)
if [ -x "$here/.venv/bin/registry-cache" ]; then
  exec "$here/.venv/bin/registry-cache" benchmark "$@"
fi
if command -v registry-cache >/dev/null 2>&1; then
  exec registry-cache benchmark "$@"
fi
python=python3
[ -x "$here/.venv/bin/python" ] && python="$here/.venv/bin/python"
PYTHONPATH="$here/src${PYTHONPATH:+:$PYTHONPATH}" exec "$python" -m registry_cache benchmark "$@"
