"""A scripted HTTP server on 127.0.0.1 for client unit tests (no registry behind it).

Contract:
- ``Scripted(tls=None)`` listens on 127.0.0.1 and a kernel-chosen port in daemon threads.
  ``script`` maps a path prefix to a list of answers (``Answer`` or a callable taking the
  ``Seen`` request); the first matching prefix wins, its answers are used in order and
  the last one repeats. Anything else is a 404 with an empty OCI error body.
- ``Answer.body`` is sent with ``Content-Length``, or chunked when ``chunked``;
  ``stream`` (an iterator of chunks) is sent chunked, and stops quietly when the client
  hangs up (endless bodies are allowed: the client under test must stop reading).
- ``seen`` records every request (method, path with query, headers, and whether it came
  over TLS) before it is answered.
- With ``tls`` (``certs.TlsFiles``) the same port speaks both plain HTTP and HTTPS: the
  first byte of a connection decides (0x16 starts a TLS handshake). So
  ``https://127.0.0.1:P`` and ``http://127.0.0.1:P`` name one server, as ``https://host``
  and ``http://host`` do on the default ports, and a test sees which one a client used.
- ``close()`` stops the server and closes its socket.
- ``client_for(url, **config)``: the product's ``UpstreamClient`` for an upstream at
  ``url`` named ``docker.io`` (``config``: more ``UpstreamConfig`` keys, ``name`` too).
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import urllib3

from registry_cache.config import UpstreamConfig
from registry_cache.upstream.client import UpstreamClient

from .certs import TlsFiles
from .ports import LOOPBACK


@dataclass
class Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    chunked: bool = False
    stream: Iterator[bytes] | None = None


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    tls: bool = False


Script = dict[str, list[Answer | Callable[[Seen], Answer]]]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    tls_context: ssl.SSLContext | None = None

    def get_request(self) -> tuple[socket.socket, object]:
        conn, addr = self.socket.accept()
        if self.tls_context is not None:
            conn.settimeout(5)
            first = conn.recv(1, socket.MSG_PEEK)
            if first == b"\x16":
                conn = self.tls_context.wrap_socket(conn, server_side=True)
            conn.settimeout(None)
        return conn, addr

    def handle_error(self, request: object, client_address: object) -> None:
        """A client closing early is part of several tests: no tracebacks."""


class Scripted:
    """See the module docstring."""

    def __init__(self, tls: TlsFiles | None = None) -> None:
        self.script: Script = {}
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _handle(self) -> None:
                seen = Seen(
                    self.command,
                    self.path,
                    dict(self.headers.items()),
                    tls=isinstance(self.connection, ssl.SSLSocket),
                )
                with outer._lock:
                    outer.seen.append(seen)
                answer = outer.answer(seen)
                self.send_response(answer.status)
                for key, value in answer.headers.items():
                    self.send_header(key, value)
                chunked = answer.chunked or answer.stream is not None
                if chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                else:
                    self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                if self.command == "HEAD":
                    return
                if not chunked:
                    self.wfile.write(answer.body)
                    return
                chunks = answer.stream if answer.stream is not None else iter([answer.body])
                try:
                    for chunk in chunks:
                        if chunk:
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.write(b"0\r\n\r\n")
                except OSError:
                    self.close_connection = True

            do_GET = do_HEAD = _handle

        self.server = _Server((LOOPBACK, 0), Handler)
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls.cert), str(tls.key))
            self.server.tls_context = context
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def https_url(self) -> str:
        return f"https://{LOOPBACK}:{self.port}"

    def answer(self, seen: Seen) -> Answer:
        with self._lock:
            for prefix, answers in self.script.items():
                if seen.path.startswith(prefix):
                    item = answers.pop(0) if len(answers) > 1 else answers[0]
                    break
            else:
                item = Answer(404, {"Content-Type": "application/json"}, b'{"errors":[]}')
        return item(seen) if callable(item) else item

    def count(self, prefix: str) -> int:
        with self._lock:
            return sum(1 for s in self.seen if s.path.startswith(prefix))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def client_for(url: str, **config: object) -> UpstreamClient:
    settings = UpstreamConfig.model_validate({"name": "docker.io", "url": url, **config})
    return UpstreamClient(settings, urllib3.PoolManager())
