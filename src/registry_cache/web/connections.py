"""Bounded client connections for one worker: a header timeout and a connection cap.

**Header timeout** (``client_header_timeout``). aiohttp's keep-alive timer is armed
when a connection is accepted and again when each response ends; when it fires
while the connection is still waiting for a complete request, the connection is
closed (``RequestHandler._process_keepalive``), and bytes arriving do not re-arm
it. So ``keepalive_timeout = client_header_timeout`` bounds both a client that
never finishes its headers (one that trickles a byte at a time too) and a
keep-alive connection idle between requests; a request being answered is never
cut. A TLS handshake gets the same bound.

**Connection cap** (``max_connections``). ``ConnectionGate`` counts the open
connections; beyond the cap a new one is accepted and closed at once, after a 503
OCI error on the way out (a client may see that, or a reset). Refusing that way
rather than ceasing to accept: a connection left unaccepted waits in the kernel's
backlog for a slot with no answer, then the backlog fills and new clients' SYNs
are dropped (seconds of retransmits each), and with a socket per worker
(SO_REUSEPORT) the kernel keeps sending this worker its share regardless. A
prompt refusal lets the client retry at once, perhaps on another worker, and
keeps this worker accepting, so a normal client never queues behind a flood.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from yarl import URL

log = logging.getLogger("registry_cache.connections")

# As bind() has it: a burst of connections waits in the kernel, not in SYN retries.
BACKLOG = 1024
REFUSAL_LOG_INTERVAL = 10.0
_BODY = json.dumps(
    {"errors": [{"code": "UNAVAILABLE", "message": "too many connections; retry"}]}
).encode()
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 1\r\nConnection: close\r\n"
    + f"Content-Length: {len(_BODY)}\r\n\r\n".encode()
    + _BODY
)


class ConnectionGate:
    """A protocol factory for ``loop.create_server`` admitting ``limit`` connections."""

    def __init__(
        self,
        factory: Callable[[], asyncio.Protocol],
        limit: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._factory = factory
        self.limit = limit
        self.open = 0
        self.refused = 0
        self._clock = clock
        self._logged_at: float | None = None
        self._logged_refused = 0

    def __call__(self) -> asyncio.Protocol:
        return _Gated(self)

    def admit(self) -> asyncio.Protocol | None:
        """The protocol for a new connection, or None when it must be refused."""
        if self.open >= self.limit:
            self.refused += 1
            self._note_refusal()
            return None
        self.open += 1
        return self._factory()

    def closed(self) -> None:
        self.open -= 1

    def _note_refusal(self) -> None:
        now = self._clock()
        if self._logged_at is None or now - self._logged_at >= REFUSAL_LOG_INTERVAL:
            log.warning(
                "connection limit reached (%d open, max_connections %d): refused %d "
                "connection(s) since the last note",
                self.open, self.limit, self.refused - self._logged_refused,
            )  # fmt: skip
            self._logged_at, self._logged_refused = now, self.refused


class _Gated(asyncio.Protocol):
    """One connection: passed through to aiohttp's protocol if the gate admits it."""

    __slots__ = ("_gate", "_inner")

    def __init__(self, gate: ConnectionGate) -> None:
        self._gate = gate
        self._inner: asyncio.Protocol | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Counted here, not when the factory is called: for TLS this comes after the
        # handshake, and a failed handshake never reports connection_lost.
        self._inner = self._gate.admit()
        if self._inner is None:
            if isinstance(transport, asyncio.WriteTransport):
                transport.write(REFUSAL)
            transport.close()
            return
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        inner, self._inner = self._inner, None
        if inner is not None:
            self._gate.closed()
            inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()


class BoundedSite(web.BaseSite):
    """``web.SockSite`` with its connections counted by a ``ConnectionGate`` and its
    TLS handshakes bounded by the header timeout."""

    __slots__ = ("_handshake_timeout", "_limit", "_sock", "gate")

    def __init__(
        self,
        runner: web.BaseRunner,
        sock: socket.socket,
        *,
        max_connections: int,
        header_timeout: float,
        ssl_context: Any = None,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=BACKLOG)
        self._sock = sock
        self._limit = max_connections
        self._handshake_timeout = header_timeout
        self.gate: ConnectionGate | None = None

    @property
    def name(self) -> str:
        host, port = self._sock.getsockname()[:2]
        return str(URL.build(scheme="https" if self._ssl_context else "http", host=host, port=port))

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None  # set up by runner.setup(), which BaseSite checked
        self.gate = ConnectionGate(server, self._limit)
        self._server = await asyncio.get_running_loop().create_server(
            self.gate,
            sock=self._sock,
            ssl=self._ssl_context,
            backlog=self._backlog,
            ssl_handshake_timeout=self._handshake_timeout if self._ssl_context else None,
        )
