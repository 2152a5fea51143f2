"""``k3d apply --dry-run`` previews with no Docker daemon and no cluster, for real: once
with no docker binary at all, once with the real docker CLI and no daemon behind it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.harness.cache import cli_env
from tests.harness.require import needs

ARGS = ["k3d", "apply", "dev", "--dry-run", "--host", "cache.lan"]


def run(path: str, extra_env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = cli_env()
    env.update({"PATH": path, **extra_env})
    return subprocess.run(
        [sys.executable, "-m", "registry_cache", *ARGS],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
        check=False,
    )


def assert_preview(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "# registries.yaml for k3d cluster 'dev':" in out
    assert "http://cache.lan:5000" in out
    assert "+ k3d cluster stop dev" in out and "+ k3d cluster start dev" in out
    assert out.splitlines()[-1] == "dry run: nothing changed (nodes not listed of 'dev')"


def test_dry_run_without_docker_on_path(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    result = run(str(empty), {}, tmp_path)
    assert_preview(result)
    assert "docker not found on PATH" in result.stdout


@needs(shutil.which("docker") is not None, "docker CLI not installed: apt-get install docker.io")
def test_dry_run_with_docker_but_no_daemon(tmp_path: Path) -> None:
    docker_dir = str(Path(shutil.which("docker") or "docker").parent)
    # The real docker CLI, pointed at a socket nobody listens on.
    env = {"DOCKER_HOST": f"unix://{tmp_path}/no-daemon.sock", "HOME": str(tmp_path)}
    result = run(docker_dir, env, tmp_path)
    assert_preview(result)
    assert "Cannot connect to the Docker daemon" in result.stdout
