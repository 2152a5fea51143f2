"""How fast the host was during a run, so that runs on different days can be compared.

The same shared two-core guest has run the same code 3-4x slower on one day than on
another (CPU per warm manifest hit 100 µs one day, 380 µs the next), so a figure in
µs or GB/s means little without the host's speed beside it. Ratios within one run
are unaffected; absolute figures are read against these:

- ``python_mops``: a fixed pure-Python loop (dict and string work, like a request's),
  million iterations per second, best of 5 (the best run is the host's speed, the
  others its interruptions);
- ``sha256_gbps``: hashlib SHA-256 over 64 MiB, best of 3 (what every cold byte pays);
- ``wakeups_k``: thousands of one-byte round trips per second between this process and
  a child over a socketpair, best of 3: the cost of waking a process, which every small
  request pays on both sides (left out if the child cannot run);
- ``steal``: the share of CPU time the hypervisor gave to other guests over the whole
  run (``/proc/stat``), which no measurement inside the guest sees otherwise.
"""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from .measure import cpu_fields

LOOP = 200_000
HASHED = 64 << 20
ROUND_TRIPS = 10_000


@dataclass(frozen=True, slots=True)
class StealMark:
    steal: int
    total: int


def steal_mark() -> StealMark:
    """Steal and total clock ticks of all CPUs since boot (zeros where unreadable)."""
    fields = cpu_fields()
    steal = fields[7] if len(fields) > 7 else 0
    return StealMark(steal, sum(fields[:8]))


def steal_since(mark: StealMark) -> float | None:
    """The share of CPU time stolen since ``mark`` (None: not known)."""
    now = steal_mark()
    total = now.total - mark.total
    return None if total <= 0 else (now.steal - mark.steal) / total


def python_mops() -> float:
    best = min(_timed_loop() for _ in range(5))
    return LOOP / best / 1e6


def sha256_gbps() -> float:
    data = bytes(HASHED)
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        hashlib.sha256(data).digest()
        best = min(best, time.perf_counter() - started)
    return HASHED / best / 1e9


def wakeups_k() -> float:
    ours, theirs = socket.socketpair()
    echo = (
        "import socket, sys\n"
        "s = socket.socket(fileno=int(sys.argv[1]))\n"
        "while d := s.recv(1): s.send(d)\n"
    )
    with ours:
        ours.settimeout(10.0)  # a child that died must not hang the run
        fd = theirs.fileno()
        child = subprocess.Popen([sys.executable, "-c", echo, str(fd)], pass_fds=(fd,))
        theirs.close()
        best = float("inf")
        try:
            for _ in range(3):
                started = time.perf_counter()
                for _ in range(ROUND_TRIPS):
                    ours.send(b"x")
                    ours.recv(1)
                best = min(best, time.perf_counter() - started)
        finally:
            ours.shutdown(socket.SHUT_RDWR)
            child.wait(timeout=10)
    return ROUND_TRIPS / best / 1e3


def measure() -> dict[str, float]:
    measured = {"python_mops": round(python_mops(), 2), "sha256_gbps": round(sha256_gbps(), 2)}
    try:
        measured["wakeups_k"] = round(wakeups_k(), 1)
    except (OSError, subprocess.SubprocessError):
        pass  # reported without it
    return measured


def describe(calibration: dict[str, float], steal: float | None) -> str:
    parts = [
        f"pure-Python loop {calibration['python_mops']:.2f} M iterations/s",
        f"SHA-256 {calibration['sha256_gbps']:.2f} GB/s on one core",
    ]
    if "wakeups_k" in calibration:
        parts.append(f"{calibration['wakeups_k']:.1f} k process round trips/s")
    if steal is not None:
        parts.append(f"{steal:.1%} of CPU time stolen by the hypervisor during the run")
    return ", ".join(parts)


def _timed_loop() -> float:
    table: dict[str, int] = {}
    started = time.perf_counter()
    for i in range(LOOP):
        key = f"/v2/library/x{i & 1023}/manifests/latest"
        table[key] = table.get(key, 0) + len(key.split("/"))
    return time.perf_counter() - started
