#!/bin/sh
# Kept so the seed's command keeps working: everything lives in `registry-cache compare-paths`
# (run `registry-cache compare-paths --help`). Environment overrides still apply.
here=$(cd "$(dirname "$0")" && pwd)
if [ -x "$here/.venv/bin/registry-cache" ]; then
  exec "$here/.venv/bin/registry-cache" compare-paths "$@"
fi
if command -v registry-cache >/dev/null 2>&1; then
  exec registry-cache compare-paths "$@"
fi
python=python3
[ -x "$here/.venv/bin/python" ] && python="$here/.venv/bin/python"
PYTHONPATH="$here/src${PYTHONPATH:+:$PYTHONPATH}" exec "$python" -m registry_cache compare-paths "$@"
