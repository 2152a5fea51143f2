"""Cluster-wide single flight for manifests: one upstream request per reference.

Before the proxy asks upstream about ``(upstream, repository, reference)`` (a
fetch, or a tag's HEAD revalidation) it takes the ``manifest:…`` lease. If
another replica holds it, this one waits until that replica is done (or its
lease expired) and resolves again: the tag row is then fresh in the shared
index, and the manifest comes from that replica's tier (``cluster/store.py``).
"""

from __future__ import annotations

import asyncio
import time

from ..errors import IndexUnavailable
from .directory import LEASE_TTL, ClusterDirectory, Lease
from .leases import LeaseKeeper

POLL = 0.05
WAIT_LIMIT = 10.0 + LEASE_TTL  # a leader's upstream header timeout, then its lease's expiry


class ClusterFlight:
    def __init__(self, directory: ClusterDirectory, leases: LeaseKeeper) -> None:
        self.directory = directory
        self.leases = leases

    async def lead(self, key: str) -> Lease | None:
        """Our lease on ``key`` (go ahead, then ``done``); None once another replica led
        (resolve again); a placeholder lease when the index is unreachable (go ahead)."""
        try:
            lease = await self.directory.acquire(key)
        except IndexUnavailable:
            return Lease(key, self.directory.me, "", False)
        if lease.mine:
            self.leases.hold(lease)
            return lease
        deadline = time.monotonic() + WAIT_LIMIT
        while time.monotonic() < deadline:
            await asyncio.sleep(POLL)
            try:
                if await self.directory.owner(key) is None:
                    return None
            except IndexUnavailable:
                break
        return Lease(key, self.directory.me, "", False)  # waited long enough: go ahead

    async def done(self, lease: Lease) -> None:
        if lease.mine:
            await self.leases.release(lease)
