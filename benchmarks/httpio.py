"""HTTP/1.1 on loopback with as little client overhead as Python allows (HTTPS too).

``download`` reads into one preallocated 1 MiB buffer and throws the bytes away
(the equivalent of ``curl -o /dev/null``, but with a larger read size than curl's,
so the client is not what limits a fast server: ~3 GB/s from nginx here).
``upload`` streams a file with ``sendfile``. Every request says ``Connection:
close`` and never goes through a proxy.
"""

from __future__ import annotations

import hashlib
import http.client
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .tlscerts import client_context

READ_SIZE = 1 << 20
TIMEOUT = 300.0


@dataclass(frozen=True, slots=True)
class Transfer:
    status: int
    bytes: int
    seconds: float  # request sent → last byte read
    ttfb: float  # request sent → response headers read
    expected: int | None  # Content-Length, when sent
    connect: float = 0.0  # the TCP handshake before the request, where measured

    @property
    def rate(self) -> float:
        """Bytes per second."""
        return self.bytes / self.seconds if self.seconds > 0 else 0.0

    @property
    def complete(self) -> bool:
        return 200 <= self.status < 300 and (self.expected is None or self.bytes == self.expected)


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


class HttpError(RuntimeError):
    pass


def connect(url: str) -> tuple[http.client.HTTPConnection, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or parts.hostname is None:
        raise HttpError(f"only http:// and https:// URLs: {url}")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    if parts.scheme == "https":
        # Verified against the suite's own certificate (tlscerts.trust).
        context = client_context()
        conn = http.client.HTTPSConnection(
            parts.hostname, parts.port or 443, timeout=TIMEOUT, context=context
        )
        return conn, target
    return http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=TIMEOUT), target


def request(
    method: str, url: str, headers: dict[str, str] | None = None, body: bytes | None = None
) -> Reply:
    conn, target = connect(url)
    try:
        conn.request(method, target, body=body, headers={"Connection": "close", **(headers or {})})
        resp = conn.getresponse()
        data = resp.read()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    except OSError as exc:
        raise HttpError(f"{method} {url}: {exc}") from None
    finally:
        conn.close()


def download(url: str, headers: dict[str, str] | None = None) -> Transfer:
    """GET ``url`` to nowhere; raises HttpError if the connection fails."""
    buffer = memoryview(bytearray(READ_SIZE))
    conn, target = connect(url)
    try:
        started = time.perf_counter()
        conn.request("GET", target, headers={"Connection": "close", **(headers or {})})
        resp = conn.getresponse()
        ttfb = time.perf_counter() - started
        length = resp.getheader("Content-Length")
        total = 0
        while True:
            count = resp.readinto(buffer)
            if not count:
                break
            total += count
        seconds = time.perf_counter() - started
        return Transfer(resp.status, total, seconds, ttfb, int(length) if length else None)
    except (OSError, http.client.HTTPException) as exc:
        raise HttpError(f"GET {url}: {exc}") from None
    finally:
        conn.close()


def body_digest(url: str) -> str:
    """GET ``url`` and hash the body: ``sha256:…``, or a line saying why there is none."""
    conn, target = connect(url)
    try:
        conn.request("GET", target, headers={"Connection": "close"})
        resp = conn.getresponse()
        if resp.status != 200:
            return f"HTTP {resp.status}"
        hasher = hashlib.sha256()
        buffer = memoryview(bytearray(READ_SIZE))
        while count := resp.readinto(buffer):
            hasher.update(buffer[:count])
        return "sha256:" + hasher.hexdigest()
    except (OSError, http.client.HTTPException) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


def upload(method: str, url: str, path: Path, headers: dict[str, str] | None = None) -> Reply:
    """Send ``path`` as the body with ``sendfile`` (a 1 GiB push takes about a second)."""
    size = path.stat().st_size
    conn, target = connect(url)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for name, value in {
            "Connection": "close",
            "Content-Type": "application/octet-stream",
            **(headers or {}),
            "Content-Length": str(size),
        }.items():
            conn.putheader(name, value)
        conn.endheaders()
        assert conn.sock is not None
        with path.open("rb") as handle:
            sent = conn.sock.sendfile(handle)  # handles the socket's timeout mode
        if sent != size:
            raise HttpError(f"{method} {url}: sent {sent} of {size} bytes")
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    except OSError as exc:
        raise HttpError(f"{method} {url}: {exc}") from None
    finally:
        conn.close()
