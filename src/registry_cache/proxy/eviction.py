"""Eviction in a worker process: periodically, after fills, before fills, after a full disk.

``EvictionTask`` is the fills' ``FillListener`` (given to ``LocalFills`` in its
constructor) and exists only when a limit is configured, so an unbounded cache
pays nothing. The work itself (``store.evict.Evictor``) runs on the event loop and
hops to threads for file I/O; a fill thread that needs room waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from collections.abc import Sequence

from ..digest import Digest
from ..errors import IndexUnavailable, InsufficientStorage
from ..store.evict import LOCK_WAIT, Entry, Evictor, Report
from ..store.fill import Fill
from .memo import ManifestMemo

log = logging.getLogger("registry_cache.evict")

EVICT_INTERVAL = 30.0
# A fill thread waits at most this long for room (then checks the disk and may 507);
# well under clients' 30 s wait for response headers.
ROOM_WAIT = LOCK_WAIT + 15.0
EMERGENCY_FREE = 256 << 20  # freed after a full disk when the failed fill's size is unknown


class EvictionTask:
    def __init__(self, evictor: Evictor, memo: ManifestMemo) -> None:
        self.evictor = evictor
        self.memo = memo
        self._wake = asyncio.Event()
        self._at_least = 0
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake.set()  # a first pass at start-up: the limits may have been lowered
        self._task = asyncio.create_task(self._run_forever(), name="evict")

    # ---------------------------------------------------------- FillListener

    def before_fill(self, digest: Digest, size: int) -> None:
        """Fill thread: make room for ``size`` bytes first. Never raises."""
        if not self.evictor.limits.bounded or self._loop is None:
            return
        try:
            done = asyncio.run_coroutine_threadsafe(self._make_room(digest, size), self._loop)
            done.result(timeout=ROOM_WAIT)
        except Exception as exc:  # shutting down, or slow: the room check decides
            log.warning("could not make room before filling %s: %s", digest, exc)

    def after_fill(self, fill: Fill) -> None:
        if self.evictor.limits.bounded and _disk_full(fill.error):
            # The cap did not keep the disk from filling up (other data, or a cap
            # larger than the disk): free at least what this fill needed.
            self._at_least = max(self._at_least, fill.size or EMERGENCY_FREE)
        self._wake.set()

    # ------------------------------------------------------------------ work

    async def _make_room(self, digest: Digest, size: int) -> None:
        try:
            report = await self.evictor.make_room(digest, size)
        except IndexUnavailable as exc:
            log.warning("cannot evict before filling %s: %s", digest, exc.message)
            return
        self._forget(report.removed)

    async def _run_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), EVICT_INTERVAL)
            self._wake.clear()
            await self.run_once()

    async def run_once(self) -> Report | None:
        at_least, self._at_least = self._at_least, 0
        try:
            report = await self.evictor.run(at_least=at_least)
        except IndexUnavailable as exc:
            log.warning("eviction postponed: %s", exc.message)
            return None
        except Exception:
            log.exception("eviction failed")
            return None
        self._forget(report.removed)
        return report

    def _forget(self, removed: Sequence[Entry]) -> None:
        # Another worker's evictions are not seen here; its memo then serves bytes
        # it has, which is fine (manifests are immutable).
        for entry in removed:
            self.memo.drop(entry.digest)

    async def stop(self) -> None:
        """Cancel a pass in progress (SIGTERM must not wait for a big eviction)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._loop = None


def _disk_full(error: BaseException | None) -> bool:
    if isinstance(error, InsufficientStorage):
        return True
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)
