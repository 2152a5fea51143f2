"""Blob responses: committed files (hits) and fills that are still growing.

Plain HTTP answers are sent with ``loop.sendfile`` (``os.sendfile`` on the default
asyncio loop): hits from the committed file, fills from the file being written, to
every client, on this host or another. TLS has no sendfile: the body is read from
the page cache in 512 KiB pieces on the loop and written (a 1 MiB transport
buffer). uvloop is deliberately not used: no ``loop.sendfile``.

A hit is sent corked (``TCP_CORK`` from the first body byte to the last, as nginx's
``tcp_nopush``): aiohttp turns Nagle off on every connection, and then each 64 KiB
batch a ``sendfile`` call hands to TCP leaves as one full segment and a runt of its
remainder, twice the segments per GiB and 1.4x nginx's CPU with 32 KiB readers
(README design notes). A fill's body is not corked: its tail would wait for the next
chunk (up to the kernel's 200 ms) and a cold client's first bytes with it.

Hits to clients on this host were once copied the same way, because a client on
loopback then reads bytes the server just touched; measured again with server and
client on a core each, sendfile was faster for every reader and cheaper in CPU for
1 MiB reads (README design notes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from aiohttp import web

from ..errors import RangeInvalid
from ..store.body import Body, FileBody, GrowingBody, RedirectBody, StreamBody
from ..store.fill import FillFailed

log = logging.getLogger("registry_cache.web")

# Upper bound of one sendfile call, so a huge one does not monopolise the loop.
SENDFILE_SPAN = 16 << 20
# Over TLS: read this much at a time (it stays in a core's L2 cache on its way through
# the cipher to the socket), and let the transport buffer this much.
COPY_CHUNK = 512 << 10
COPY_BUFFER = 1 << 20
TCP_CORK: int | None = getattr(socket, "TCP_CORK", None)  # Linux only


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int  # exclusive

    @property
    def length(self) -> int:
        return self.end - self.start


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """``Range: bytes=a-b`` → the span to send; None → whole body (200).

    Multiple ranges and malformed headers are ignored (a 200 is always a valid
    answer to Range); an unsatisfiable single range raises RANGE_INVALID (416).
    """
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first == "":
            suffix = int(last)
            if suffix <= 0:
                raise RangeInvalid(size)
            return ByteRange(max(0, size - suffix), size)
        start = int(first)
        end = int(last) + 1 if last else size
    except ValueError:
        return None
    if start < 0 or end <= start:
        if start >= size:
            raise RangeInvalid(size)
        return None
    if start >= size:
        raise RangeInvalid(size)
    return ByteRange(start, min(end, size))


def blob_headers(digest: str, size: int, span: ByteRange | None) -> dict[str, str]:
    headers = {
        "Content-Type": "application/octet-stream",
        "Docker-Content-Digest": digest,
        "ETag": f'"{digest}"',
        "Accept-Ranges": "bytes",
        # Content-addressed: the bytes behind a digest never change.
        "Cache-Control": "max-age=31536000, immutable",
    }
    if span is not None:
        headers["Content-Range"] = f"bytes {span.start}-{span.end - 1}/{size}"
    return headers


async def send_body(
    request: web.Request, response: web.StreamResponse, body: Body, span: ByteRange
) -> int:
    """Send ``span`` of a body answer; returns bytes sent.

    A growing body whose fill fails (upstream broke for good, digest mismatch) has
    the connection aborted short of Content-Length: the client sees a failed
    download, never a complete corrupt one.
    """
    if isinstance(body, FileBody):

        async def whole(pos: int) -> int:
            return span.end

        return await _send(request, response, body.file, span, whole, cork=True)
    if isinstance(body, GrowingBody):
        with body.source.open() as handle:
            return await _send(request, response, handle, span, body.source.readable, cork=False)
    if isinstance(body, RedirectBody):
        raise web.HTTPTemporaryRedirect(body.url)
    return await _send_stream(request, response, body, span)


async def _send_stream(
    request: web.Request, response: web.StreamResponse, body: StreamBody, span: ByteRange
) -> int:
    """Bytes arriving from elsewhere (a bucket, a peer), as they come."""
    await response.prepare(request)
    if request.method == "HEAD" or span.length == 0:
        await response.write_eof()
        return 0
    pos = sent = 0
    async for chunk in body.chunks:
        end = pos + len(chunk)
        lo, hi = max(pos, span.start), min(end, span.end)
        if lo < hi:
            await response.write(chunk[lo - pos : hi - pos])
            sent += hi - lo
        pos = end
        if pos >= span.end:
            break
    if sent != span.length:
        transport = request.transport
        if transport is not None:
            transport.abort()  # short: the client must not take it for complete
        raise ConnectionResetError("stream ended early")
    await response.write_eof()
    return sent


async def _send(
    request: web.Request,
    response: web.StreamResponse,
    handle: BinaryIO,
    span: ByteRange,
    readable: Callable[[int], Awaitable[int]],
    *,
    cork: bool,
) -> int:
    """Send ``span`` of ``handle`` as ``readable(pos)`` allows, with sendfile (read and
    written over TLS); returns bytes sent. ``cork``: the whole span is readable now, so
    hold partial segments back until its last byte (plain HTTP only)."""
    await response.prepare(request)
    if request.method == "HEAD" or span.length == 0:
        await response.write_eof()
        return 0
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("client went away")
    loop = asyncio.get_running_loop()
    copy = transport.get_extra_info("sslcontext") is not None  # no sendfile through TLS
    if copy:
        # Big writes, a deep buffer: asyncio's own sendfile fallback hops to a thread
        # per 256 KiB read and stalls at a 64 KiB buffer, which ping-pongs (0.19 GB/s).
        transport.set_write_buffer_limits(high=COPY_BUFFER)
    pos = span.start
    with _corked(transport) if cork and not copy else contextlib.nullcontext():
        while pos < span.end:
            try:
                end = await readable(pos)
            except FillFailed as failed:
                log.error("aborting response for %s: %s", request.path, failed.error)
                transport.abort()
                raise
            count = min(end, span.end, pos + SENDFILE_SPAN) - pos
            if copy:
                done = await _write_copy(response, handle, pos, min(count, COPY_CHUNK))
            else:
                done = await loop.sendfile(transport, handle, pos, count)
            if done == 0:
                raise ConnectionResetError("client went away")
            pos += done
    await response.write_eof()
    return pos - span.start


@contextlib.contextmanager
def _corked(transport: asyncio.BaseTransport) -> Iterator[None]:
    """TCP_CORK on the client's socket for the block: full segments only; uncorking at
    the end sends the last partial one at once (and the next response starts clean).

    Corked once for the whole body: cork and uncork around each sendfile call measured
    0.83-0.95x nginx against 1.00x (32 KiB readers and curl)."""
    sock = transport.get_extra_info("socket")
    if sock is None or TCP_CORK is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        yield
        return
    _set_cork(sock, TCP_CORK, 1)
    try:
        yield
    finally:
        _set_cork(sock, TCP_CORK, 0)


def _set_cork(sock: socket.socket, option: int, value: int) -> None:
    # A connection the client closed has no socket to set any more: nothing to flush.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, option, value)


async def _write_copy(response: web.StreamResponse, handle: BinaryIO, pos: int, count: int) -> int:
    """Read ``count`` bytes at ``pos`` and write them to the client (TLS).

    The read runs on the loop: the file is a hit or a fill's written part, so in
    the page cache; a thread hop per chunk cost more than the copy.
    """
    chunk = os.pread(handle.fileno(), count, pos)
    if chunk:
        await response.write(chunk)
    return len(chunk)
