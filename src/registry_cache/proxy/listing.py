"""Tag lists, the catalog and the referrers API."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from ..digest import Digest
from ..errors import ManifestUnknown, NameUnknown, RegistryError
from ..mediatypes import INDEX_TYPES, OCI_INDEX
from ..routing import Route
from .context import ProxyContext
from .manifests import ManifestService
from .policy import CacheStatus

log = logging.getLogger("registry_cache.listing")


@dataclass(frozen=True, slots=True)
class TagPage:
    name: str
    tags: list[str]
    more: bool
    status: CacheStatus


@dataclass(frozen=True, slots=True)
class ReferrersAnswer:
    index: dict[str, Any]
    filtered: bool
    status: CacheStatus


def page(items: list[str], n: int | None, last: str | None) -> tuple[list[str], bool]:
    """The spec's pagination over a sorted list: entries after ``last``, at most ``n``."""
    items = sorted(items)
    if last:
        items = [t for t in items if t > last]
    if n is not None and len(items) > n:
        return items[:n], True
    return items, False


class ListingService:
    def __init__(self, ctx: ProxyContext, manifests: ManifestService) -> None:
        self.ctx = ctx
        self.manifests = manifests

    async def tags(self, route: Route, n: int | None, last: str | None) -> TagPage:
        name, repo = route.upstream.name, route.repository
        client = self.ctx.clients[name]
        try:
            tags, more = await self.ctx.call(client.tags, repo, n, last)
            # Some registries (distribution 2.8) ignore n/last: paginate again here.
            tags, trimmed = page(tags, n, last)
            return TagPage(repo, tags, more or trimmed, CacheStatus.MISS)
        except NameUnknown:
            raise
        except RegistryError as exc:
            cached = await self.ctx.index.list_tags(name, repo)
            if not cached:
                raise
            log.warning("tags of %s/%s from cache: upstream failed: %s", name, repo, exc.message)
            tags, more = page(cached, n, last)
            return TagPage(repo, tags, more, CacheStatus.STALE)

    async def catalog(
        self, upstream: str | None, n: int | None, last: str | None
    ) -> tuple[list[str], bool]:
        upstreams = self.ctx.settings.upstreams
        repos = [
            (up, repo)
            for up, repo in await self.ctx.index.repositories(upstream)
            if up in upstreams and upstreams[up].serves(repo)  # denied ones stay unlisted
        ]
        names = [repo if upstream else f"{up}/{repo}" for up, repo in repos]
        return page(names, n, last)

    async def referrers(
        self, route: Route, digest: Digest, artifact_type: str | None
    ) -> ReferrersAnswer:
        """Upstream's answer; else the ``sha256-<hex>`` fallback tag; else an empty index."""
        client = self.ctx.clients[route.upstream.name]
        doc: dict[str, Any] | None = None
        status = CacheStatus.MISS
        try:
            doc = await self.ctx.call(client.referrers, route.repository, str(digest))
        except RegistryError as exc:
            log.info("referrers from upstream failed (%s); trying the fallback tag", exc.message)
        if doc is None:
            doc = await self._fallback(route, digest)
            status = CacheStatus.HIT if doc is not None else CacheStatus.MISS
        manifests = [m for m in (doc or {}).get("manifests") or [] if isinstance(m, dict)]
        filtered = False
        if artifact_type:
            manifests = [m for m in manifests if m.get("artifactType") == artifact_type]
            filtered = True
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        return ReferrersAnswer(index, filtered, status)

    async def _fallback(self, route: Route, digest: Digest) -> dict[str, Any] | None:
        tag = f"{digest.algorithm}-{digest.hex}"[:128]
        try:
            result = await self.manifests.get(route, tag, [])
        except (ManifestUnknown, NameUnknown):
            return None
        except RegistryError as exc:
            log.info("referrers fallback tag unavailable: %s", exc.message)
            return None
        if result.media_type not in INDEX_TYPES:
            return None
        try:
            doc = json.loads(result.body)
        except ValueError:
            return None
        return doc if isinstance(doc, dict) else None
