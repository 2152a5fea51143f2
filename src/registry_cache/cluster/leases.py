"""The leases this process holds, renewed on the heartbeat until released.

One ``LeaseKeeper`` per worker process. A lease it fails to renew (the database
was unreachable for longer than ``LEASE_TTL``) is simply lost: another replica may
then take the key over and fetch too, which costs upstream bytes, never
correctness (every replica verifies what it stores).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ..errors import IndexUnavailable
from .directory import HEARTBEAT, ClusterDirectory, Lease

log = logging.getLogger("registry_cache.cluster")


class LeaseKeeper:
    def __init__(self, directory: ClusterDirectory) -> None:
        self.directory = directory
        self._held: dict[str, Lease] = {}
        self._task: asyncio.Task[None] | None = None

    def hold(self, lease: Lease) -> None:
        self._held[lease.key] = lease

    def holds(self, key: str) -> bool:
        return key in self._held

    async def release(self, lease: Lease) -> None:
        if self._held.get(lease.key) == lease:
            del self._held[lease.key]
        with contextlib.suppress(IndexUnavailable):
            await self.directory.release(lease)

    def start(self) -> None:
        self._task = asyncio.create_task(self._renew_forever(), name="lease-renewal")

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            leases = list(self._held.values())
            if not leases:
                continue
            try:
                kept = await self.directory.renew(leases)
            except IndexUnavailable:
                continue  # kept until they expire; the next beat tries again
            for lease in leases:
                if lease.key not in kept and self._held.get(lease.key) == lease:
                    log.warning("lost the lease on %s (renewal came too late)", lease.key)
                    del self._held[lease.key]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for lease in list(self._held.values()):
            await self.release(lease)
