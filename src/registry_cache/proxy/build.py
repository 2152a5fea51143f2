"""Everything one worker needs, constructed in dependency order (explicit wiring).

index → store → evictor (a ``FillListener``) → fills → upstream clients → context.
Each component gets its collaborators in its constructor; ``Components.close``
takes them down in reverse order.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import urllib3

from .. import metrics
from ..config import Settings
from ..index import open_index
from ..index.front import IndexFront
from ..store.blobs import FileBlobStore
from ..store.evict import Evictor, Limits
from ..store.fill import LocalFills
from ..store.layout import Layout
from ..upstream.client import UpstreamClient
from .context import ProxyContext
from .eviction import EvictionTask
from .memo import ManifestMemo

UPSTREAM_THREADS = 32


@dataclass
class Components:
    ctx: ProxyContext
    eviction: EvictionTask | None  # None when the cache is unbounded

    async def close(self) -> None:
        if self.eviction is not None:
            await self.eviction.stop()
        await self.ctx.fills.close()
        self.ctx.executor.shutdown(wait=False, cancel_futures=True)
        await self.ctx.index.flush()
        await self.ctx.index.index.close()


async def build(settings: Settings) -> Components:
    layout = Layout(settings.data_dir)
    layout.create()
    index = IndexFront(await open_index(settings))
    store = FileBlobStore(layout)
    memo = ManifestMemo()
    limits = Limits.from_settings(settings)
    eviction = EvictionTask(Evictor(store, index, limits), memo) if limits.active else None
    fills = LocalFills(store, index, listener=eviction, fill_timeout=settings.fill_timeout)
    pool = urllib3.PoolManager(num_pools=len(settings.upstreams) * 4 + 8, maxsize=32, block=False)
    clients = {
        name: UpstreamClient(cfg, pool, on_ratelimit=metrics.ratelimit)
        for name, cfg in settings.upstreams.items()
    }
    executor = ThreadPoolExecutor(max_workers=UPSTREAM_THREADS, thread_name_prefix="upstream")
    ctx = ProxyContext(settings, index, store, fills, clients, executor, memo)
    return Components(ctx, eviction)
