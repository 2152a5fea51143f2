"""Blobs: local first, else one shared fill per digest that every client tails.

Returns either a committed file (zero-copy hit) or a ``FillReader`` (a growing
file); the web layer streams both with ``sendfile``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..digest import Digest
from ..errors import BlobUnknown
from ..routing import Route
from ..store.fill import Fill, FillFailed, FillReader
from .context import ProxyContext
from .policy import CacheStatus


@dataclass(frozen=True, slots=True)
class LocalBlob:
    path: Path
    size: int


@dataclass(frozen=True, slots=True)
class BlobAnswer:
    digest: Digest
    status: CacheStatus
    local: LocalBlob | None = None
    fill: FillReader | None = None
    size: int | None = None  # for HEAD answered from upstream metadata


class BlobService:
    def __init__(self, ctx: ProxyContext) -> None:
        self.ctx = ctx
        ctx.fills.on_done = self._fill_done
        self._fill_repos: dict[Digest, tuple[str, str]] = {}

    async def head(self, route: Route, digest: Digest) -> BlobAnswer:
        """Size without fetching: local, an in-flight fill, or upstream's HEAD."""
        local = await self._local(route, digest)
        if local is not None:
            return BlobAnswer(digest, CacheStatus.HIT, local=local, size=local.size)
        fill = self.ctx.fills.local(digest)
        if fill is not None and fill.size is not None and self._linked(route, digest):
            return BlobAnswer(digest, CacheStatus.COALESCED, size=fill.size)
        client = self.ctx.clients[route.upstream.name]
        size = await self.ctx.call(client.head_blob, route.repository, str(digest))
        return BlobAnswer(digest, CacheStatus.UPSTREAM, size=size)

    async def get(self, route: Route, digest: Digest) -> BlobAnswer:
        local = await self._local(route, digest)
        if local is not None:
            return BlobAnswer(digest, CacheStatus.HIT, local=local, size=local.size)
        if self.ctx.fills.local(digest) is not None and not self._linked(route, digest):
            await self._confirm(route, digest)
        client = self.ctx.clients[route.upstream.name]
        repo = route.repository

        def opener(offset: int) -> object:
            return client.open_blob(repo, str(digest), offset)

        joined = self.ctx.fills.join_or_start(digest, opener)  # type: ignore[arg-type]
        if joined is None:  # committed while we looked
            local = await self._local(route, digest)
            if local is None:
                raise BlobUnknown(f"blob {digest} vanished")
            return BlobAnswer(digest, CacheStatus.HIT, local=local, size=local.size)
        reader, started = joined
        if started:
            self._fill_repos[digest] = (route.upstream.name, repo)
        try:
            size = await reader.wait_size()
        except BaseException as exc:
            reader.detach()
            if isinstance(exc, FillFailed):
                raise exc.error from None
            raise
        status = CacheStatus.MISS if started else CacheStatus.COALESCED
        return BlobAnswer(digest, status, fill=reader, size=size)

    async def _local(self, route: Route, digest: Digest) -> LocalBlob | None:
        size = self.ctx.store.stat(digest)
        if size is None:
            return None
        if not self._linked(route, digest):
            await self._confirm(route, digest)
        self.ctx.index.touch(str(digest))
        return LocalBlob(self.ctx.store.path(digest), size)

    def _linked(self, route: Route, digest: Digest) -> bool:
        return self.ctx.index.is_linked(route.upstream.name, route.repository, str(digest))

    async def _confirm(self, route: Route, digest: Digest) -> None:
        """A blob held for another repository is served here only if upstream has it here."""
        client = self.ctx.clients[route.upstream.name]
        await self.ctx.call(client.head_blob, route.repository, str(digest))
        self.ctx.index.link(route.upstream.name, route.repository, [str(digest)])

    def _fill_done(self, fill: Fill) -> None:
        where = self._fill_repos.pop(fill.digest, None)
        if fill.error is not None or not fill.done:
            return
        self.ctx.index.add_object(str(fill.digest), fill.written)
        if where is not None:
            self.ctx.index.link(where[0], where[1], [str(fill.digest)])
