"""A TCP pass-through on 127.0.0.1 that can slow or stall what it forwards.

For services whose clients sign the host they connect to (S3's SigV4 signs the
``Host`` header): bytes pass untouched, so the proxy's own address is what gets
signed and checked, and an HTTP-level proxy that rewrites ``Host`` cannot be used.

Contract:
- ``TcpProxy(target_port).start()`` listens on 127.0.0.1:``port`` and forwards every
  connection to 127.0.0.1:``target_port`` (two daemon threads per connection).
- ``upload_rate`` (bytes/s, client → target) and ``download_rate`` (target → client)
  throttle the two directions; None passes bytes at full speed. Changes apply to
  connections already open.
- ``stall()`` stops forwarding in both directions (connections stay open, nothing
  moves: a hung peer); ``resume()`` lets bytes flow again.
- ``stop()`` closes the listener and every connection (the port then refuses), by
  closing their sockets; ``sent_up`` counts bytes forwarded client → target.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Self

from .ports import LOOPBACK, free_port

CHUNK = 64 * 1024


class TcpProxy:
    def __init__(self, target_port: int, *, port: int | None = None) -> None:
        self.target_port = target_port
        self.port = port or free_port()
        self.upload_rate: float | None = None
        self.download_rate: float | None = None
        self.sent_up = 0
        self._flowing = threading.Event()
        self._flowing.set()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> Self:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((LOOPBACK, self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            open_sockets, self._sockets = list(self._sockets), set()
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._flowing.set()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                target = socket.create_connection((LOOPBACK, self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            target.settimeout(None)
            with self._lock:
                self._sockets.update((client, target))
            threading.Thread(target=self._pump, args=(client, target, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(target, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, dest: socket.socket, up: bool) -> None:
        started = time.monotonic()
        moved = 0
        try:
            while True:
                data = source.recv(CHUNK)
                if not data:
                    break
                self._flowing.wait()
                rate = self.upload_rate if up else self.download_rate
                for start in range(0, len(data), 8192 if rate else len(data)):
                    piece = data[start : start + (8192 if rate else len(data))]
                    dest.sendall(piece)
                    moved += len(piece)
                    if up:
                        self.sent_up += len(piece)
                    if rate:
                        ahead = moved / rate - (time.monotonic() - started)
                        if ahead > 0:
                            time.sleep(min(ahead, 1.0))
                    else:
                        started, moved = time.monotonic(), 0
        except OSError:
            pass
        finally:
            for sock in (source, dest):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
