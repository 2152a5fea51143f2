"""Eviction in a worker process: periodically, after fills, before fills, after a full disk.

``EvictionTask.start(ctx)`` (after ``Services.build``, which sets the fill callback it
wraps) returns None when no limit is configured, so an unbounded cache pays nothing.
The work itself (``store.evict.Evictor``) runs on the executor (periodic and after-fill
passes) or on the fill's own thread (``before_fill``), never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import threading
from collections.abc import Callable, Sequence

from ..errors import InsufficientStorage
from ..store.evict import Entry, Evictor, Limits, Report
from ..store.fill import Fill
from .context import ProxyContext

log = logging.getLogger("registry_cache.evict")

EVICT_INTERVAL = 30.0
FLUSH_WAIT = 5.0  # an evicting thread waits this long for the loop to flush access times
EMERGENCY_FREE = 256 << 20  # freed after a full disk when the failed fill's size is unknown


class EvictionTask:
    def __init__(self, ctx: ProxyContext, evictor: Evictor) -> None:
        self.ctx = ctx
        self.evictor = evictor
        self._wake = asyncio.Event()
        self._at_least = 0
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def start(cls, ctx: ProxyContext) -> EvictionTask | None:
        limits = Limits.from_settings(ctx.settings)
        if not limits.active:
            return None
        evictor = Evictor(ctx.store.layout, ctx.store, limits, grace=ctx.settings.evict_grace)
        task = cls(ctx, evictor)
        task._install()
        task._wake.set()  # a first pass at start-up: the limits may have been lowered
        task._task = asyncio.create_task(task._loop(), name="evict")
        return task

    def _install(self) -> None:
        loop = asyncio.get_running_loop()
        loop_thread = threading.get_ident()

        def flush() -> None:
            # This worker's recent hits must count before victims are picked. Access
            # times are batched on the loop thread, so they are flushed there; other
            # workers' are at most TOUCH_FLUSH_INTERVAL late (see store/evict.py).
            try:
                if threading.get_ident() == loop_thread:
                    self.ctx.index.flush_touches()
                    return
                done = asyncio.run_coroutine_threadsafe(_call(self.ctx.index.flush_touches), loop)
                done.result(timeout=FLUSH_WAIT)
            except Exception as exc:  # shutting down, or a busy index: evict anyway
                log.warning("could not flush access times before evicting: %s", exc)

        self.evictor.prepare = flush

        def removed(entries: Sequence[Entry]) -> None:
            # Any thread: the memo belongs to the loop. Another worker's evictions
            # are not seen here; its memo then serves bytes it has, which is fine.
            digests = [e.digest for e in entries]
            with contextlib.suppress(RuntimeError):  # loop closed (shutdown)
                loop.call_soon_threadsafe(self._forget, digests)

        self.evictor.on_removed = removed
        fills = self.ctx.fills
        if self.evictor.limits.bounded:
            fills.before_fill = self.evictor.before_fill
        inner = fills.on_done

        def done(fill: Fill) -> None:
            if inner is not None:
                inner(fill)
            self._after_fill(fill)

        fills.on_done = done

    def _forget(self, digests: list[str]) -> None:
        for digest in digests:
            self.ctx.memo.drop(digest)

    def _after_fill(self, fill: Fill) -> None:
        if self.evictor.limits.bounded and _disk_full(fill.error):
            # The cap did not keep the disk from filling up (other data, or a cap
            # larger than the disk): free at least what this fill needed.
            self._at_least = max(self._at_least, fill.size or EMERGENCY_FREE)
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), EVICT_INTERVAL)
            self._wake.clear()
            await self.run_once()

    async def run_once(self) -> Report | None:
        at_least, self._at_least = self._at_least, 0
        try:
            return await self.ctx.call(self.evictor.run, at_least=at_least)
        except Exception:
            log.exception("eviction failed")
            return None

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.ctx.fills.before_fill = None
        await self.ctx.call(self.evictor.close)


async def _call(func: Callable[[], None]) -> None:
    func()


def _disk_full(error: BaseException | None) -> bool:
    if isinstance(error, InsufficientStorage):
        return True
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)
