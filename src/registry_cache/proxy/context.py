"""Everything the proxy services share, built once per worker process."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from ..config import Settings
from ..index.front import IndexFront
from ..store.blobs import BlobStore
from ..store.fill import FillCoordinator
from ..upstream.client import UpstreamClient
from .memo import ManifestMemo

if TYPE_CHECKING:
    from ..bucket.tier import SharedTier
    from ..cluster.directory import ClusterDirectory

T = TypeVar("T")


@dataclass
class ProxyContext:
    """The collaborators of the proxy services (built by ``proxy/build.py``)."""

    settings: Settings
    index: IndexFront
    store: BlobStore
    fills: FillCoordinator
    clients: dict[str, UpstreamClient]
    executor: ThreadPoolExecutor
    memo: ManifestMemo
    shared: SharedTier | None = None  # the bucket (--storage): redirects, readiness
    directory: ClusterDirectory | None = None  # cluster mode: the replicas (dashboard)

    async def call(self, func: Callable[..., T], /, *args: object, **kwargs: object) -> T:
        """Run a blocking upstream/disk call on the shared thread pool, in a copy of
        this context (the request id goes along to the upstream client)."""
        loop = asyncio.get_running_loop()
        call = functools.partial(contextvars.copy_context().run, func, *args, **kwargs)
        return await loop.run_in_executor(self.executor, call)
