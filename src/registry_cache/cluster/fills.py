"""Cluster-wide single flight for blobs: each blob crosses from upstream once.

``ClusterFills`` is the cluster's ``FillCoordinator``. On this machine it is
``LocalFills`` (flock, followers tail the growing file); what changes is where a
fill's bytes come from, decided each time the fill (re)opens its source:

1. a live replica whose local tier holds the blob (``holdings``): copy it;
2. a live replica filling it right now (it holds the ``blob:<digest>`` lease):
   stream from it as its bytes arrive;
3. otherwise take the lease and fetch from upstream (the lease is renewed while
   the fill runs, released when it ends).

A peer that fails (killed mid-fill, unreachable) is not asked again by this fill;
its lease expires within ``LEASE_TTL`` and this fill takes it over, resuming from
upstream with a Range request. The index unreachable: the fill goes to upstream
unshared. Every replica verifies the digest before its last byte is released.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from ..digest import Digest
from ..errors import BlobUnknown, IndexUnavailable, Unavailable
from ..store.fill import BlobSource, Fill, FillProgress, FillReader, LocalFills, Opener, Origin
from .directory import LEASE_TTL, ClusterDirectory, Lease
from .leases import LeaseKeeper
from .peers import PeerClient

log = logging.getLogger("registry_cache.cluster")

T = TypeVar("T")
PLAN_WAIT = 5.0  # a fill thread waits this long for the loop to plan its source
RETRY_PAUSE = 0.2


@dataclass(frozen=True, slots=True)
class Plan:
    peer: str | None = None  # copy or stream from this replica
    lease: Lease | None = None  # ours: fetch from upstream
    wait: bool = False  # a replica we cannot reach holds the lease: wait for it to expire
    unshared: bool = False  # the index is unreachable: upstream, alone


class ClusterFills:
    def __init__(
        self,
        local: LocalFills,
        directory: ClusterDirectory,
        peers: PeerClient,
        leases: LeaseKeeper,
    ) -> None:
        self.local = local
        self.directory = directory
        self.peers = peers
        self.leases = leases

    def in_process(self, digest: Digest) -> Fill | None:
        return self.local.in_process(digest)

    def progress(self) -> list[FillProgress]:
        return self.local.progress()

    def partial_size(self, digest: Digest) -> int | None:
        return self.local.partial_size(digest)

    async def close(self) -> None:
        await self.local.close()

    async def join_or_start(
        self, digest: Digest, origin: Origin, opener: Opener
    ) -> tuple[FillReader, bool] | None:
        source = ClusterSource(self, digest, opener, asyncio.get_running_loop())
        joined = await self.local.join_or_start(digest, origin, source)
        if joined is not None and joined[1]:
            fill = self.local.in_process(digest)
            if fill is not None:
                fill.finished.add_done_callback(lambda _: source.finished())
        return joined

    async def plan(self, digest: Digest, failed: set[str], current: Lease | None) -> Plan:
        key = f"blob:{digest}"
        if current is not None and self.leases.holds(key):
            return Plan(lease=current)
        try:
            for peer in await self.directory.holders(str(digest)):
                if peer not in failed:
                    return Plan(peer=peer)
            lease = await self.directory.acquire(key)
        except IndexUnavailable:
            return Plan(unshared=True)
        if lease.mine:
            self.leases.hold(lease)
            return Plan(lease=lease)
        if lease.owner and lease.owner != self.directory.me and lease.owner not in failed:
            return Plan(peer=lease.owner)
        return Plan(wait=True)


class ClusterSource:
    """The opener a cluster fill runs with (called on the fill thread)."""

    def __init__(
        self,
        cluster: ClusterFills,
        digest: Digest,
        upstream: Opener,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.cluster = cluster
        self.digest = digest
        self.upstream = upstream
        self.loop = loop
        self.failed: set[str] = set()
        self.lease: Lease | None = None
        self._last_peer: str | None = None
        self._warned = False

    def __call__(self, offset: int) -> BlobSource:
        if self._last_peer is not None:
            # Asked again after a peer's stream: it broke off (or was short).
            self.failed.add(self._last_peer)
            self._last_peer = None
        deadline = time.monotonic() + LEASE_TTL + 3.0
        while True:
            try:
                plan = self._on_loop(self.cluster.plan(self.digest, self.failed, self.lease))
            except Exception:  # the loop is busy or shutting down: do not share
                plan = Plan(unshared=True)
            if plan.unshared:
                if not self._warned:
                    log.warning("index unreachable: filling %s from upstream unshared", self.digest)
                    self._warned = True
                return self.upstream(offset)
            if plan.lease is not None:
                self.lease = plan.lease
                return self.upstream(offset)
            if plan.peer is not None:
                try:
                    source = self.cluster.peers.open_blob(plan.peer, str(self.digest), offset)
                except (Unavailable, BlobUnknown) as exc:
                    log.info("replica source for %s failed: %s", self.digest, exc.message)
                    self.failed.add(plan.peer)
                    continue
                self._last_peer = plan.peer
                return source
            if time.monotonic() > deadline:
                log.warning("lease on %s did not expire in time: fetching unshared", self.digest)
                return self.upstream(offset)
            time.sleep(RETRY_PAUSE)

    def finished(self) -> None:
        """Loop thread, once the fill ended: give the lease back, but only once the
        index says this replica holds the blob, so no other replica ever sees neither
        a lease nor a holder (and fetches again)."""
        lease, self.lease = self.lease, None
        if lease is not None:
            self.loop.create_task(self._release(lease))

    async def _release(self, lease: Lease) -> None:
        await self.cluster.local.recorded(self.digest)
        await self.cluster.leases.release(lease)

    def _on_loop(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout=PLAN_WAIT)
