"""The seed's entry points at the repository root (``*.sh``) run the CLI unchanged."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.harness import proc as procs

REPO_ROOT = Path(__file__).resolve().parents[2]
DOMAIN = "registry.example.com"


def shell(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = procs.clean_env(drop_prefixes=("REGISTRY_", "DOCKERHUB_", "GHCR_", "QUAY_"))
    return subprocess.run(
        ["sh", "-c", command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_registry_cache_sh_registries_as_the_seed_runs_it(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"REGISTRY_DOMAIN={DOMAIN}\n")
    result = shell(f"{REPO_ROOT}/registry-cache.sh registries > registries.yaml", tmp_path)
    assert result.returncode == 0, result.stderr
    doc = yaml.safe_load((tmp_path / "registries.yaml").read_text())
    assert doc["mirrors"]["docker.io"]["endpoint"] == [f"http://docker.io.{DOMAIN}:5000"]


def test_registry_cache_sh_passes_the_exit_status_and_one_line(tmp_path: Path) -> None:
    result = shell(f"{REPO_ROOT}/registry-cache.sh registries", tmp_path)  # no domain
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "needs a domain" in result.stderr


def test_every_root_shim_is_executable() -> None:
    for name in ("registry-cache.sh", "benchmark-cache.sh", "compare-paths.sh"):
        assert (REPO_ROOT / name).stat().st_mode & 0o111, name
