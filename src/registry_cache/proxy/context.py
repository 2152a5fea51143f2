"""Everything the proxy services share, built once per worker process."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from ..config import Settings
from ..store.blobs import FileBlobStore
from ..store.fill import FillManager
from ..store.index import Index
from ..upstream.client import UpstreamClient

T = TypeVar("T")


class ManifestMemo:
    """Recently served manifests by digest (immutable, so caching them is always safe)."""

    def __init__(self, max_bytes: int = 32 << 20) -> None:
        self._items: OrderedDict[str, tuple[bytes, str]] = OrderedDict()
        self._bytes = 0
        self._max = max_bytes

    def get(self, digest: str) -> tuple[bytes, str] | None:
        item = self._items.get(digest)
        if item is not None:
            self._items.move_to_end(digest)
        return item

    def put(self, digest: str, body: bytes, media_type: str) -> None:
        if digest in self._items or len(body) > self._max // 4:
            return
        self._items[digest] = (body, media_type)
        self._bytes += len(body)
        while self._bytes > self._max:
            _, (old, _) = self._items.popitem(last=False)
            self._bytes -= len(old)

    def drop(self, digest: str) -> None:
        item = self._items.pop(digest, None)
        if item is not None:
            self._bytes -= len(item[0])


@dataclass
class ProxyContext:
    settings: Settings
    index: Index
    store: FileBlobStore
    fills: FillManager
    clients: dict[str, UpstreamClient]
    executor: ThreadPoolExecutor
    memo: ManifestMemo = field(default_factory=ManifestMemo)

    async def call(self, func: Callable[..., T], /, *args: object, **kwargs: object) -> T:
        """Run a blocking upstream/disk call on the shared thread pool, in a copy of
        this context (the request id goes along to the upstream client)."""
        loop = asyncio.get_running_loop()
        call = functools.partial(contextvars.copy_context().run, func, *args, **kwargs)
        return await loop.run_in_executor(self.executor, call)
