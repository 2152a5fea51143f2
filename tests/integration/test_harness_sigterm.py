"""A test run stopped by SIGTERM stops the servers it started: the PostgreSQL a test
holds is gone by PID once pytest has exited. Before, SIGTERM ended pytest at once,
without fixture teardowns or exit hooks, and the postmaster (in its own session)
kept running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness.cache import REPO_ROOT
from tests.harness.postgres import postgres_available
from tests.harness.proc import alive
from tests.harness.require import needs
from tests.harness.wait import eventually

CONFTEST = """
from tests.harness.proc import stop_on_sigterm

def pytest_configure(config):
    stop_on_sigterm()
"""
HOLDER = """
import os, time
from pathlib import Path
import pytest
from tests.harness.postgres import PostgresServer

@pytest.fixture
def server():
    with PostgresServer() as started:
        yield started

def test_hold(server):
    Path(os.environ["PID_FILE"]).write_text(str(server._proc.pid))
    time.sleep(300)  # until SIGTERM
"""


@pytest.mark.integration
@needs(postgres_available(), "PostgreSQL 15 is not installed: apt-get install postgresql-15")
def test_sigterm_to_pytest_stops_the_postgres_a_test_holds(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_hold.py").write_text(HOLDER)
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
    )
    pid_file = tmp_path / "postmaster.pid"
    env = os.environ | {"PID_FILE": str(pid_file), "PYTHONPATH": str(REPO_ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-c", str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    postmaster = 0
    try:
        assert eventually(lambda: pid_file.exists() and pid_file.read_text() != "", timeout=60)
        postmaster = int(pid_file.read_text())
        assert alive(postmaster)
        child.send_signal(signal.SIGTERM)
        output, _ = child.communicate(timeout=60)
        deadline = time.monotonic() + 30
        while alive(postmaster) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(postmaster), output.decode(errors="replace")[-2000:]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if postmaster and alive(postmaster):
            os.kill(postmaster, signal.SIGKILL)  # what the run left behind, by its PID
