"""A tiny registry stand-in that answers with canned raw bytes, for what a real one never sends.

Contract:
- ``RawUpstream().start()`` listens on 127.0.0.1:free port (``url``); ``stop()`` closes it.
- ``answer(path, raw)`` makes a request for exactly ``path`` (query ignored) get ``raw``
  as the whole response (status line, headers, body: a broken chunked encoding, say),
  after which the connection is closed. ``blob(path, body)`` answers a well-formed 200
  with ``body``. ``GET /v2/`` answers 200 ``{}``; anything else is a 404 OCI error.
- ``seen`` records every request as (method, path, headers), oldest first;
  ``headers_for(method, path)`` are the headers of the first one that matched.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import urlsplit

from .ports import LOOPBACK, free_port

NOT_FOUND = b'{"errors":[{"code":"NAME_UNKNOWN","message":"not here"}]}'


def response(status: str, body: bytes, *headers: str) -> bytes:
    """A well-formed HTTP/1.1 response that closes the connection."""
    head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", "Connection: close", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]


class RawUpstream:
    def __init__(self) -> None:
        self.port = free_port()
        self.seen: list[Seen] = []
        self._answers: dict[str, bytes] = {"/v2/": response("200 OK", b"{}")}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def answer(self, path: str, raw: bytes) -> None:
        with self._lock:
            self._answers[path] = raw

    def blob(self, path: str, body: bytes) -> None:
        self.answer(path, response("200 OK", body, "Content-Type: application/octet-stream"))

    def headers_for(self, method: str, path: str) -> dict[str, str]:
        with self._lock:
            for seen in self.seen:
                if seen.method == method and seen.path == path:
                    return seen.headers
        raise AssertionError(f"no {method} {path} reached the upstream: {self.seen}")

    def _reply(self, method: str, target: str, headers: dict[str, str]) -> bytes:
        path = urlsplit(target).path
        with self._lock:
            self.seen.append(Seen(method, path, headers))
            raw = self._answers.get(path)
        if raw is None:
            raw = response("404 Not Found", NOT_FOUND, "Content-Type: application/json")
        if method == "HEAD":
            raw = raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
        return raw

    def start(self) -> Self:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _handle(self) -> None:
                raw = upstream._reply(self.command, self.path, dict(self.headers.items()))
                self.wfile.write(raw)
                self.wfile.flush()
                self.close_connection = True

            do_GET = do_HEAD = _handle

        self._server = ThreadingHTTPServer((LOOPBACK, self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, name="raw-upstream", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
