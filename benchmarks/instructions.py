"""Instructions per request, counted by valgrind's callgrind: a figure the machine's noise
cannot move.

CPU time per request moves by a few percent between two identical caches on two shared
cores (steal, caches, frequency), so a cost of 1 % cannot be resolved by timing. Callgrind
counts the instructions a process executes instead: the same for the same code and
requests, whatever else runs (within ~0.2 % here, from the hash seed and the loop's
timing). A cache runs under ``valgrind --tool=callgrind --instr-atstart=no``; after its
start and a warm-up, counting is switched on (``callgrind_control -i on``) for exactly
``n`` requests sent one after another on one keep-alive connection, then off and dumped.

Callgrind runs the cache some 50-100 times slower, so what happens per second (the 5 s
flush of access times and the dashboard's counters, in the loop and in a worker thread)
weighs 50-100 times more per request than at the real request rate. The two are kept
apart: per thread (``--separate-threads=yes``), the event-loop thread's instructions are
given per request (its per-second share included: an overestimate), and the other
threads' per second, which ``per_request`` turns into a share per request at a given
request rate (the one wrk measured).
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .actions import ScenarioError
from .httpio import connect
from .servers import Cache, find_binary

TOOLS = ("valgrind", "callgrind_control")
START_TIMEOUT = 180.0  # the cache's imports under callgrind take ~10 s here
WARM_REQUESTS = 200
_TOTALS = re.compile(rb"^totals:\s+(\d+)", re.MULTILINE)


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if find_binary(tool) is None]


@dataclass(frozen=True, slots=True)
class Counted:
    requests: int
    seconds: float  # the counted requests' wall time under callgrind
    loop: int  # instructions of the event-loop (main) thread
    others: int  # instructions of every other thread

    @property
    def loop_per_request(self) -> float:
        return self.loop / self.requests

    @property
    def others_per_second(self) -> float:
        return self.others / self.seconds if self.seconds > 0 else 0.0

    def per_request(self, rate: float) -> float:
        """Instructions per request at ``rate`` requests/s: the loop thread's, plus the
        other threads' per-second work spread over that many requests."""
        return self.loop_per_request + (self.others_per_second / rate if rate > 0 else 0.0)


class CallgrindCache(Cache):
    """registry-cache under callgrind, counting nothing until told to."""

    name = "registry-cache-callgrind"

    def start(self, timeout: float = START_TIMEOUT) -> Cache:
        super().start(timeout)
        return self

    @property
    def profile(self) -> Path:
        return self.workdir / "callgrind.out"

    def command(self) -> list[str]:
        return [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            "--separate-threads=yes",
            f"--callgrind-out-file={self.profile}",
            *super().command(),
        ]

    def env(self) -> dict[str, str]:
        # The same dictionary layouts in every contender: the hash seed moves the count.
        return super().env() | {"PYTHONHASHSEED": "0"}


def count(cache: CallgrindCache, url: str, headers: dict[str, str], n: int) -> Counted:
    """Instructions ``cache`` (started) executes for ``n`` GETs of ``url`` (one of its own)."""
    _get(url, headers, WARM_REQUESTS)
    _control(cache, "-i", "on")
    started = time.perf_counter()
    _get(url, headers, n)
    seconds = time.perf_counter() - started
    _control(cache, "-i", "off")
    _control(cache, "-d")  # writes <profile>.1-01 (the main thread), .1-02, ...
    loop = others = 0
    for part in sorted(cache.profile.parent.glob(f"{cache.profile.name}.1-*")):
        found = _TOTALS.search(part.read_bytes())
        value = int(found.group(1)) if found else 0
        if part.name.endswith("-01"):
            loop = value
        else:
            others += value
    if loop == 0:
        raise ScenarioError(f"callgrind wrote no count for the loop thread in {cache.workdir}")
    return Counted(requests=n, seconds=seconds, loop=loop, others=others)


def _control(cache: Cache, *args: str) -> None:
    done = subprocess.run(
        ["callgrind_control", *args, str(cache.pid)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise ScenarioError(f"callgrind_control {' '.join(args)}: {done.stderr.strip()[-300:]}")


def _get(url: str, headers: dict[str, str], n: int) -> None:
    """``n`` GETs one after another on one keep-alive connection, as wrk sends them."""
    connection, target = connect(url)
    try:
        for _ in range(n):
            connection.request("GET", target, headers=headers)
            reply = connection.getresponse()
            reply.read()
            if reply.status != 200:
                raise ScenarioError(f"GET {url} under callgrind: HTTP {reply.status}")
    finally:
        connection.close()
