"""A stand-in for a fill in flight: its size note, its partial, and the partial's lock."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

from registry_cache.digest import Digest
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
