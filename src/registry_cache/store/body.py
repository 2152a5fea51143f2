"""What the store hands the web layer for a blob: a body answer, never a path.

- ``FileBody``: an open local file, sent with ``sendfile``. While it is open it
  holds a shared ``flock``, which eviction respects (``store/evict.py``): a blob
  being served is never chosen, in any worker.
- ``GrowingBody``: a fill still in flight (``store/fill.py``), streamed as it grows.
- ``StreamBody``: bytes arriving from elsewhere (a bucket, a peer), chunk by chunk.
- ``RedirectBody``: send the client there (a presigned URL).

Whoever receives a body awaits ``close()`` exactly once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import BinaryIO, Protocol


@dataclass(slots=True)
class FileBody:
    file: BinaryIO
    size: int

    @classmethod
    def open(cls, path: str) -> FileBody | None:
        """Open ``path`` for serving; None when it is absent."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        # Shared: any number of readers; eviction's exclusive try-lock fails while
        # one is open. Never blocks (only eviction takes LOCK_EX, and never waits).
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return cls(os.fdopen(fd, "rb", buffering=0), os.fstat(fd).st_size)

    async def close(self) -> None:
        self.file.close()  # releases the shared lock


class GrowingSource(Protocol):
    """A blob that is still arriving (``store.fill.FillReader`` satisfies it)."""

    async def readable(self, pos: int) -> int:
        """Wait until bytes beyond ``pos`` may be sent; return the readable end."""

    def open(self) -> BinaryIO: ...

    def detach(self) -> None: ...


@dataclass(slots=True)
class GrowingBody:
    source: GrowingSource
    size: int

    async def close(self) -> None:
        self.source.detach()


@dataclass(slots=True)
class StreamBody:
    chunks: AsyncIterator[bytes]
    size: int
    on_close: Callable[[], Awaitable[None]] | None = None

    async def close(self) -> None:
        aclose = getattr(self.chunks, "aclose", None)
        if aclose is not None:
            # Closing the generator runs its finally blocks (connections returned).
            with contextlib.suppress(Exception):
                await aclose()
        if self.on_close is not None:
            await self.on_close()


@dataclass(frozen=True, slots=True)
class RedirectBody:
    url: str
    size: int

    async def close(self) -> None:
        pass


Body = FileBody | GrowingBody | StreamBody | RedirectBody
