"""``--shared-max-size``: the bucket kept under its cap, least recently used first, cluster-wide.

Usage is the index's sum over what the bucket holds (``shared_totals``); access
times are the catalog's (``objects.last_access``, written by every replica's
hits), so "least recently used" means across the cluster. The same watermarks as
the local tier: above ``evict_at_percent`` of the cap, down to ``evict_to_percent``.
Objects accessed within ``evict_grace`` are left (a replica may be streaming one
from the bucket, or have redirected a client to it); the cap is enforced once
they age.

One evictor at a time in the whole cluster: a lease (``evict:shared``) in cluster
mode, an ``flock`` on ``DATA/shared-evict.lock`` on one machine (not
``evict.lock``: bucket requests must never hold up the local tier's eviction).
Objects are deleted first (DeleteObjects, 1,000 a request), then their rows
(``forget_shared``): the rows of content no tier holds go with them, with their
tags. A crash in between leaves rows without objects: a read finds nothing and
moves on, and ``cache gc`` drops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .. import metrics
from ..digest import Digest
from ..errors import IndexUnavailable, RegistryError, StorageUnavailable
from ..index.front import IndexFront
from ..store.evict import bytes_over
from .store import S3BlobStore

if TYPE_CHECKING:
    from ..cluster.directory import ClusterDirectory
    from ..cluster.leases import LeaseKeeper

log = logging.getLogger("registry_cache.bucket")

EVICT_INTERVAL = 30.0
PAGE = 1000
LEASE_KEY = "evict:shared"


class Mutex(Protocol):
    def hold(self) -> AbstractAsyncContextManager[bool]:
        """Yields True while this process is the one evicting, False if another is."""


class FileMutex:
    """One machine: an flock (never waited for)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[bool]:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)


class LeaseMutex:
    """A cluster: a lease every replica competes for, renewed while held."""

    def __init__(self, directory: ClusterDirectory, leases: LeaseKeeper) -> None:
        self.directory = directory
        self.leases = leases

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[bool]:
        try:
            lease = await self.directory.acquire(LEASE_KEY)
        except IndexUnavailable:
            yield False
            return
        if not lease.mine:
            yield False
            return
        self.leases.hold(lease)
        try:
            yield True
        finally:
            await self.leases.release(lease)


@dataclass(frozen=True, slots=True)
class Report:
    ran: bool
    need: int = 0
    removed: int = 0
    freed: int = 0


class SharedEvictor:
    def __init__(
        self,
        bucket: S3BlobStore,
        index: IndexFront,
        mutex: Mutex,
        *,
        cap: int,
        high: float,
        low: float,
        grace: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.bucket = bucket
        self.index = index
        self.mutex = mutex
        self.cap = cap
        self.high = high
        self.low = low
        self.grace = grace
        self._clock = clock

    async def need(self) -> int:
        _, used = await self.index.index.shared_totals()
        return bytes_over(used, self.cap, self.high, self.low)

    async def run(self) -> Report:
        if not await self.need():  # the common case: one cheap query, no lock
            return Report(False)
        async with self.mutex.hold() as held:
            if not held:
                return Report(False)
            need = await self.need()
            if not need:
                return Report(False)
            # This worker's recent hits count before victims are picked.
            await self.index.flush()
            removed, freed = await self._walk(need)
        if removed:
            metrics.bucket_evicted(removed, freed)
            log.info(
                "evicted %d object(s), %d bytes from %s (wanted %d)",
                removed,
                freed,
                self.bucket.describe(),
                need,
            )
        if freed < need:
            log.info("%d bytes over the bucket's cap are too recently used to evict", need - freed)
        return Report(True, need, removed, freed)

    async def _walk(self, need: int) -> tuple[int, int]:
        recent = self._clock() - self.grace
        removed = freed = 0
        cursor = None
        while freed < need:
            rows = await self.index.index.shared_page(cursor, PAGE)
            if not rows:
                break
            cursor = (rows[-1].last_access, rows[-1].digest)
            victims: dict[Digest, int] = {}
            for row in rows:
                if row.last_access > recent or freed + sum(victims.values()) >= need:
                    break
                with contextlib.suppress(RegistryError):
                    victims[Digest.parse(row.digest)] = row.size
            if victims:
                gone = await self.bucket.delete_many(list(victims))
                await self.index.index.forget_shared([str(d) for d in gone])
                removed += len(gone)
                freed += sum(victims[d] for d in gone)
            if rows[-1].last_access > recent or len(victims) < len(rows):
                break  # the rest is more recent still
        return removed, freed


class SharedEvictionTask:
    """Runs the evictor every ``EVICT_INTERVAL`` and after each upload (``stored``)."""

    def __init__(self, evictor: SharedEvictor) -> None:
        self.evictor = evictor
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def stored(self, digest: Digest, size: int) -> None:
        self._wake.set()

    def start(self) -> None:
        self._wake.set()
        self._task = asyncio.create_task(self._run_forever(), name="evict-shared")

    async def _run_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), EVICT_INTERVAL)
            self._wake.clear()
            await self.run_once()

    async def run_once(self) -> Report | None:
        try:
            return await self.evictor.run()
        except (IndexUnavailable, StorageUnavailable) as exc:
            log.info("eviction from the bucket postponed: %s", exc.message)
        except Exception:
            log.exception("eviction from the bucket failed")
        return None

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
