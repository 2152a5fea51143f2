"""A fault-injecting HTTP proxy to put between the cache and a real upstream.

Contract:
- ``FaultProxy(target_url).start()`` listens on 127.0.0.1:free port and forwards
  every request to ``target_url`` (headers and body passed through, redirects not
  followed), streaming the answer back.
- ``rules`` (a list, evaluated in order, first match wins) shape answers for
  requests whose method and path match: ``status`` answers that status instead
  of forwarding (``times`` limits how often), ``headers`` are sent with that
  answer, or added to (replacing) upstream's on a forwarded one (e.g.
  ``ratelimit-remaining``), ``rate`` limits body bytes/s,
  ``reset_after`` drops the connection after that many body bytes, ``corrupt``
  flips one body byte, ``delay`` waits before answering, ``hang`` never answers.
- ``log`` records (method, path, range header, status) for every request.
- ``stop()`` closes the server and every connection still open (kept-alive ones
  too), so the next request finds the port refusing; threads are daemons and end
  with their sockets.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import urllib3

from .ports import LOOPBACK, free_port

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "host"}


@dataclass
class Rule:
    path: str = ""  # substring of the path to match
    method: str | None = None
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    times: int | None = None  # how many requests the rule applies to (None = always)
    rate: float | None = None  # body bytes per second
    reset_after: int | None = None
    corrupt: bool = False
    delay: float = 0.0
    hang: bool = False
    used: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.used >= self.times:
            return False
        if self.method is not None and self.method != method:
            return False
        return self.path in path


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    range: str | None
    status: int


class FaultProxy:
    def __init__(self, target_url: str) -> None:
        self.target = target_url.rstrip("/")
        self.port = free_port()
        self.rules: list[Rule] = []
        self.log: list[Seen] = []
        self._lock = threading.Lock()
        self._pool = urllib3.PoolManager(maxsize=32)
        self._server: ThreadingHTTPServer | None = None
        self._stop_hanging = threading.Event()
        self._connections: set[socket.socket] = set()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def count(self, method: str | None = None, path: str = "", status: int | None = None) -> int:
        with self._lock:
            return sum(
                1
                for s in self.log
                if (method is None or s.method == method)
                and path in s.path
                and (status is None or s.status == status)
            )

    def _pick(self, method: str, path: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.matches(method, path):
                    rule.used += 1
                    return rule
        return None

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self.log.append(seen)

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with proxy._lock:
                    proxy._connections.add(self.connection)

            def finish(self) -> None:
                with proxy._lock:
                    proxy._connections.discard(self.connection)
                super().finish()

            def _handle(self) -> None:
                proxy._serve(self)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        server = _QuietServer((LOOPBACK, self.port), Handler)
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, name="fault-proxy", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop_hanging.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            connections, self._connections = list(self._connections), set()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        method, path = handler.command, handler.path
        rule = self._pick(method, path)
        if rule is not None and rule.hang:
            self._record(Seen(method, path, handler.headers.get("Range"), 0))
            self._stop_hanging.wait(120)
            handler.close_connection = True
            return
        if rule is not None and rule.delay:
            time.sleep(rule.delay)
        if rule is not None and rule.status is not None:
            self._record(Seen(method, path, handler.headers.get("Range"), rule.status))
            handler.send_response(rule.status)
            for key, value in rule.headers.items():
                handler.send_header(key, value)
            handler.send_header("Content-Length", str(len(rule.body)))
            handler.end_headers()
            if method != "HEAD":
                handler.wfile.write(rule.body)
            return
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else None
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in HOP_HEADERS}
        upstream = self._pool.urlopen(
            method,
            self.target + path,
            body=body,
            headers=headers,
            redirect=False,
            retries=False,
            preload_content=False,
            decode_content=False,
        )
        self._record(Seen(method, path, handler.headers.get("Range"), upstream.status))
        handler.send_response(upstream.status)
        extra = rule.headers if rule is not None else {}
        replaced = {key.lower() for key in extra}
        for key, value in upstream.headers.items():
            if key.lower() not in HOP_HEADERS and key.lower() not in replaced:
                handler.send_header(key, value)
        for key, value in extra.items():
            handler.send_header(key, value)
        handler.end_headers()
        if method == "HEAD":
            upstream.release_conn()
            return
        self._stream(handler, upstream, rule)

    def _stream(
        self,
        handler: BaseHTTPRequestHandler,
        upstream: urllib3.BaseHTTPResponse,
        rule: Rule | None,
    ) -> None:
        sent = 0
        corrupted = False
        started = time.monotonic()
        chunk_size = 64 * 1024
        try:
            while True:
                chunk = upstream.read(chunk_size)
                if not chunk:
                    break
                if rule is not None and rule.corrupt and not corrupted:
                    chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                    corrupted = True
                if rule is not None and rule.reset_after is not None:
                    room = rule.reset_after - sent
                    if room <= len(chunk):
                        handler.wfile.write(chunk[: max(room, 0)])
                        handler.wfile.flush()
                        _reset(handler.connection)
                        handler.close_connection = True
                        return
                handler.wfile.write(chunk)
                sent += len(chunk)
                if rule is not None and rule.rate:
                    ahead = sent / rule.rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True
        finally:
            upstream.release_conn()


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """Clients that reset mid-answer are what this proxy is for: no tracebacks."""


def _reset(conn: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), like a connection dropped mid-way."""
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        conn.close()
    except OSError:
        pass
