"""Slow and idle clients are bounded; normal clients stay fast meanwhile.

- 1,500 connections that each send half a request header are closed by the cache
  once ``--client-header-timeout`` (2 s here) has passed, while normal clients (a
  keep-alive one and one connecting per request) keep getting answers in
  milliseconds all along (p99 measured).
- An idle keep-alive connection is closed after the same timeout, and so is a TLS
  connection whose handshake never comes; a served TLS connection is counted too.
- Beyond ``--max-connections`` a new connection is refused at once (a 503 or a
  reset), and admitted again once connections close.
- ``serve`` raises its open-files limit to the hard limit, and warns when that is
  too low for ``max_connections``.

Bounded: a fixed number of connections, every wait with a deadline.
"""

from __future__ import annotations

import http.client
import resource
import selectors
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.harness.cache import CacheServer
from tests.harness.certs import make_tls
from tests.harness.images import build_image, push
from tests.harness.registry import UpstreamRegistry

SLOW = 1500
HEADER_TIMEOUT = 2.0
SLACK = 3.0  # a loaded 2-core machine: the close may come this much later
HALF_HEADER = b"GET /v2/ HTTP/1.1\r\nHost: slow\r\nUser-Agent: half-"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def open_files(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError(f"no open-files limit for {pid}")


class NormalClients(threading.Thread):
    """Requests in a loop (a keep-alive connection, and a new one per request),
    recording each latency, until stopped."""

    def __init__(self, port: int, paths: list[str]) -> None:
        super().__init__(name="normal-clients", daemon=True)
        self.port = port
        self.paths = paths
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.stop = threading.Event()

    def _get(self, conn: http.client.HTTPConnection, path: str) -> None:
        started = time.monotonic()
        conn.request("GET", path, headers={"Accept": MANIFEST})
        response = conn.getresponse()
        response.read()
        self.latencies.append(time.monotonic() - started)
        if response.status != 200:
            self.failures.append(f"{path}: {response.status}")

    def run(self) -> None:
        kept = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            while not self.stop.is_set():
                for path in self.paths:
                    self._get(kept, path)
                    fresh = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                    try:
                        self._get(fresh, path)
                    finally:
                        fresh.close()
                time.sleep(0.01)
        except OSError as exc:
            self.failures.append(repr(exc))
        finally:
            kept.close()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def test_half_header_connections_are_closed_while_normal_clients_stay_fast(
    upstream: UpstreamRegistry, make_cache: Callable[..., CacheServer]
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard >= SLOW + 200, f"this test needs {SLOW + 200} open files (hard limit {hard})"
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, SLOW + 200), hard))
    push(upstream.url, "library/fast", "1", build_image("fast", layers=1))
    cache = make_cache(
        "--upstream", f"docker.io={upstream.url}", "--client-header-timeout", f"{HEADER_TIMEOUT}s"
    )  # fmt: skip
    manifest = "/v2/library/fast/manifests/1"
    clients = NormalClients(cache.port, ["/v2/", manifest])
    clients.start()
    selector = selectors.DefaultSelector()
    opened: dict[socket.socket, float] = {}
    closed: dict[socket.socket, float] = {}
    try:
        for _ in range(SLOW):
            sock = socket.create_connection(("127.0.0.1", cache.port), timeout=10)
            opened[sock] = time.monotonic()  # accepted no later than this
            sock.sendall(HALF_HEADER)
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, data=sock)
        deadline = max(opened.values()) + HEADER_TIMEOUT + SLACK
        while len(closed) < SLOW and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.2):
                slow: socket.socket = key.data
                try:
                    data = slow.recv(4096)
                except ConnectionError:
                    data = b""
                if not data:  # the cache closed it (EOF or reset)
                    closed[slow] = time.monotonic()
                    selector.unregister(slow)
        ran_for = time.monotonic() - min(opened.values())
    finally:
        clients.stop.set()
        clients.join(timeout=30)
        selector.close()
        for sock in opened:
            sock.close()
    assert len(closed) == SLOW, (
        f"{SLOW - len(closed)} slow connections still open after {ran_for:.1f}s"
    )
    lifetimes = [closed[sock] - opened[sock] for sock in opened]
    assert min(lifetimes) >= HEADER_TIMEOUT - 0.5, min(lifetimes)  # the timeout, not sooner
    assert max(lifetimes) <= HEADER_TIMEOUT + SLACK, max(lifetimes)
    assert not clients.failures, clients.failures[:5]
    assert len(clients.latencies) >= 40, len(clients.latencies)
    p99 = percentile(clients.latencies, 0.99)
    assert p99 < 0.5, f"p99 {p99 * 1000:.0f} ms over {len(clients.latencies)} requests"
    assert cache.running and "Traceback" not in cache.log_text()


def test_idle_keep_alive_connections_are_closed_after_the_timeout(
    make_cache: Callable[..., CacheServer],
) -> None:
    cache = make_cache("--client-header-timeout", "1s")
    with socket.create_connection(("127.0.0.1", cache.port), timeout=10) as sock:
        sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: idle\r\n\r\n")
        answered = sock.recv(65536)
        assert answered.startswith(b"HTTP/1.1 200 ")
        started = time.monotonic()
        assert sock.recv(65536) == b""  # closed by the cache, not by us
        assert 0.5 <= time.monotonic() - started <= 1.0 + SLACK


def test_tls_handshakes_are_bounded_and_tls_connections_counted(
    make_cache: Callable[..., CacheServer], tmp_path: Path
) -> None:
    tls = make_tls(tmp_path / "tls")
    cache = make_cache(
        "--tls-cert", str(tls.cert), "--tls-key", str(tls.key),
        "--client-header-timeout", "1s", "--max-connections", "1",
        ca_file=tls.ca_cert,
    )  # fmt: skip
    with socket.create_connection(("127.0.0.1", cache.port), timeout=10) as stalled:
        stalled.sendall(b"\x16\x03\x01")  # the start of a ClientHello, and nothing more
        started = time.monotonic()
        try:
            assert stalled.recv(65536) == b""
        except ConnectionError:
            pass  # closed with a reset: closed all the same
        assert 0.5 <= time.monotonic() - started <= 1.0 + SLACK
    context = ssl.create_default_context(cafile=str(tls.ca_cert))
    raw = socket.create_connection(("127.0.0.1", cache.port), timeout=10)
    with context.wrap_socket(raw, server_hostname="127.0.0.1") as held:
        held.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        assert held.recv(65536).startswith(b"HTTP/1.1 200 ")
        # The one slot is taken: a second TLS client is refused after its handshake.
        second = context.wrap_socket(
            socket.create_connection(("127.0.0.1", cache.port), timeout=10),
            server_hostname="127.0.0.1",
        )
        with second:
            try:
                answer = second.recv(65536)
            except (ConnectionError, ssl.SSLError):
                answer = b""
        assert answer == b"" or answer.startswith(b"HTTP/1.1 503 "), answer[:100]


def test_connections_beyond_the_limit_are_refused_at_once(
    make_cache: Callable[..., CacheServer],
) -> None:
    cache = make_cache("--max-connections", "20")
    held = []
    for _ in range(20):  # each answered once, then kept open (idle keep-alive)
        conn = http.client.HTTPConnection("127.0.0.1", cache.port, timeout=10)
        conn.request("GET", "/v2/")
        response = conn.getresponse()
        response.read()
        assert response.status == 200
        held.append(conn)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", cache.port), timeout=10) as sock:
        try:
            sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b"".join(iter(lambda: sock.recv(65536), b""))
        except ConnectionError:
            answer = b""  # a reset is a refusal too
    assert time.monotonic() - started < 1.0
    assert answer == b"" or answer.startswith(b"HTTP/1.1 503 "), answer[:200]
    assert b'"code": "UNAVAILABLE"' in answer or answer == b""
    for conn in held[:5]:
        conn.close()
    deadline = time.monotonic() + 5
    while True:  # the cache notices the closes on its next loop turns
        conn = http.client.HTTPConnection("127.0.0.1", cache.port, timeout=10)
        try:
            conn.request("GET", "/v2/")
            if conn.getresponse().status == 200:
                break
        except (ConnectionError, http.client.HTTPException):
            pass
        finally:
            conn.close()
        assert time.monotonic() < deadline, "no connection admitted after others closed"
        time.sleep(0.05)
    for conn in held[5:]:
        conn.close()
    assert "connection limit reached (20 open, max_connections 20)" in cache.log_text()


def test_serve_raises_its_open_files_limit(
    make_cache: Callable[..., CacheServer],
) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(512, hard)
    limited = [sys.executable, "-m", "registry_cache"]
    cache = make_cache(command=["prlimit", f"--nofile={low}:{hard}", "--", *limited])
    assert cache.pid is not None
    assert open_files(cache.pid) == (hard, hard)
    cache.stop()
    small = make_cache(command=["prlimit", "--nofile=256:1024", "--", *limited])
    assert small.pid is not None and open_files(small.pid) == (1024, 1024)
    assert "open-files limit 1024 is below max_connections 4096" in small.log_text()
