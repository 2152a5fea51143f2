"""``TieredStore``: the proxy's ``BlobStore`` with a bucket behind the local tier.

Blobs are sent from the local tier only (``stat``/``open`` are the front store's):
a blob the local tier lacks is a fill, and the fill reads it from the bucket when
the bucket holds it (``cluster/fills.py``), so it lands in the local tier while
clients stream it. Small objects (manifests) are read whole: a local miss asks the
bucket, then the front store (peers, in cluster mode); what the bucket sends is
verified and stored locally. Every ``put`` is offered to the bucket as well
(uploaded in the background).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from ..digest import Digest
from ..index.front import IndexFront
from ..store.blobs import BlobStore, FileBlobStore
from ..store.body import Body
from .tier import SharedTier


class TieredStore:
    def __init__(
        self, front: BlobStore, local: FileBlobStore, shared: SharedTier, index: IndexFront
    ) -> None:
        self.front = front  # the data directory, or the cluster's store over it
        self.local = local
        self.shared = shared
        self.index = index

    def describe(self) -> str:
        return f"{self.front.describe()} in front of {self.shared.describe()}"

    async def stat(self, digest: Digest) -> int | None:
        return await self.front.stat(digest)

    async def open(self, digest: Digest) -> Body | None:
        return await self.front.open(digest)

    async def read(self, digest: Digest) -> bytes | None:
        found = await self.local.read(digest)
        if found is not None:
            return found
        data = await self.shared.read(digest)  # verified
        if data is None:
            return await self.front.read(digest)
        await self.local.put(digest, data)
        await self.index.add_object(str(digest), len(data))
        return data

    async def put(self, digest: Digest, data: bytes) -> None:
        await self.front.put(digest, data)
        self.shared.offer(digest, data)

    async def delete(self, digest: Digest) -> int:
        return await self.front.delete(digest)

    async def walk(self) -> AsyncIterator[tuple[Digest, int]]:
        async for item in self.front.walk():
            yield item

    async def check(self) -> None:
        await self.front.check()
