"""Blobs: local first, else one shared fill per digest that every client tails.

Knows nothing of HTTP: an answer carries a cache status, the size and a body
(``store/body.py``: an open file for a hit, a growing fill for a miss); the web
layer streams it.

Repository scoping: a blob is served under a repository only if that
repository's manifest referenced it or it was fetched for it. Otherwise upstream
is asked first (a HEAD for that repository), whether the bytes are on disk or
still arriving in a fill another repository started, in this worker or another.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..digest import Digest
from ..errors import BlobUnknown
from ..routing import Route
from ..store.body import Body, GrowingBody
from ..store.fill import FillFailed, Origin
from ..upstream.client import BlobStream
from .context import ProxyContext
from .policy import CacheStatus


@dataclass(frozen=True, slots=True)
class BlobAnswer:
    digest: Digest
    status: CacheStatus
    size: int | None  # None: upstream did not say (HEAD answered from upstream)
    body: Body | None = None  # None for HEAD; the receiver closes it


class BlobService:
    def __init__(self, ctx: ProxyContext) -> None:
        self.ctx = ctx

    async def head(self, route: Route, digest: Digest) -> BlobAnswer:
        """Size without fetching: local, an in-flight fill, or upstream's HEAD."""
        size = await self.ctx.store.stat(digest)
        if size is not None:
            await self._allow(route, digest)
            self.ctx.index.touch(str(digest))
            return BlobAnswer(digest, CacheStatus.HIT, size)
        fill = self.ctx.fills.in_process(digest)
        if (
            fill is not None
            and fill.size is not None
            and await self._may_follow(route, fill.origin, digest)
        ):
            return BlobAnswer(digest, CacheStatus.COALESCED, fill.size)
        known = await self.ctx.index.get_object(str(digest))
        if known is not None and await self.ctx.index.is_linked(
            route.upstream.name, route.repository, str(digest)
        ):
            # Held by another replica (cluster mode): the catalog knows its size.
            return BlobAnswer(digest, CacheStatus.HIT, known.size)
        client = self.ctx.clients[route.upstream.name]
        size = await self.ctx.call(client.head_blob, route.repository, str(digest))
        return BlobAnswer(digest, CacheStatus.UPSTREAM, size)

    async def get(self, route: Route, digest: Digest) -> BlobAnswer:
        hit = await self._hit(route, digest)
        if hit is not None:
            return hit
        client = self.ctx.clients[route.upstream.name]
        repo = route.repository

        def opener(offset: int) -> BlobStream:
            return client.open_blob(repo, str(digest), offset)

        origin = Origin(route.upstream.name, repo)
        joined = await self.ctx.fills.join_or_start(digest, origin, opener)
        if joined is None:  # committed while we looked
            hit = await self._hit(route, digest)
            if hit is None:
                raise BlobUnknown(f"blob {digest} vanished")
            return hit
        reader, started = joined
        try:
            size = await reader.wait_size()
            if not started and not await self._may_follow(route, reader.origin, digest):
                await self._confirm(route, digest)
        except BaseException as exc:
            reader.detach()
            if isinstance(exc, FillFailed):
                raise exc.error from None
            raise
        status = CacheStatus.MISS if started else CacheStatus.COALESCED
        return BlobAnswer(digest, status, size, GrowingBody(reader, size))

    async def _hit(self, route: Route, digest: Digest) -> BlobAnswer | None:
        # --redirect-hits: a client may fetch what the bucket holds from the bucket.
        shared = self.ctx.shared
        body: Body | None = await shared.redirect(digest) if shared is not None else None
        if body is None:
            body = await self.ctx.store.open(digest)
        if body is None:
            return None
        try:
            await self._allow(route, digest)
        except BaseException:
            await body.close()
            raise
        self.ctx.index.touch(str(digest))
        return BlobAnswer(digest, CacheStatus.HIT, body.size, body)

    async def _may_follow(self, route: Route, origin: Origin | None, digest: Digest) -> bool:
        """Whether this request may read bytes a fill fetched for ``origin``."""
        if origin == Origin(route.upstream.name, route.repository):
            return True  # upstream answered this very repository's GET
        return await self.ctx.index.is_linked(route.upstream.name, route.repository, str(digest))

    async def _allow(self, route: Route, digest: Digest) -> None:
        if not await self.ctx.index.is_linked(route.upstream.name, route.repository, str(digest)):
            await self._confirm(route, digest)

    async def _confirm(self, route: Route, digest: Digest) -> None:
        """A blob held for another repository is served here only if upstream has it here."""
        client = self.ctx.clients[route.upstream.name]
        await self.ctx.call(client.head_blob, route.repository, str(digest))
        await self.ctx.index.link(route.upstream.name, route.repository, [str(digest)])
