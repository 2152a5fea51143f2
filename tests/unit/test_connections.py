"""ConnectionGate with fake transports: admission, refusal, counting, pass-through."""

from __future__ import annotations

import asyncio

from registry_cache.web.connections import REFUSAL, ConnectionGate


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True


class Inner(asyncio.Protocol):
    def __init__(self) -> None:
        self.events: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        self.events.append(f"data:{data.decode()}")

    def eof_received(self) -> bool | None:
        self.events.append("eof")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append("lost")


def test_connections_beyond_the_limit_are_answered_503_and_closed() -> None:
    inners: list[Inner] = []

    def factory() -> Inner:
        inners.append(Inner())
        return inners[-1]

    clock = [0.0]
    gate = ConnectionGate(factory, limit=2, clock=lambda: clock[0])
    protocols = [gate() for _ in range(3)]
    transports = [Transport() for _ in range(3)]
    for protocol, transport in zip(protocols, transports, strict=True):
        protocol.connection_made(transport)
    assert gate.open == 2 and gate.refused == 1 and len(inners) == 2
    assert transports[2].written == REFUSAL and transports[2].closed
    assert b"503 Service Unavailable" in REFUSAL and b'"code": "UNAVAILABLE"' in REFUSAL
    protocols[2].data_received(b"ignored")
    protocols[2].connection_lost(None)
    assert gate.open == 2  # a refused connection was never counted
    protocols[0].data_received(b"GET")
    protocols[0].eof_received()
    protocols[0].connection_lost(None)
    assert inners[0].events == ["made", "data:GET", "eof", "lost"]
    assert gate.open == 1
    late = gate()
    late.connection_made(Transport())
    assert gate.open == 2 and len(inners) == 3  # the freed slot is taken again
