"""Fills in tests: a stand-in for one in flight, and a reader's whole body.

- ``live_fill(layout, digest, size, written=b"")``: its size note, its partial, and the
  partial's lock, held for the ``with`` block, as a running fill holds them.
- ``read_all(reader)``: every byte a ``FillReader`` serves, read as a client's download
  reads them (up to what is readable, then wait for more), then the reader detached.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

from registry_cache.digest import Digest
from registry_cache.store.fill import FillReader
from registry_cache.store.layout import Layout


@contextlib.contextmanager
def live_fill(layout: Layout, digest: Digest, size: int, written: bytes = b"") -> Iterator[int]:
    """Announce ``size`` bytes and hold the partial's flock, like a running fill does."""
    layout.fills.mkdir(parents=True, exist_ok=True)
    layout.size_note(digest).write_text(str(size))
    layout.partial(digest).write_bytes(written)
    fd = os.open(layout.partial(digest), os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield fd
    finally:
        os.close(fd)


async def read_all(reader: FillReader) -> bytes:
    size = await reader.wait_size()
    handle = reader.open()
    pos, out = 0, bytearray()
    try:
        while pos < size:
            end = await reader.readable(pos)
            out += os.pread(handle.fileno(), end - pos, pos)
            pos = end
    finally:
        handle.close()
        reader.detach()
    return bytes(out)
