"""The suite's clients see a private /etc/hosts: public registry names are 127.0.0.1."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks import hermetic


@pytest.fixture
def hosts(tmp_path: Path) -> Path:
    why = hermetic.unavailable(tmp_path)
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    return hermetic.write_hosts(tmp_path / "hosts")


@pytest.mark.parametrize("name", ["registry-1.docker.io", "ghcr.io", "quay.io", "auth.docker.io"])
def test_public_registries_resolve_to_loopback_inside(hosts: Path, name: str) -> None:
    done = hermetic.run(["getent", "hosts", name], hosts, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "127.0.0.1"


def test_the_machines_hosts_file_is_untouched(hosts: Path) -> None:
    before = Path("/etc/hosts").read_bytes()
    done = hermetic.run(["cat", "/etc/hosts"], hosts, timeout=30)
    assert "benchmarks/hermetic.py" in done.stdout
    assert Path("/etc/hosts").read_bytes() == before
    assert b"benchmarks/hermetic.py" not in before
