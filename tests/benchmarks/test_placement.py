"""placement.separate_cores on a real process tree: every thread pinned, then put back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from benchmarks import placement

# A server stand-in: one extra thread, one child process, and a new thread on demand
# (a line on stdin), so threads started while pinned are covered too.
_SERVER = """
import subprocess, sys, threading, time
threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print("ready", child.pid, flush=True)
for line in sys.stdin:
    threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
    print("started", flush=True)
"""


@pytest.fixture
def server() -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    ready, child = proc.stdout.readline().split()
    assert ready == "ready"
    try:
        yield proc
    finally:
        os.kill(int(child), signal.SIGKILL)
        proc.kill()
        proc.wait(timeout=10)


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _affinities(pid: int) -> dict[int, set[int]]:
    return {tid: os.sched_getaffinity(tid) for tid in placement.tasks(pid)}


def test_server_and_reader_get_a_core_each_and_everything_is_put_back(
    server: subprocess.Popen[str],
) -> None:
    before = _affinities(server.pid)
    assert len(before) == 3  # two threads in the server, one in its child
    mine = os.sched_getaffinity(0)
    with placement.separate_cores(server.pid) as where:
        if len(mine) < 2:
            assert not where.pinned and _affinities(server.pid) == before
            return
        assert where.server_cpu != where.reader_cpu
        assert all(cpus == {where.server_cpu} for cpus in _affinities(server.pid).values())
        assert os.sched_getaffinity(0) == {where.reader_cpu}
        # A reader the block starts runs where the block does.
        child = subprocess.run(
            [sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert child.stdout.strip() == str([where.reader_cpu])
        # A thread the server starts while pinned inherits the pin ...
        threads = _threads(server.pid)
        assert server.stdin is not None and server.stdout is not None
        server.stdin.write("go\n")
        server.stdin.flush()
        # Thread.start() returns once the thread runs: listed by the time the line comes.
        assert server.stdout.readline().strip() == "started"
        assert _threads(server.pid) == threads + 1
        assert all(cpus == {where.server_cpu} for cpus in _affinities(server.pid).values())
    # ... and is given the server's own affinity afterwards, like every other thread.
    after = _affinities(server.pid)
    assert set(after) > set(before)
    assert all(after[tid] == cpus for tid, cpus in before.items())
    assert all(cpus == before[server.pid] for cpus in after.values())
    assert os.sched_getaffinity(0) == mine


def test_placement_describes_what_it_did() -> None:
    assert placement.Placement(None, None).describe().startswith("server and reader unpinned")
    assert placement.Placement(0, 1).describe() == "server pinned to CPU 0, reader to CPU 1"
