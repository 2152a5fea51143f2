"""Piped output (not a terminal) keeps whole names: no "…" at 80 columns, plain columns
without colour codes, for ``cache ls``, ``cache du`` and ``warm``'s summary."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.harness.cache import cli_env
from tests.harness.images import build_image
from tests.harness.push import push_image
from tests.harness.registry import UpstreamRegistry

CLI = [sys.executable, "-m", "registry_cache"]
REPO = "team-with-a-long-name/" + "service-" * 10 + "api"  # 100 characters
TAG = "2024.11.27-build.123456-" + "f" * 20


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = cli_env()
    env.pop("COLUMNS", None)
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=60, check=False
    )


def test_piped_tables_keep_whole_names(
    make_upstream: Callable[..., UpstreamRegistry], tmp_path: Path
) -> None:
    upstream = make_upstream("none")
    push_image(upstream.url, REPO, TAG, build_image("long", layers=1))
    data = ["--data-dir", str(tmp_path / "data"), "--upstream", f"docker.io={upstream.url}"]
    warmed = run("warm", *data, f"{REPO}:{TAG}", cwd=tmp_path)
    assert warmed.returncode == 0, warmed.stderr
    ls = run("cache", "ls", *data, cwd=tmp_path)
    du = run("cache", "du", *data, cwd=tmp_path)
    for result in (warmed, ls, du):
        assert result.returncode == 0, result.stderr
        assert "…" not in result.stdout, result.stdout
        assert "\x1b[" not in result.stdout  # no colour codes in a pipe
    assert f"docker.io/{REPO}:{TAG}" in warmed.stdout
    assert f"{REPO}:{TAG}" in ls.stdout
    row = next(line for line in ls.stdout.splitlines() if REPO in line)
    assert row.split()[0] == f"{REPO}:{TAG}" and row.split()[1].startswith("sha256:")
    assert "unreferenced (gc)" in du.stdout
