"""The suite's readers against a real local HTTP server: bytes counted, headers parsed."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from benchmarks.httpio import HttpError
from benchmarks.native import NativeError, build, compiler
from benchmarks.readers import CURL, GO_READS, MIB_READS, Readers, parse_curl, parse_httpget

BODY = os.urandom(3 * (1 << 20) + 12345)  # not a multiple of any read size


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/missing":
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def _require(tool_present: bool, what: str) -> None:
    if not tool_present:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{what} is not installed (scripts/install-test-deps.sh)")
        pytest.skip(f"{what} is not installed")


@pytest.mark.parametrize("reader", [MIB_READS, GO_READS, CURL])
def test_every_reader_reads_the_whole_body(reader: str, server: str, tmp_path: Path) -> None:
    readers = Readers(tmp_path / "native")
    _require(readers.available()[reader] is None, reader)
    got = readers.get(reader, f"{server}/blob")
    assert got.status == 200
    assert got.bytes == len(BODY)
    assert got.complete
    assert 0 < got.ttfb <= got.seconds


def test_httpget_reports_status_and_length(server: str, tmp_path: Path) -> None:
    _require(compiler() is not None, "gcc")
    got = Readers(tmp_path / "native").get(GO_READS, f"{server}/missing")
    assert (got.status, got.bytes, got.expected) == (404, 0, 0)
    assert not got.complete


def test_httpget_fails_on_a_closed_port(tmp_path: Path) -> None:
    _require(compiler() is not None, "gcc")
    with pytest.raises(HttpError, match="connect"):
        Readers(tmp_path / "native").get(GO_READS, "http://127.0.0.1:1/blob")


def test_build_reports_a_missing_source(tmp_path: Path) -> None:
    with pytest.raises(NativeError, match="no source"):
        build("no-such-helper", tmp_path)


def test_parsers() -> None:
    got = parse_httpget("200 1048576 0.250000 0.001000 1048576 0.000100\n")
    assert (got.status, got.bytes, got.expected) == (200, 1048576, 1048576)
    assert got.connect == pytest.approx(0.0001)
    assert got.rate == pytest.approx(1048576 / 0.25)
    assert parse_httpget("200 10 0.1 0.01 -1 0.0").expected is None
    assert parse_curl("200 1024 0.5 0.1").bytes == 1024
    with pytest.raises(HttpError):
        parse_httpget("garbage")
    with pytest.raises(HttpError):
        parse_curl("")
