"""Cluster-wide single flight for blobs: each blob crosses from upstream once.

``ClusterFills`` is the cluster's ``FillCoordinator``, and the one place that
decides where a fill's bytes come from. On this machine it is ``LocalFills``
(flock, followers tail the growing file); the source is decided each time the
fill (re)opens it:

1. a live replica whose local tier holds the blob (``holdings``): copy it;
2. a live replica filling it right now (it holds the ``blob:<digest>`` lease):
   stream from it as its bytes arrive;
3. otherwise take the lease and fetch from upstream (the lease is renewed while
   the fill runs, released when it ends).

With a shared tier (a bucket) the order is: a replica filling it right now → the
bucket (a ranged GET, read by the fill thread) → a replica holding it → upstream
under the lease. A fill that came from upstream is then offered to the bucket.
One machine with a bucket plans the same way over a directory of one
(``solo.py``): bucket → upstream.

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
from typing import TYPE_CHECKING, Any, TypeVar

from .. import metrics
from ..digest import Digest
from ..errors import BlobUnknown, DigestMismatch, IndexUnavailable, Unavailable
from ..store.fill import BlobSource, Fill, FillProgress, FillReader, LocalFills, Opener, Origin
from .directory import LEASE_TTL, ClusterDirectory, Lease
from .leases import LeaseKeeper

if TYPE_CHECKING:
    from ..bucket.tier import SharedTier
    from .peers import PeerClient

log = logging.getLogger("registry_cache.cluster")

T = TypeVar("T")
PLAN_WAIT = 5.0  # a fill thread waits this long for the loop to plan its source
RETRY_PAUSE = 0.2
BUCKET = "bucket"  # in a fill's ``failed`` set: the bucket (peers are URLs)


@dataclass(frozen=True, slots=True)
class Plan:
    peer: str | None = None  # copy or stream from this replica
    lease: Lease | None = None  # ours: fetch from upstream
    wait: bool = False  # a replica we cannot reach holds the lease: wait for it to expire
    unshared: bool = False  # the index is unreachable: upstream, alone
    bucket: bool = False  # read it from the shared tier


class ClusterFills:
    def __init__(
        self,
        local: LocalFills,
        directory: ClusterDirectory,
        peers: PeerClient | None,
        leases: LeaseKeeper,
        shared: SharedTier | None = None,
    ) -> None:
        self.local = local
        self.directory = directory
        self.peers = peers  # None on one machine (the solo directory names no peers)
        self.leases = leases
        self.shared = shared

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
                fill.finished.add_done_callback(lambda _: source.finished(fill))
        return joined

    def _bucket_usable(self, failed: set[str]) -> bool:
        if self.shared is None or BUCKET in failed:
            return False
        if not self.shared.available():
            metrics.bucket_bypass("read")
            failed.add(BUCKET)  # counted once per fill
            return False
        return True

    async def plan(self, digest: Digest, failed: set[str], current: Lease | None) -> Plan:
        key = f"blob:{digest}"
        if current is not None and self.leases.holds(key):
            return Plan(lease=current)
        bucket = self._bucket_usable(failed)
        try:
            if bucket:
                owner = await self.directory.owner(key)
                if owner and owner != self.directory.me and owner not in failed:
                    return Plan(peer=owner)
                return Plan(bucket=True)
            for peer in await self.directory.holders(str(digest)):
                if peer not in failed:
                    return Plan(peer=peer)
            lease = await self.directory.acquire(key)
        except IndexUnavailable:
            return Plan(bucket=True) if bucket else Plan(unshared=True)
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
        self._last_peer: str | None = None  # a peer URL, or BUCKET
        self._warned = False
        self.from_upstream = False  # some of the bytes came from upstream
        self.from_bucket = False

    def __call__(self, offset: int) -> BlobSource:
        if self._last_peer is not None:
            # Asked again after a peer's (or the bucket's) stream: it broke off or was short.
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
                return self._from_upstream(offset)
            if plan.lease is not None:
                self.lease = plan.lease
                return self._from_upstream(offset)
            if plan.bucket and self.cluster.shared is not None:
                try:
                    stream = self.cluster.shared.open_blob(self.digest, offset, self.loop)
                except BlobUnknown:
                    self.failed.add(BUCKET)  # not there: the next source
                    continue
                except Exception as exc:  # unavailable, or the loop too busy to sign
                    metrics.bucket_bypass("read")
                    log.info("bucket source for %s failed: %s", self.digest, exc)
                    self.failed.add(BUCKET)
                    continue
                metrics.fill_source("bucket")
                self.from_bucket = True
                self._last_peer = BUCKET
                return stream
            if plan.peer is not None and self.cluster.peers is not None:
                try:
                    source = self.cluster.peers.open_blob(plan.peer, str(self.digest), offset)
                except (Unavailable, BlobUnknown) as exc:
                    log.info("replica source for %s failed: %s", self.digest, exc.message)
                    self.failed.add(plan.peer)
                    continue
                metrics.fill_source("peer")
                self._last_peer = plan.peer
                return source
            if time.monotonic() > deadline:
                log.warning("lease on %s did not expire in time: fetching unshared", self.digest)
                return self._from_upstream(offset)
            time.sleep(RETRY_PAUSE)

    def _from_upstream(self, offset: int) -> BlobSource:
        metrics.fill_source("upstream")
        self.from_upstream = True
        return self.upstream(offset)

    def finished(self, fill: Fill) -> None:
        """Loop thread, once the fill ended: give the lease back, but only once the
        index says this replica holds the blob, so no other replica ever sees neither
        a lease nor a holder (and fetches again). Content from upstream goes to the
        bucket; a bucket copy that failed verification is removed from it."""
        lease, self.lease = self.lease, None
        if lease is not None:
            self.loop.create_task(self._release(lease))
        shared = self.cluster.shared
        if shared is None:
            return
        if fill.done and fill.error is None and self.from_upstream:
            shared.offer(self.digest)
        elif isinstance(fill.error, DigestMismatch) and self.from_bucket and not self.from_upstream:
            self.loop.create_task(shared.discard(self.digest))

    async def _release(self, lease: Lease) -> None:
        await self.cluster.local.recorded(self.digest)
        await self.cluster.leases.release(lease)

    def _on_loop(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout=PLAN_WAIT)
