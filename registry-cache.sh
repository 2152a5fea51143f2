#!/bin/sh
# Kept so the seed's commands keep working (`./registry-cache.sh registries > registries.yaml`):
# everything is `registry-cache COMMAND` (run `registry-cache --help`).
here=$(cd "$(dirname "$0")" && pwd)
if [ -x "$here/.venv/bin/registry-cache" ]; then
  exec "$here/.venv/bin/registry-cache" "$@"
fi
if command -v registry-cache >/dev/null 2>&1; then
  exec registry-cache "$@"
fi
python=python3
[ -x "$here/.venv/bin/python" ] && python="$here/.venv/bin/python"
PYTHONPATH="$here/src${PYTHONPATH:+:$PYTHONPATH}" exec "$python" -m registry_cache "$@"
