"""Upstream client timing: header timeout vs body timeout, and bytes handed on as they come.

Against tiny socket servers on 127.0.0.1 that answer on a schedule.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import urllib3

from registry_cache.store.pipes import CHUNK, ReadSizer
from registry_cache.upstream.client import UpstreamTimeout
from tests.harness.scripted import client_for

DIGEST = "sha256:" + "a" * 64
Script = Callable[[socket.socket], None]


class Scheduled:
    """Accepts connections and runs ``script(conn)`` on each (after reading the request)."""

    def __init__(self, script: Script) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.script = script
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                request += chunk
            try:
                self.script(conn)
            except OSError:
                pass

    def close(self) -> None:
        self.stop.set()
        self.listener.close()


@pytest.fixture
def serve() -> Iterator[Callable[[Script], Scheduled]]:
    servers: list[Scheduled] = []

    def make(script: Script) -> Scheduled:
        servers.append(Scheduled(script))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def test_hanging_upstream_times_out_after_header_timeout(
    serve: Callable[[Script], Scheduled],
) -> None:
    server = serve(lambda conn: time.sleep(5))  # reads the request, never answers
    client = client_for(server.url, header_timeout="0.5s", read_timeout="30s")
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        client.get_manifest("library/x", "1")
    assert time.monotonic() - started < 2.0  # once: a timeout is not retried


def test_blob_body_may_pause_longer_than_the_header_timeout(
    serve: Callable[[Script], Scheduled],
) -> None:
    def script(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nabcd")
        time.sleep(1.0)  # twice the header timeout, well within read_timeout
        conn.sendall(b"efgh")

    server = serve(script)
    client = client_for(server.url, header_timeout="0.5s", read_timeout="5s")
    stream = client.open_blob("library/x", DIGEST)
    buffer = memoryview(bytearray(1 << 20))
    got = b""
    while count := stream.readinto(buffer):
        got += bytes(buffer[:count])
    stream.close()
    assert got == b"abcdefgh"


def test_read_size_follows_the_upstream_pace() -> None:
    # A read returns when its buffer is full: from a slow upstream a big buffer
    # would hold bytes back from clients, from a fast one small buffers cost CPU.
    sizer = ReadSizer()
    start = sizer.size
    sizer.took(0.001, full=True)
    assert sizer.size == start * 2
    for _ in range(20):
        sizer.took(0.001, full=True)
    assert sizer.size == CHUNK
    for _ in range(20):
        sizer.took(0.2, full=True)
    assert sizer.size == ReadSizer.MIN
    sizer.took(0.001, full=False)  # a short read (end of body) says nothing about pace
    assert sizer.size == ReadSizer.MIN


def test_small_reads_hand_on_bytes_as_they_arrive(serve: Callable[[Script], Scheduled]) -> None:
    def script(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nabcd")
        time.sleep(1.0)
        conn.sendall(b"efgh")

    server = serve(script)
    stream = client_for(server.url).open_blob("library/x", DIGEST)
    buffer = memoryview(bytearray(4))
    started = time.monotonic()
    assert stream.readinto(buffer) == 4 and bytes(buffer) == b"abcd"
    assert time.monotonic() - started < 0.5
    stream.close()


def test_body_stall_beyond_read_timeout_raises_for_a_resume(
    serve: Callable[[Script], Scheduled],
) -> None:
    def script(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nabcd")
        time.sleep(3.0)

    server = serve(script)
    client = client_for(server.url, header_timeout="5s", read_timeout="0.5s")
    stream = client.open_blob("library/x", DIGEST)
    buffer = memoryview(bytearray(4))
    assert stream.readinto(buffer) == 4
    started = time.monotonic()
    with pytest.raises(urllib3.exceptions.HTTPError):  # the fill resumes with Range
        stream.readinto(buffer)
    assert time.monotonic() - started < 2.0
    stream.close()
