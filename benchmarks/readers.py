"""Clients that GET a blob to nowhere, each reading the way a real one does.

- ``1 MiB reads``: ``httpio.download`` (Python, one 1 MiB buffer): fast enough that a
  fast server is not limited by it (the suite's figure since the first issue).
- ``32 KiB reads``: ``native/httpget.c``, one ``read(2)`` of 32 KiB at a time, as Go's
  ``io.Copy`` does (containerd, Docker, skopeo and podman all pull through it).
- ``curl``: ``curl -o /dev/null`` as a person types it, with curl's default buffer
  (poll, then recv of up to 100 KiB).

Every reader returns an ``httpio.Transfer`` (seconds: request sent → last byte;
curl's own timer also counts its connect, a few tens of µs on loopback).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from urllib.parse import urlsplit

from .httpio import HttpError, Transfer, download
from .native import build
from .servers import clean_env, find_binary

MIB_READS = "1 MiB reads"
GO_READS = "32 KiB reads"
CURL = "curl"
READERS = (MIB_READS, GO_READS, CURL)
GO_READ_SIZE = 32 << 10
TIMEOUT = 300.0


class Readers:
    """The readers available here; C helpers are built into ``build_dir`` on first use."""

    def __init__(self, build_dir: Path) -> None:
        self.build_dir = build_dir

    def available(self) -> dict[str, str | None]:
        """Reader → None when usable, else why not."""
        return {
            MIB_READS: None,
            GO_READS: None if _has_cc() else "gcc is not installed",
            CURL: None if find_binary("curl") else "curl is not installed",
        }

    def get(self, reader: str, url: str) -> Transfer:
        if reader == MIB_READS:
            return download(url)
        if reader == GO_READS:
            return self._httpget(url, GO_READ_SIZE)
        if reader == CURL:
            return _curl(url)
        raise ValueError(f"unknown reader {reader}")

    def _httpget(self, url: str, read_size: int) -> Transfer:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise HttpError(f"httpget speaks plain http to host:port only: {url}")
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        argv = [str(build("httpget", self.build_dir)), parts.hostname, str(parts.port)]
        argv += [target, str(read_size)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False)
        if done.returncode != 0:
            raise HttpError(f"GET {url} (httpget): {done.stderr.strip()[-300:]}")
        return parse_httpget(done.stdout)


def parse_httpget(line: str) -> Transfer:
    """``STATUS BYTES SECONDS TTFB CONTENT_LENGTH CONNECT`` (httpget.c's line) → Transfer."""
    try:
        status, body, seconds, ttfb, length, connect = line.split()
        expected = int(length)
        return Transfer(
            int(status),
            int(body),
            float(seconds),
            float(ttfb),
            None if expected < 0 else expected,
            float(connect),
        )
    except ValueError:
        raise HttpError(f"httpget printed {line!r}") from None


def _curl(url: str) -> Transfer:
    binary = find_binary("curl") or "curl"
    fmt = "%{http_code} %{size_download} %{time_total} %{time_starttransfer}"
    argv = [binary, "-s", "-o", "/dev/null", "--noproxy", "*", "-w", fmt, url]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=TIMEOUT, check=False, env=clean_env()
    )
    if done.returncode != 0:
        raise HttpError(f"GET {url} (curl exit {done.returncode}): {done.stderr.strip()[-300:]}")
    return parse_curl(done.stdout)


def parse_curl(text: str) -> Transfer:
    """curl's ``-w`` line → Transfer (curl does not report Content-Length: None)."""
    try:
        status, body, seconds, ttfb = text.split()
        return Transfer(int(status), int(body), float(seconds), float(ttfb), None)
    except ValueError:
        raise HttpError(f"curl printed {text!r}") from None


def _has_cc() -> bool:
    return find_binary("gcc") is not None or find_binary("cc") is not None
