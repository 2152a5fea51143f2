"""The README's two commands on a fresh Debian machine: as root without sudo, and as a
user with sudo (scripts/lib.sh's ``as_root``), for real: the scripts run under a PATH
whose ``apt-get`` (and ``sudo``) only record what they were asked, as root and as
``nobody`` (``runuser``), so nothing is installed and nothing leaves the machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness.require import require, require_tools

REPO_ROOT = Path(__file__).resolve().parents[2]
# What the scripts call besides apt-get/sudo, linked into the fake PATH.
ESSENTIALS = ("bash", "sh", "env", "id", "cat", "cksum", "dirname", "mkdir", "rm", "touch")
# Every tool some test looks for: install-test-deps.sh must provide each.
TOOLS_TESTS_NEED = (
    "docker-registry", "skopeo", "containerd", "ctr", "podman", "dockerd", "docker",
    "docker-compose", "umoci", "nginx", "iperf3", "wrk", "htpasswd", "systemd-analyze",
    "unshare", "nsenter", "runuser", "mount", "getent", "openssl",
)  # fmt: skip


@dataclass
class FakeSystem:
    root: Path
    log: Path

    def path(self, *, sudo: bool) -> str:
        return str(self.root / ("bin-sudo" if sudo else "bin"))

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


@pytest.fixture
def fake() -> Iterator[FakeSystem]:
    require(os.geteuid() == 0, "runs the scripts as root and as nobody: needs root")
    require_tools("runuser")
    # Not under pytest's 0700 tmp dirs: nobody must reach it.
    root = Path(tempfile.mkdtemp(prefix="rc-scripts-"))
    root.chmod(0o755)
    log = root / "calls.log"
    log.touch()
    log.chmod(0o666)
    bins = root / "bin"
    bins.mkdir()
    for name in ESSENTIALS:
        found = shutil.which(name)
        assert found, name
        (bins / name).symlink_to(found)
    # apt-get records its uid and arguments; installing python3-venv gives the fake
    # python3 its ensurepip.
    (bins / "apt-get").write_text(
        "#!/bin/sh\n"
        f'echo "apt-get uid=$(id -u) $*" >> {log}\n'
        f'case " $* " in *" python3-venv "*) touch {root}/venv-installed ;; esac\n'
    )
    sudo_bins = root / "bin-sudo"
    shutil.copytree(bins, sudo_bins, symlinks=True)
    (sudo_bins / "sudo").write_text(f'#!/bin/sh\necho "sudo uid=$(id -u) $*" >> {log}\n')
    for path in (bins / "apt-get", sudo_bins / "apt-get", sudo_bins / "sudo"):
        path.chmod(0o755)
    try:
        yield FakeSystem(root, log)
    finally:
        shutil.rmtree(root)


def run_script(
    fake: FakeSystem, argv: list[str], *, user: str | None, sudo: bool, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    full = {"PATH": fake.path(sudo=sudo), "HOME": str(fake.root), **env}
    cmd = ["env", "-i", *(f"{k}={v}" for k, v in full.items()), *argv]
    if user is not None:
        cmd = ["runuser", "-u", user, "--", *cmd]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=240, check=False, cwd=fake.root
    )


DEPS = [str(REPO_ROOT / "scripts/install-test-deps.sh")]


def test_install_test_deps_as_root_without_sudo(fake: FakeSystem) -> None:
    result = run_script(fake, ["bash", *DEPS], user=None, sudo=False, env={})
    assert result.returncode == 0, result.stderr
    calls = fake.calls()
    assert calls[0] == "apt-get uid=0 update -qq"
    install = calls[1].split()
    assert install[:2] == ["apt-get", "uid=0"]
    for package in ("docker-compose", "systemd", "python3-venv", "apache2-utils", "iperf3"):
        assert package in install
    assert not any(line.startswith("sudo") for line in calls)


def test_install_test_deps_as_a_user_goes_through_sudo(fake: FakeSystem) -> None:
    result = run_script(fake, ["bash", *DEPS], user="nobody", sudo=True, env={})
    assert result.returncode == 0, result.stderr
    calls = fake.calls()
    assert calls[0].startswith("sudo uid=65534 env DEBIAN_FRONTEND=noninteractive apt-get update")
    assert any("apt-get install" in line and "docker-compose" in line for line in calls)
    assert not any(line.startswith("apt-get") for line in calls)  # never without sudo


def test_a_user_without_sudo_gets_one_line(fake: FakeSystem) -> None:
    result = run_script(fake, ["bash", *DEPS], user="nobody", sudo=False, env={})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "registry-cache: 'env' needs root: run this as root, or install sudo"
    )
    assert fake.calls() == []


def test_install_test_deps_provides_every_tool_the_tests_need() -> None:
    listed = subprocess.run(
        ["bash", *DEPS, "--list"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.split()
    assert set(TOOLS_TESTS_NEED) <= set(listed), set(TOOLS_TESTS_NEED) - set(listed)


@pytest.mark.timeout(280)
def test_run_sh_installs_python3_venv_when_missing_and_serves(fake: FakeSystem) -> None:
    """Command 1 on a fresh Debian as root: no sudo, no python3-venv yet."""
    real = Path(getattr(sys, "_base_executable", sys.executable))
    python = fake.root / "bin" / "python3"
    # Debian's python3 without python3-venv: `import ensurepip` fails until apt ran.
    python.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "-c" ] && [ ! -f {fake.root}/venv-installed ]; then exit 1; fi\n'
        f'exec {real} "$@"\n'
    )
    python.chmod(0o755)
    venv = fake.root / "venv"
    env = {"PYTHON": str(python), "VENV": str(venv)}
    for key in ("PIP_FIND_LINKS", "PIP_DEFAULT_TIMEOUT", "PIP_CERT"):  # the machine's pip setup
        if key in os.environ:
            env[key] = os.environ[key]
    argv = ["bash", str(REPO_ROOT / "scripts/run.sh"), "--help"]
    result = run_script(fake, argv, user=None, sudo=False, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Run the pull-through cache server" in result.stdout
    assert "installing python3-venv" in result.stderr
    assert [c.split()[:3] for c in fake.calls()] == [
        ["apt-get", "uid=0", "update"],
        ["apt-get", "uid=0", "install"],
    ]
    assert "python3-venv" in fake.calls()[1].split()
    # Again: the venv is there and the dependencies unchanged, so nothing is installed.
    again = run_script(fake, argv, user=None, sudo=False, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(fake.calls()) == 2 and again.stderr == ""
