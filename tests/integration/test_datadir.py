"""A data directory that is read-only, full or not a directory: one line naming it
(absolute, with the flag or variable that set it) and a non-zero exit, for ``serve``,
``warm`` and ``cache …``; ``cache ls``/``du`` still read a read-only copy.

The directory is filled by ``warm`` from a real docker-registry; read-only is a
read-only bind mount and full a filled tmpfs, each in a private mount namespace.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness.cache import cli_env
from tests.harness.images import build_index
from tests.harness.mounts import available, full_argv, readonly_argv
from tests.harness.push import push_image
from tests.harness.registry import UpstreamRegistry
from tests.harness.require import require

CLI = [sys.executable, "-m", "registry_cache"]
LOCAL = ["--listen", "127.0.0.1:0", "--upstream", "ghcr.io=none", "--upstream", "quay.io=none"]
WRITERS = [
    ["serve", *LOCAL],
    ["warm", "--upstream", "docker.io=http://127.0.0.1:9", "alpine:1"],
    ["cache", "gc"],
    ["cache", "prune", "--older-than", "1d"],
    ["cache", "verify"],
]


def run(
    argv: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full = cli_env()
    full.update(env or {})
    return subprocess.run(
        argv, capture_output=True, text=True, env=full, cwd=cwd, timeout=60, check=False
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def filled(make_upstream: Callable[..., UpstreamRegistry], tmp_path: Path) -> Path:
    """A data directory holding library/app:1.0, warmed from a real registry."""
    require(available(tmp_path), "needs mounts in a private mount namespace (root)")
    upstream = make_upstream("none")
    push_image(upstream.url, "library/app", "1.0", build_index("app", layers=2))
    data = tmp_path / "data"
    warmed = run(
        [
            *CLI,
            "warm",
            "--data-dir",
            str(data),
            "--upstream",
            f"docker.io={upstream.url}",
            "app:1.0",
        ],
        tmp_path,
    )
    assert warmed.returncode == 0, warmed.stderr
    return data


@pytest.mark.parametrize("command", WRITERS, ids=lambda c: " ".join(c[:2]))
def test_read_only_data_dir_is_one_line(filled: Path, command: list[str]) -> None:
    argv = readonly_argv(filled, [*CLI, *command, "--data-dir", str(filled)])
    line = one_line(run(argv, filled.parent))
    assert line == (
        f"registry-cache: data directory {filled} (--data-dir {filled}): read-only file system"
    )


def test_ls_and_du_read_a_read_only_copy(filled: Path) -> None:
    ls = run(
        readonly_argv(filled, [*CLI, "cache", "ls", "--json", "--data-dir", str(filled)]),
        filled.parent,
    )
    assert ls.returncode == 0, ls.stderr
    images = json.loads(ls.stdout)["images"]
    assert [(i["repository"], i["tag"], i["complete"]) for i in images] == [
        ("library/app", "1.0", True)
    ]
    du = run(
        readonly_argv(filled, [*CLI, "cache", "du", "--json", "--data-dir", str(filled)]),
        filled.parent,
    )
    assert du.returncode == 0, du.stderr
    assert json.loads(du.stdout)["total"]["objects"] >= 4
    # Nothing was written: no -wal/-shm appeared in the read-only directory.
    assert sorted(p.name for p in filled.glob("index.sqlite3*")) == ["index.sqlite3"]


@pytest.mark.parametrize("command", WRITERS[:2], ids=lambda c: c[0])
def test_full_data_dir_is_one_line(tmp_path: Path, command: list[str]) -> None:
    require(available(tmp_path), "needs mounts in a private mount namespace (root)")
    data = tmp_path / "full"
    data.mkdir()
    line = one_line(run(full_argv(data, [*CLI, *command, "--data-dir", str(data)]), tmp_path))
    assert (
        line
        == f"registry-cache: data directory {data} (--data-dir {data}): the file system is full"
    )


@pytest.mark.parametrize(
    "command",
    [WRITERS[0], WRITERS[1], ["cache", "ls"], ["cache", "du"]],
    ids=lambda c: " ".join(c[:2]),
)
def test_a_file_is_not_a_data_dir(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "plain-file").write_text("x")
    # Relative, from the environment: the message says which variable and the full path.
    result = run([*CLI, *command], tmp_path, env={"REGISTRY_CACHE_DATA_DIR": "plain-file"})
    assert one_line(result) == (
        f"registry-cache: data directory {tmp_path / 'plain-file'} "
        "(REGISTRY_CACHE_DATA_DIR=plain-file): not a directory"
    )


def test_a_missing_data_dir_for_cache_commands(tmp_path: Path) -> None:
    line = one_line(run([*CLI, "cache", "ls", "--data-dir", "nowhere"], tmp_path))
    where = tmp_path / "nowhere"
    assert line == f"registry-cache: data directory {where} (--data-dir nowhere): does not exist"
