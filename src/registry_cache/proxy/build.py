"""Everything one worker needs, constructed in dependency order (explicit wiring).

index → store → evictor (a ``FillListener``) → fills → upstream clients → context;
in cluster mode also the directory (replicas, holdings, leases), the peer client,
and the cluster's versions of the store, the fills and the manifest single flight.
With ``--storage`` the shared tier (the bucket) joins: the store becomes a
``TieredStore``, and the fills plan with the bucket (``ClusterFills``, over a
directory of one on a single machine).
Each component gets its collaborators in its constructor; ``Components.close``
takes them down in reverse order.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import urllib3

from .. import metrics
from ..config import Settings
from ..index import open_index
from ..index.front import REQUEST_WRITE_WAIT, IndexFront
from ..store.blobs import BlobStore, FileBlobStore
from ..store.evict import Evictor, Limits
from ..store.fill import FillCoordinator, LocalFills
from ..store.layout import Layout
from ..upstream.client import UpstreamClient
from .context import ProxyContext
from .eviction import EvictionTask
from .memo import ManifestMemo

if TYPE_CHECKING:  # cluster mode and the bucket import their modules only when used
    from ..bucket.evict import Mutex
    from ..bucket.tier import SharedTier
    from ..cluster.directory import ClusterDirectory
    from ..cluster.flight import ClusterFlight
    from ..cluster.node import ClusterNode

UPSTREAM_THREADS = 32


@dataclass
class Components:
    ctx: ProxyContext
    eviction: EvictionTask | None  # None when the cache is unbounded
    flight: ClusterFlight | None = None  # cluster mode only
    node: ClusterNode | None = None
    shared: SharedTier | None = None  # with --storage

    def start(self) -> None:
        if self.eviction is not None:
            self.eviction.start()
        if self.node is not None:
            self.node.start()
        if self.shared is not None:
            self.shared.start()

    async def close(self) -> None:
        if self.eviction is not None:
            await self.eviction.stop()
        await self.ctx.fills.close()
        if self.shared is not None:
            await self.shared.close()
        if self.node is not None:
            await self.node.stop()
        self.ctx.executor.shutdown(wait=False, cancel_futures=True)
        await self.ctx.index.drain()
        await self.ctx.index.flush()
        await self.ctx.index.index.close()


async def build(settings: Settings) -> Components:
    layout = Layout(settings.data_dir)
    layout.create()
    index = IndexFront(await open_index(settings, wait=False), write_wait=REQUEST_WRITE_WAIT)
    local = FileBlobStore(layout)
    memo = ManifestMemo()
    limits = Limits.from_settings(settings)
    eviction = EvictionTask(Evictor(local, index, limits), memo) if limits.active else None
    local_fills = LocalFills(local, index, listener=eviction, fill_timeout=settings.fill_timeout)
    pool = urllib3.PoolManager(num_pools=len(settings.upstreams) * 4 + 8, maxsize=32, block=False)
    clients = {
        name: UpstreamClient(cfg, pool, on_ratelimit=metrics.ratelimit)
        for name, cfg in settings.upstreams.items()
    }
    executor = ThreadPoolExecutor(max_workers=UPSTREAM_THREADS, thread_name_prefix="upstream")
    store: BlobStore = local
    fills: FillCoordinator = local_fills
    flight = node = shared = None
    cluster: ClusterDirectory | None = None  # cluster mode: replicas for the dashboard
    if settings.clustered:
        from ..cluster.directory import PostgresDirectory
        from ..cluster.fills import ClusterFills
        from ..cluster.flight import ClusterFlight
        from ..cluster.leases import LeaseKeeper
        from ..cluster.node import ClusterNode
        from ..cluster.peers import PeerClient
        from ..cluster.store import ClusterStore
        from ..index.postgres import PostgresIndex

        assert isinstance(index.index, PostgresIndex)
        directory = cluster = PostgresDirectory(index.index)
        leases = LeaseKeeper(directory)
        peers = PeerClient(settings.cluster_key(), pool)
        if settings.storage is not None:
            from ..bucket.evict import LeaseMutex

            shared = await _shared(settings, local, index, LeaseMutex(directory, leases))
        store = ClusterStore(local, index, directory, peers)
        fills = ClusterFills(local_fills, directory, peers, leases, shared)
        flight = ClusterFlight(directory, leases)
        node = ClusterNode(directory, leases, max_size=settings.max_size)
    elif settings.storage is not None:
        from ..bucket.evict import FileMutex
        from ..cluster.fills import ClusterFills
        from ..cluster.leases import LeaseKeeper
        from ..cluster.solo import SoloDirectory

        shared = await _shared(settings, local, index, FileMutex(layout.shared_evict_lock))
        solo = SoloDirectory()
        fills = ClusterFills(local_fills, solo, None, LeaseKeeper(solo), shared)
    if shared is not None:
        from ..bucket.tiered import TieredStore

        store = TieredStore(store, local, shared, index)
    ctx = ProxyContext(
        settings, index, store, fills, clients, executor, memo, shared, directory=cluster
    )
    return Components(ctx, eviction, flight, node, shared)


async def _shared(
    settings: Settings, local: FileBlobStore, index: IndexFront, mutex: Mutex
) -> SharedTier:
    from ..bucket.tier import SharedTier

    return await SharedTier.open(settings, local, index, mutex)
