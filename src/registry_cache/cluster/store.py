"""The local tier, with small objects (manifests) copied from other replicas on a miss.

Blobs reach a replica through a fill (``cluster/fills.py``), which streams. A
manifest is read whole: when this replica's tier lacks one the catalog knows of,
a live replica holding it sends it, it is verified, and stored here too. Content
from a peer is never taken on trust: it must hash to its digest.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from ..digest import Digest
from ..errors import BlobUnknown, IndexUnavailable, Unavailable
from ..index.front import IndexFront
from ..store.blobs import MAX_READ, FileBlobStore
from ..store.body import FileBody
from .directory import ClusterDirectory
from .peers import PeerClient

log = logging.getLogger("registry_cache.cluster")


class ClusterStore:
    """``BlobStore``: ``FileBlobStore`` plus peer reads of small objects."""

    def __init__(
        self,
        local: FileBlobStore,
        index: IndexFront,
        directory: ClusterDirectory,
        peers: PeerClient,
    ) -> None:
        self.local = local
        self.index = index
        self.directory = directory
        self.peers = peers

    def describe(self) -> str:
        return self.local.describe()

    async def stat(self, digest: Digest) -> int | None:
        return await self.local.stat(digest)

    async def open(self, digest: Digest) -> FileBody | None:
        return await self.local.open(digest)

    async def read(self, digest: Digest) -> bytes | None:
        found = await self.local.read(digest)
        if found is not None:
            return found
        try:
            peers = await self.directory.holders(str(digest))
        except IndexUnavailable:
            return None
        for peer in peers:
            try:
                body = await asyncio.to_thread(self.peers.read_small, peer, str(digest), MAX_READ)
            except (Unavailable, BlobUnknown) as exc:
                log.info("replica %s could not send %s: %s", peer, digest, exc.message)
                continue
            if not digest.matches(body):
                log.warning("replica %s sent bytes that do not match %s", peer, digest)
                continue
            await self.local.put(digest, body)
            await self.index.add_object(str(digest), len(body))
            return body
        return None

    async def put(self, digest: Digest, data: bytes) -> None:
        await self.local.put(digest, data)

    async def delete(self, digest: Digest) -> int:
        return await self.local.delete(digest)

    async def walk(self) -> AsyncIterator[tuple[Digest, int]]:
        async for item in self.local.walk():
            yield item

    async def check(self) -> None:
        await self.local.check()
