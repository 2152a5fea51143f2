"""Request-rate load: ``wrk`` when installed, else a built-in asyncio generator.

``wrk -t2 -c32 -dNs --latency`` is the reference (Debian's ``wrk`` package); its
summary is parsed for requests/s, p50/p99 latency and errors (non-2xx answers and
socket errors). The fallback keeps 32 keep-alive connections busy from one
Python thread; it saturates near a few thousand requests/s, so figures from it
understate fast servers (the report names the tool).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import resource
import subprocess
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from registry_cache.bench.stats import percentile

from .servers import find_binary

CONNECTIONS = 32
THREADS = 2

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", re.M)
_PCT = re.compile(r"^\s+(50|75|90|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)
_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


class LoadError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class LoadResult:
    tool: str
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx answers + socket errors
    cpu_seconds: float = 0.0  # used by the load generator itself

    @property
    def cores(self) -> float:
        return self.cpu_seconds / self.seconds if self.seconds > 0 else 0.0

    def check(self, what: str) -> LoadResult:
        """Raise if more than 1% of requests failed: a fast 404 is not a result."""
        if self.requests == 0 or self.errors > 0.01 * self.requests:
            raise LoadError(f"{what}: {self.errors} errors in {self.requests} requests")
        return self


def wrk_available() -> bool:
    return find_binary("wrk") is not None


def parse_wrk(text: str) -> LoadResult:
    rps, total, pcts = (
        _RPS.search(text),
        _TOTAL.search(text),
        dict((m[1], float(m[2]) * _UNITS[m[3]]) for m in _PCT.finditer(text)),
    )
    if rps is None or total is None or "50" not in pcts or "99" not in pcts:
        raise LoadError(f"cannot parse wrk output:\n{text[-800:]}")
    errors = int(m[1]) if (m := _NON2XX.search(text)) else 0
    if m := _SOCKET.search(text):
        errors += sum(int(x) for x in m.groups())
    seconds = float(total[2]) * _UNITS[total[3]] / 1e3
    return LoadResult("wrk", int(total[1]), seconds, float(rps[1]), pcts["50"], pcts["99"], errors)


def run_wrk(url: str, headers: dict[str, str], duration: float) -> LoadResult:
    cmd = [find_binary("wrk") or "wrk", f"-t{THREADS}", f"-c{CONNECTIONS}"]
    cmd += [f"-d{max(1, round(duration))}s", "--latency", "--timeout", "10s"]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    before = _child_cpu()
    done = subprocess.run(
        [*cmd, url], capture_output=True, text=True, timeout=duration + 60, check=False
    )
    if done.returncode != 0:
        raise LoadError(f"wrk failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return dataclasses.replace(parse_wrk(done.stdout), cpu_seconds=_child_cpu() - before)


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def _client(
    host: str, port: int, raw: bytes, *, deadline: float, latencies: list[float], errors: list[int]
) -> None:
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    while time.perf_counter() < deadline:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            assert reader is not None
            started = time.perf_counter()
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if not 200 <= status < 400:
                errors[0] += 1
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            errors[0] += 1
            if writer is not None:
                writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


async def _builtin(url: str, headers: dict[str, str], duration: float) -> LoadResult:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode()
    latencies: list[float] = []
    errors = [0]
    started = time.perf_counter()
    deadline = started + duration
    await asyncio.gather(
        *(
            _client(host, port, raw, deadline=deadline, latencies=latencies, errors=errors)
            for _ in range(CONNECTIONS)
        )
    )
    seconds = time.perf_counter() - started
    if not latencies:
        raise LoadError(f"no request to {url} completed")
    return LoadResult(
        "builtin",
        len(latencies),
        seconds,
        len(latencies) / seconds,
        percentile(latencies, 50) * 1e3,
        percentile(latencies, 99) * 1e3,
        errors[0],
    )


def run_builtin(url: str, headers: dict[str, str], duration: float) -> LoadResult:
    before = time.process_time()  # this process: the RSS sampler thread adds a little
    result = asyncio.run(_builtin(url, headers, duration))
    return dataclasses.replace(result, cpu_seconds=time.process_time() - before)


def run_load(url: str, headers: dict[str, str], duration: float, tool: str = "auto") -> LoadResult:
    """``tool``: "wrk", "builtin", or "auto" (wrk when installed)."""
    if tool == "wrk" or (tool == "auto" and wrk_available()):
        return run_wrk(url, headers, duration)
    return run_builtin(url, headers, duration)
