"""``python -m benchmarks.bigcache`` stopped by SIGTERM or SIGINT stops what it started:
the PostgreSQL of its own is gone (by PID) and the run says it was stopped. Before,
SIGTERM ended the interpreter without its ``finally`` and the server kept running.
Both ways the benchmark runs: on the plain disk, and re-executed in a mount
namespace of its own (``--volume loop``, as root), where the signal is passed on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.bigcache import volume
from benchmarks.bigcache.__main__ import stopping_on_signals
from benchmarks.postgres import state_prefix
from tests.harness.cache import REPO_ROOT, cli_env
from tests.harness.postgres import postgres_available
from tests.harness.proc import alive
from tests.harness.require import needs


def test_sigterm_raises_keyboard_interrupt_once_and_the_handlers_come_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), stopping_on_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # interrupted at once by the handler
    assert signal.getsignal(signal.SIGTERM) == before


def _postmaster(known: set[Path], timeout: float) -> tuple[Path, int]:
    """The state directory a new benchmark PostgreSQL made, and its postmaster's PID."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for state in set(Path("/tmp").glob(state_prefix(0).replace("-0-", "-*-") + "*")) - known:
            pid_file = state / "data" / "postmaster.pid"
            try:
                lines = pid_file.read_text().splitlines()
            except FileNotFoundError:
                continue
            # The last line is the state: "ready" once it accepts connections.
            if len(lines) >= 8 and lines[7].strip() == "ready":
                return state, int(lines[0])
        time.sleep(0.1)
    raise AssertionError("the benchmark's PostgreSQL never came up")


@pytest.mark.integration
@needs(postgres_available(), "PostgreSQL 15 is not installed: apt-get install postgresql-15")
@pytest.mark.parametrize(
    ("where", "signum"),
    [("plain", signal.SIGTERM), ("plain", signal.SIGINT), ("loop", signal.SIGTERM)],
)
def test_a_signal_stops_the_postgresql_it_started(
    tmp_path: Path, where: str, signum: signal.Signals
) -> None:
    if where == "loop" and not volume.can_mount():
        pytest.skip("--volume loop needs root, unshare and mkfs.ext4")
    env = cli_env()
    env["PYTHONPATH"] = f"{REPO_ROOT}:{REPO_ROOT / 'src'}"
    known = set(Path("/tmp").glob("rc-bench-pg-*"))
    argv = [
        sys.executable, "-m", "benchmarks.bigcache", "--sizes", "200k", "--index", "postgresql",
        "--volume", where, "--out", str(tmp_path / "out"), "--work", str(tmp_path / "w"),
    ]  # fmt: skip
    run = subprocess.Popen(
        argv, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        state, postmaster = _postmaster(known, timeout=120)
        assert alive(postmaster)
        run.send_signal(signum)
        _, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == 130, err.decode(errors="replace")[-3000:]
    assert b"stopped by a signal" in err
    assert not alive(postmaster), f"PostgreSQL {postmaster} still runs"
    assert not state.exists()
    assert (tmp_path / "out" / "results.md").exists()  # what was measured so far: nothing
