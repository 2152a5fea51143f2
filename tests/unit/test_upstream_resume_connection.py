"""A blob body that broke off leaves its connection closed, not pooled.

Found by the benchmark suite's WAN scenario (a flow that dies mid-blob): the Range
resume went out on the same, dead connection — urllib3 took it back into its pool
half-read — and waited out the whole header timeout before a new connection.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import urllib3

from registry_cache.config import UpstreamConfig
from registry_cache.upstream.client import UpstreamClient
from tests.unit.test_upstream_streaming import Scheduled

DIGEST = "sha256:" + "b" * 64
HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 2097152\r\n\r\n"
PART = (
    b"HTTP/1.1 206 Partial Content\r\nContent-Length: 16\r\n"
    b"Content-Range: bytes 65536-65551/2097152\r\n\r\n"
)


class FirstStalls:
    """Connection 1: headers and 64 KiB of a 2 MiB body, then silence (a dead flow).
    Later connections: a 206 at once."""

    def __init__(self) -> None:
        self.connections = 0
        self.release = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, conn: socket.socket) -> None:
        with self._lock:
            self.connections += 1
            first = self.connections == 1
        if first:
            conn.sendall(HEAD + bytes(65536))
            self.release.wait(30)  # neither reads nor writes: what a blackholed flow does
            return
        conn.sendall(PART + bytes(16))


@pytest.fixture
def stalling() -> Iterator[tuple[Scheduled, FirstStalls]]:
    script = FirstStalls()
    server = Scheduled(script)
    try:
        yield server, script
    finally:
        script.release.set()
        server.close()


def test_a_resume_after_a_read_timeout_uses_a_new_connection(
    stalling: tuple[Scheduled, FirstStalls],
) -> None:
    server, script = stalling
    config = UpstreamConfig.model_validate(
        {"name": "docker.io", "url": server.url, "read_timeout": "0.3s", "header_timeout": "4s"}
    )
    client = UpstreamClient(config, urllib3.PoolManager())
    stream = client.open_blob("library/x", DIGEST)
    assert stream.readinto(memoryview(bytearray(65536))) == 65536
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        stream.readinto(memoryview(bytearray(65536)))  # the flow went silent
    stream.close()

    started = time.monotonic()
    again = client.open_blob("library/x", DIGEST, offset=65536)
    took = time.monotonic() - started
    again.close()
    assert again.start == 65536
    assert script.connections == 2
    assert took < 2.0  # not the 4 s header timeout on the dead connection
