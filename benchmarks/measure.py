"""What the suite observes besides transfer times: memory, CPU, upstream traffic.

``RssMonitor`` follows a process tree (the cache and its forked workers) and
reports the peak of the tree's summed VmRSS, sampled at 20 Hz, or the largest
single process's VmHWM if that is higher (the kernel's own peak, reset at the
start of each phase through ``/proc/PID/clear_refs``, catches spikes between
samples). ``UpstreamLog`` reads the upstream registry's access log (Apache
combined format on stdout): the bytes it sent for a blob since a mark are the
bytes the proxies fetched. ``NoiseMonitor`` measures the CPU that processes
*outside* the suite took meanwhile: on a shared two-core machine that is the
difference between a measurement and noise.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SAMPLE_INTERVAL = 0.05  # 20 Hz

# 127.0.0.1 - - [27/Nov/2026:23:28:37 +0000] "GET /v2/x/blobs/sha256:… HTTP/1.1" 200 2 "" "ua"
_ACCESS = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) [^"]*" (?P<status>\d{3}) (?P<size>\d+|-)')


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                kids.extend(int(x) for x in (task / "children").read_text().split())
    except OSError:
        pass
    return kids


def process_tree(root: int) -> list[int]:
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(_children(pid))
    return pids


def _status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _reset_peak(pid: int) -> None:
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # 5: reset VmHWM to VmRSS


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _cpu_ticks(pid: int, *, reaped: bool = False) -> int:
    """utime + stime of one process (plus its reaped children's), in clock ticks."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        ticks = int(fields[11]) + int(fields[12])
        if reaped:
            ticks += int(fields[13]) + int(fields[14])
        return ticks
    except (OSError, ValueError, IndexError):
        return 0


def _suite_cpu_seconds() -> float:
    """CPU used so far by this process and everything it started, alive or reaped."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    ticks = sum(_cpu_ticks(pid, reaped=True) for pid in process_tree(os.getpid())[1:])
    return (own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime) + ticks / os.sysconf(
        "SC_CLK_TCK"
    )


class NoiseMonitor:
    """``with NoiseMonitor() as noise: ...`` then ``noise.foreign_cores``: the cores
    kept busy by processes this suite did not start (other users of the machine)."""

    def __init__(self) -> None:
        self.foreign_cores = 0.0
        self._start = (0.0, (0, 0), 0.0)

    def __enter__(self) -> NoiseMonitor:
        self._start = (_suite_cpu_seconds(), _machine_ticks(), time.monotonic())
        return self

    def __exit__(self, *exc: object) -> None:
        ours0, (busy0, total0), t0 = self._start
        busy1, total1 = _machine_ticks()
        wall = time.monotonic() - t0
        if total1 <= total0 or wall <= 0:
            return
        cpus = os.cpu_count() or 1
        machine = cpus * (busy1 - busy0) / (total1 - total0)  # cores busy, all processes
        ours = (_suite_cpu_seconds() - ours0) / wall
        self.foreign_cores = max(0.0, machine - ours)


def cpu_fields() -> list[int]:
    """The ``cpu`` line of /proc/stat: clock ticks of all CPUs since boot, by state
    (user nice system idle iowait irq softirq steal ...); empty where unreadable."""
    try:
        return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return []


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot, from /proc/stat."""
    fields = cpu_fields()
    if len(fields) < 4:
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user
    return total - idle, total


class RssMonitor:
    """``with RssMonitor(pid) as rss: ...`` then ``rss.peak_mb`` (and ``peak_pss_mb``).

    Also counts the CPU time the tree used meanwhile (``cpu_seconds``, ``cores``)
    and how busy the whole machine was (``machine_cores``): on two cores, what the
    server, the load generator and everything else take explains most figures.

    The tree's RSS counts pages that forked workers share with their parent once
    per process; with ``pss=True`` the proportional set size (shared pages split
    between their users) is sampled as well.
    """

    def __init__(self, root_pid: int, *, pss: bool = False) -> None:
        self.root = root_pid
        self.pss = pss
        self.peak_kib = 0
        self.peak_pss_kib = 0
        self.cpu_seconds = 0.0
        self.wall_seconds = 0.0
        self.machine_cores = 0.0
        self._ticks: dict[int, int] = {}
        self._machine = (0, 0)
        self._started = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)

    @property
    def peak_mb(self) -> float:
        """Peak in MB (10^6 bytes)."""
        return self.peak_kib * 1024 / 1e6

    @property
    def peak_pss_mb(self) -> float:
        return self.peak_pss_kib * 1024 / 1e6

    @property
    def cores(self) -> float:
        """Average number of cores the tree kept busy."""
        return self.cpu_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def __enter__(self) -> RssMonitor:
        for pid in process_tree(self.root):
            _reset_peak(pid)
            self._ticks[pid] = _cpu_ticks(pid)
        self._started = time.monotonic()
        self._machine = _machine_ticks()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        pids = process_tree(self.root)
        self.wall_seconds = time.monotonic() - self._started
        ticks = sum(_cpu_ticks(pid) - self._ticks.get(pid, 0) for pid in pids)
        self.cpu_seconds = ticks / os.sysconf("SC_CLK_TCK")
        busy, total = _machine_ticks()
        if total > self._machine[1]:
            cpus = os.cpu_count() or 1
            self.machine_cores = cpus * (busy - self._machine[0]) / (total - self._machine[1])
        hwm = max((_status_kib(pid, "VmHWM") for pid in pids), default=0)
        self.peak_kib = max(self.peak_kib, hwm)

    def _sample(self) -> None:
        pids = process_tree(self.root)
        self.peak_kib = max(self.peak_kib, sum(_status_kib(pid, "VmRSS") for pid in pids))
        if self.pss:
            self.peak_pss_kib = max(self.peak_pss_kib, sum(_pss_kib(pid) for pid in pids))

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL):
            self._sample()


class CpuMeter:
    """``with CpuMeter(pids) as cpu: ...`` then ``cpu.seconds``: the CPU time the process
    trees rooted at ``pids`` used meanwhile (several servers counted as one contender)."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.roots = list(pids)
        self.seconds = 0.0
        self._ticks: dict[int, int] = {}

    def _trees(self) -> list[int]:
        return [pid for root in self.roots for pid in process_tree(root)]

    def __enter__(self) -> CpuMeter:
        self._ticks = {pid: _cpu_ticks(pid) for pid in self._trees()}
        return self

    def __exit__(self, *exc: object) -> None:
        ticks = sum(_cpu_ticks(pid) - self._ticks.get(pid, 0) for pid in self._trees())
        self.seconds = ticks / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class BlobTraffic:
    requests: int
    bytes: int


class LogTail:
    """A server's log read from a mark on: ``mark()`` now, ``text_since(mark)`` later."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def mark(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def text_since(self, mark: int) -> str:
        with self.path.open("rb") as handle:
            handle.seek(mark)
            return handle.read().decode(errors="replace")


class UpstreamLog(LogTail):
    """The upstream's access log; ``mark()`` then ``blob_traffic(mark, digest)``."""

    def blob_traffic(self, since: int, digest: str) -> BlobTraffic:
        requests = total = 0
        text = self.text_since(since)
        for line in text.splitlines():
            match = _ACCESS.search(line)
            if (
                match
                and match["method"] == "GET"
                and match["path"].endswith(f"/blobs/{digest}")
                and match["status"] in ("200", "206")
            ):
                requests += 1
                total += 0 if match["size"] == "-" else int(match["size"])
        return BlobTraffic(requests, total)

    def settled_traffic(self, since: int, digest: str, timeout: float = 5.0) -> BlobTraffic:
        """``blob_traffic`` once it stops changing: distribution logs a request as its
        handler returns, which can be a moment after the client saw the last byte."""
        deadline = time.monotonic() + timeout
        last = self.blob_traffic(since, digest)
        while time.monotonic() < deadline:
            time.sleep(0.25)
            now = self.blob_traffic(since, digest)
            if now == last and now.requests:
                return now
            last = now
        return last


# "2026-11-27 23:28:37,123 INFO [4242] registry_cache.access: ..." (logs.FORMAT)
_ACCESS_PID = re.compile(r"\[(\d+)\] registry_cache\.access:")


def log_mark(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def requests_per_process(cache_log: Path, since: int) -> list[int]:
    """Access-log lines per worker PID in the cache's log since ``since`` (best effort)."""
    try:
        with cache_log.open("rb") as handle:
            handle.seek(since)
            text = handle.read().decode(errors="replace")
    except OSError:
        return []
    counts: dict[str, int] = {}
    for match in _ACCESS_PID.finditer(text):
        counts[match[1]] = counts.get(match[1], 0) + 1
    return sorted(counts.values(), reverse=True)
