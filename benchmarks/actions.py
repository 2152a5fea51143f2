"""What the scenarios do to the servers: GETs, herds of GETs, image pulls, waits.

Every GET checks status and length (a fast error is not a result) and raises
``ScenarioError`` otherwise.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .content import Blob
from .httpio import HttpError, Transfer, download
from .readers import MIB_READS, Readers
from .results import GB
from .servers import Cache, Registry, Server


class ScenarioError(RuntimeError):
    pass


def blob_url(server: Server, repo: str, digest: str) -> str:
    return f"{server.url}/v2/{repo}/blobs/{digest}"


def fetch(url: str, size: int, readers: Readers | None = None, reader: str = MIB_READS) -> Transfer:
    """GET ``url`` with ``reader`` (readers.py; default the 1 MiB Python reader), checked."""
    try:
        got = download(url) if readers is None else readers.get(reader, url)
    except HttpError as exc:
        raise ScenarioError(str(exc)) from None
    if not got.complete or got.bytes != size:
        raise ScenarioError(f"GET {url}: HTTP {got.status}, {got.bytes} of {size} bytes")
    return got


def concurrent_gets(url: str, size: int, clients: int) -> float:
    """``clients`` GETs released at once; seconds from the first start to the last byte."""
    outcome = herd_gets(url, size, clients)
    if outcome.failures:
        raise ScenarioError(f"{clients} GETs of {url}: {outcome.failures[0]}")
    return outcome.wall


@dataclass(frozen=True, slots=True)
class HerdOutcome:
    wall: float  # seconds from the first start to the last end (failed GETs included)
    failures: list[str]  # one line per GET that failed or did not finish


def herd_gets(url: str, size: int, clients: int) -> HerdOutcome:
    """``clients`` GETs released at once, each checked; failures counted, not raised."""
    gate = threading.Barrier(clients)
    spans: list[tuple[float, float]] = []
    failures: list[str] = []

    def client() -> None:
        gate.wait()
        started = time.perf_counter()
        try:
            fetch(url, size)
        except Exception as exc:
            failures.append(str(exc))
        spans.append((started, time.perf_counter()))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    failures += ["did not finish"] * (clients - len(spans))
    if not spans:
        raise ScenarioError(f"{clients} GETs of {url}: none finished")
    return HerdOutcome(max(end for _, end in spans) - min(start for start, _ in spans), failures)


def await_stored(server: Server, blob: Blob, timeout: float = 120.0) -> None:
    """Wait until ``server`` holds ``blob`` in its storage.

    distribution streams a miss to the client and stores it with a second upstream
    fetch in the background: its GET is over once the blob is in its storage. The
    cache commits right after the last byte; this waits out that moment too, so a
    "warm" GET never races a fill.
    """
    if not isinstance(server, Registry | Cache):
        return
    deadline = time.monotonic() + timeout
    while not server.has_blob(blob.digest):
        if time.monotonic() > deadline:
            raise ScenarioError(f"{server.name} did not store {blob.digest} in {timeout:.0f}s")
        time.sleep(0.05)


def drop_caches(enabled: bool) -> None:
    if enabled:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3")


def tmpfs_with_room(size: int) -> Path | None:
    shm = Path("/dev/shm")
    try:
        stat = os.statvfs(shm)
    except OSError:
        return None
    return shm if stat.f_bavail * stat.f_frsize > size else None


def write_speed(directory: Path, size: int, *, pause: float = 0.0) -> float:
    """GB/s of writing ``size`` bytes to a new file there with 1 MiB writes (then deleted).

    ``pause`` seconds of quiet first. On some VMs (seen on this project's Firecracker
    machines, which run virtio-balloon) memory the guest freed a few seconds ago has
    been handed back to the host, and touching it again costs ~6x: a write into the
    page cache right after a pause shows that price, one right after another write
    (whose freed pages it reuses) does not.
    """
    chunk = memoryview(os.urandom(1 << 20))
    path = directory / f".write-probe-{os.getpid()}"
    time.sleep(pause)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        started = time.perf_counter()
        left = size
        while left > 0:
            left -= os.write(fd, chunk[: min(left, len(chunk))])
        seconds = time.perf_counter() - started
    finally:
        os.close(fd)
        path.unlink()
        os.sync()
    return size / seconds / GB
