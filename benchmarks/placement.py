"""Where a server and its reader run: one core each, the same for every contender.

A warm GET on loopback is a copy between two processes. Left to the scheduler, a
server and its reader land sometimes on one core (taking turns) and sometimes on
two (in parallel): nginx's 1 GiB GET was measured at 1.29 GB/s with both on one
core and 2.16 GB/s on two, on the same host the same hour, so an unpinned figure
is bimodal and a ratio between two contenders says where each was placed, not
what each can do. ``separate_cores`` pins every thread of the server's process
tree to one core and the calling thread (the in-process reader, and any reader it
starts: a child inherits its parent thread's affinity) to another, for as long as
the block runs, and puts back what each had before. That is also how a server
runs in production: its clients are on other machines, not on its cores.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .measure import process_tree

__all__ = ["Placement", "separate_cores", "tasks"]


@dataclass(frozen=True, slots=True)
class Placement:
    server_cpu: int | None  # None: fewer than two usable CPUs, nothing was pinned
    reader_cpu: int | None

    @property
    def pinned(self) -> bool:
        return self.server_cpu is not None

    def describe(self) -> str:
        if not self.pinned:
            return "server and reader unpinned (fewer than two usable CPUs)"
        return f"server pinned to CPU {self.server_cpu}, reader to CPU {self.reader_cpu}"


def choose() -> Placement:
    """The placement ``separate_cores`` uses here: the first two CPUs this process may use."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return Placement(None, None)
    return Placement(cpus[0], cpus[1])


def tasks(root_pid: int) -> list[int]:
    """Every thread (task id) of ``root_pid``'s process tree."""
    found: list[int] = []
    for pid in process_tree(root_pid):
        with contextlib.suppress(OSError):
            found.extend(int(task.name) for task in Path(f"/proc/{pid}/task").iterdir())
    return found


@contextlib.contextmanager
def separate_cores(server_pid: int) -> Iterator[Placement]:
    placement = choose()
    if placement.server_cpu is None or placement.reader_cpu is None:
        yield placement
        return
    saved: dict[int, set[int]] = {}
    for tid in tasks(server_pid):
        # A thread may exit between the listing and the call: it needs no pinning then.
        with contextlib.suppress(ProcessLookupError):
            saved[tid] = os.sched_getaffinity(tid)
            os.sched_setaffinity(tid, {placement.server_cpu})
    mine = os.sched_getaffinity(0)  # this thread only (Linux: pid 0 is the calling thread)
    os.sched_setaffinity(0, {placement.reader_cpu})
    try:
        yield placement
    finally:
        os.sched_setaffinity(0, mine)
        # Threads the server started meanwhile inherited the pin: they get what the
        # server's first thread had, so later scenarios find the server as it was.
        default = saved.get(server_pid, mine)
        for tid in tasks(server_pid):
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(tid, saved.get(tid, default))
