"""CLI start-up stays light: ``--help`` and ``registries`` never import the server's or
the benchmark's heavy modules (checked in a fresh interpreter, by sys.modules)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import proc as procs

SRC = Path(__file__).resolve().parents[2] / "src"
PROBE = """
import json, sys
sys.argv = ["registry-cache", *json.loads(sys.argv[1])]
from registry_cache.cli.main import main
try:
    main()
except SystemExit:
    pass
sys.stdout.flush()
print("\\nMODULES " + json.dumps(sorted({m.split(".")[0] for m in sys.modules})), file=sys.stderr)
"""
SERVER_SIDE = {"aiohttp", "urllib3", "rich", "bcrypt", "prometheus_client", "sqlite3", "asyncio"}


def imported(args: list[str], cwd: Path) -> set[str]:
    env = procs.clean_env(drop_prefixes=("REGISTRY_", "DOCKERHUB_", "GHCR_", "QUAY_"))
    env["PYTHONPATH"] = str(SRC)
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
        check=True,
    )
    line = next(x for x in result.stderr.splitlines() if x.startswith("MODULES "))
    return set(json.loads(line.removeprefix("MODULES ")))


@pytest.mark.parametrize("args", [["--help"], []])
def test_help_imports_no_heavy_module(args: list[str], tmp_path: Path) -> None:
    modules = imported(args, tmp_path)
    assert "click" in modules  # the probe really ran the CLI
    assert modules.isdisjoint({*SERVER_SIDE, "pydantic", "yaml", "dotenv", "ssl"}), modules


def test_registries_imports_only_what_the_configuration_needs(tmp_path: Path) -> None:
    modules = imported(["registries", "--domain", "example.test"], tmp_path)
    assert "pydantic" in modules  # configuration is validated
    # No config file and no .env here: their parsers are not loaded either.
    light = {*SERVER_SIDE, "yaml", "dotenv", "difflib"}
    assert modules.isdisjoint(light), modules & light
