"""``registry-cache serve`` refuses bad input with one line and a non-zero exit."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_", "DOCKERHUB_"))}
    env["PYTHONPATH"] = str(SRC)
    return subprocess.run(
        [sys.executable, "-m", "registry_cache", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--tag-ttl", "soon"], "tag_ttl (--tag-ttl soon): invalid duration 'soon'"),
        (["--listen", "nowhere"], "listen (--listen nowhere): invalid listen address"),
        (["--upstream", "docker.io=ftp://x"], "upstreams.docker.io.url"),
        (["--default-upstream", "nope.example"], "default_upstream"),
        (["--max-size", "lots"], "max_size"),
        (["--upstream", "justaname"], "expected NAME=URL"),
    ],
)
def test_bad_flags_are_one_line_exit_2(tmp_path: Path, args: list[str], expected: str) -> None:
    result = run("serve", "--data-dir", str(tmp_path / "d"), *args, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "d").exists()  # nothing created before the config was valid


def test_bad_dotenv_value_names_the_key(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("REGISTRY_CACHE_WORKERS=many\n")
    result = run("serve", cwd=tmp_path)
    assert result.returncode == 2 and "workers" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_address_in_use_is_one_line_exit_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run(
            "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "d"),
            cwd=tmp_path,
        )  # fmt: skip
    assert result.returncode == 1
    assert "cannot listen on 127.0.0.1" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [["serve"], ["containerd-hosts", "--out", "hosts.d"]])
def test_credentials_in_an_upstream_url_stop_every_command(
    tmp_path: Path, command: list[str]
) -> None:
    url = "https://robot:hunter2-pw@reg.example"
    result = run(
        *command, "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "d"),
        "--upstream", f"reg.example={url}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "registry-cache: invalid configuration: upstreams.reg.example.url: credentials in the "
        "URL are not allowed; use upstreams.reg.example.username/password"
    )
    assert "hunter2" not in result.stdout + result.stderr
    assert not (tmp_path / "d").exists() and not (tmp_path / "hosts.d").exists()
