"""Manifests: byte-exact storage, tag TTL with HEAD revalidation, stale-if-error.

Knows nothing of HTTP: it returns bytes, media type, digest and a cache status;
the web layer makes the response.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass

from .. import metrics
from ..cluster.directory import Lease
from ..cluster.flight import ClusterFlight
from ..digest import Digest
from ..errors import (
    BadGateway,
    DigestMismatch,
    ManifestUnknown,
    RegistryError,
)
from ..mediatypes import (
    INDEX_TYPES,
    accepts,
    manifest_media_type,
    referenced_digests,
    valid_digest,
)
from ..routing import Route
from ..upstream.client import QUICK, Manifest
from .context import ProxyContext
from .policy import CacheStatus, TagDecision, serve_stale_on, tag_decision

log = logging.getLogger("registry_cache.manifests")

DEFAULT_PLATFORM = ("linux", "amd64")


@dataclass(frozen=True, slots=True)
class ManifestResult:
    body: bytes
    media_type: str
    digest: str
    status: CacheStatus


class _Followed(Exception):
    """The gate opened: resolve again (see ``_Gate``)."""


class _Gate:
    """Taken before asking upstream: cluster-wide, one replica asks (see cluster/flight.py).

    Whether this replica got the lease or waited for another one, the resolution
    starts over once the gate is open: what it read before may be out of date (the
    other replica may have refreshed the tag between our read and our lease).
    """

    def __init__(self, flight: ClusterFlight | None, key: str) -> None:
        self._flight = flight
        self._key = key
        self._lease: Lease | None = None
        self.open = flight is None  # one machine: in-process coalescing suffices

    async def enter(self) -> None:
        if self.open:
            return
        assert self._flight is not None
        self._lease = await self._flight.lead(self._key)
        self.open = True
        raise _Followed

    async def close(self) -> None:
        if self._lease is not None and self._flight is not None:
            await self._flight.done(self._lease)
            self._lease = None


class ManifestService:
    def __init__(self, ctx: ProxyContext, flight: ClusterFlight | None = None) -> None:
        self.ctx = ctx
        self._flight = flight
        self._inflight: dict[tuple[str, str, str], asyncio.Future[ManifestResult]] = {}

    async def get(self, route: Route, reference: str, accept: list[str]) -> ManifestResult:
        """Resolve ``reference`` (tag or digest) for ``route`` and negotiate ``accept``."""
        result = await self._coalesced(route, reference)
        if accepts(accept, result.media_type):
            return result
        if result.media_type in INDEX_TYPES:
            # An old client that cannot read an index gets the default platform's
            # image, as distribution does; never a converted manifest.
            child = _platform_child(result.body, DEFAULT_PLATFORM, route.upstream.name)
            if child is not None:
                picked = await self._coalesced(route, child)
                if accepts(accept, picked.media_type):
                    return picked
        raise ManifestUnknown(
            f"manifest is {result.media_type}, which the client's Accept header excludes"
        )

    async def _coalesced(self, route: Route, reference: str) -> ManifestResult:
        key = (route.upstream.name, route.repository, reference)
        pending = self._inflight.get(key)
        if pending is not None:
            result = await asyncio.shield(pending)
            return ManifestResult(
                result.body,
                result.media_type,
                result.digest,
                CacheStatus.COALESCED if result.status is not CacheStatus.HIT else CacheStatus.HIT,
            )
        future: asyncio.Future[ManifestResult] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            result = await self._resolve(route, reference)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: joiners may be none
            raise
        else:
            future.set_result(result)
            return result
        finally:
            del self._inflight[key]

    async def _resolve(self, route: Route, reference: str) -> ManifestResult:
        key = f"manifest:{route.upstream.name}/{route.repository}:{reference}"
        gate = _Gate(self._flight, key)
        try:
            try:
                return await self._resolve_once(route, reference, gate)
            except _Followed:
                return await self._resolve_once(route, reference, gate)
        finally:
            await gate.close()

    async def _resolve_once(self, route: Route, reference: str, gate: _Gate) -> ManifestResult:
        if ":" in reference:
            return await self._by_digest(route, Digest.parse(reference), gate)
        return await self._by_tag(route, reference, gate)

    # ----------------------------------------------------------------- digests

    async def _by_digest(self, route: Route, digest: Digest, gate: _Gate) -> ManifestResult:
        name, repo = route.upstream.name, route.repository
        local = await self._local(str(digest))
        if local is not None:
            if await self.ctx.index.is_linked(name, repo, str(digest)):
                self.ctx.index.touch(str(digest))
                return ManifestResult(local[0], local[1], str(digest), CacheStatus.HIT)
            # Stored for another repository: this one may only see it if upstream agrees.
            client = self.ctx.clients[name]
            await self.ctx.call(client.head_manifest, repo, str(digest))
            await self.ctx.index.link(name, repo, [str(digest)])
            return ManifestResult(local[0], local[1], str(digest), CacheStatus.HIT)
        client = self.ctx.clients[name]
        await gate.enter()
        fetched = await self.ctx.call(client.get_manifest, repo, str(digest))
        if not digest.matches(fetched.body):
            metrics.digest_mismatch("manifest")
            raise BadGateway(f"upstream {name} sent a manifest that does not match {digest}")
        return await self._store(route, digest, fetched, CacheStatus.MISS)

    async def _local(self, digest: str) -> tuple[bytes, str] | None:
        memo = self.ctx.memo.get(digest)
        if memo is not None:
            return memo
        row = await self.ctx.index.get_object(digest)
        if row is None and self.ctx.shared is not None:
            return await self._from_bucket(digest)
        if row is None or row.media_type is None:
            return None
        body = await self.ctx.store.read(Digest.parse(digest))
        if body is None:
            return None  # evicted: fetched again by digest
        self.ctx.memo.put(digest, body, row.media_type)
        return body, row.media_type

    async def _from_bucket(self, digest: str) -> tuple[bytes, str] | None:
        """A manifest this index never saw, from the shared tier (verified by the store):
        a replica with a new index still never fetches what the bucket holds."""
        body = await self.ctx.store.read(Digest.parse(digest))
        if body is None or body.lstrip()[:1] != b"{":
            return None
        media_type = manifest_media_type(body, None)
        if media_type == "application/octet-stream":
            return None  # JSON, but not a manifest (a config blob)
        await self.ctx.index.add_object(digest, len(body), media_type)
        blobs, children = referenced_digests(body)
        await self.ctx.index.record_refs(digest, blobs, children)  # as _store does
        self.ctx.memo.put(digest, body, media_type)
        return body, media_type

    async def _store(
        self, route: Route, digest: Digest, fetched: Manifest, status: CacheStatus
    ) -> ManifestResult:
        media_type = manifest_media_type(fetched.body, fetched.media_type)
        try:
            await self.ctx.store.put(digest, fetched.body)
        except DigestMismatch:
            metrics.digest_mismatch("manifest")
            raise BadGateway(f"manifest {digest} from upstream failed verification") from None
        index = self.ctx.index
        await index.add_object(str(digest), len(fetched.body), media_type)
        blobs, children = referenced_digests(fetched.body)
        await index.record_refs(str(digest), blobs, children)
        # The repository may now see everything its manifest references.
        await index.link(route.upstream.name, route.repository, [str(digest), *blobs, *children])
        self.ctx.memo.put(str(digest), fetched.body, media_type)
        return ManifestResult(fetched.body, media_type, str(digest), status)

    # -------------------------------------------------------------------- tags

    async def _by_tag(self, route: Route, tag: str, gate: _Gate) -> ManifestResult:
        name, repo = route.upstream.name, route.repository
        index = self.ctx.index
        ttl = self.ctx.settings.ttl_for(route.upstream)
        row = await index.get_tag(name, repo, tag, max_age=ttl)
        if row is not None and await self.ctx.store.stat(Digest.parse(row.digest)) is None:
            # Its manifest was evicted (maybe by another worker, which also dropped the
            # tag): a stat tells, not this process's memory. Forget what it remembers
            # and ask the index itself.
            self.ctx.memo.drop(row.digest)
            index.forget_tag_memo(name, repo, tag)
            row = await index.get_tag(name, repo, tag)
        now = time.time()
        decision = tag_decision(row, now, ttl)
        if row is not None and decision is TagDecision.FRESH:
            index.touch_tag(name, repo, tag)
            result = await self._by_digest(route, Digest.parse(row.digest), gate)
            return result if result.status is CacheStatus.HIT else _with(result, CacheStatus.MISS)
        if row is not None:
            return await self._revalidate(route, tag, row.digest, gate)
        return await self._fetch_tag(route, tag, gate)

    async def _fetch_tag(self, route: Route, tag: str, gate: _Gate) -> ManifestResult:
        client = self.ctx.clients[route.upstream.name]
        await gate.enter()
        if self.ctx.shared is not None:
            # The bucket may hold the manifest this tag names: a HEAD (never counted as
            # a pull by Docker Hub) says which, and the bytes need not cross again.
            head = await self.ctx.call(client.head_manifest, route.repository, tag)
            held = await self._local(head.digest) if head.digest is not None else None
            if head.digest is not None and held is not None:
                name, repo = route.upstream.name, route.repository
                blobs, children = referenced_digests(held[0])
                await self.ctx.index.link(name, repo, [head.digest, *blobs, *children])
                await self.ctx.index.set_tag(name, repo, tag, head.digest)
                result = await self._by_digest(route, Digest.parse(head.digest), gate)
                return _with(result, CacheStatus.REVALIDATED)
        fetched = await self.ctx.call(client.get_manifest, route.repository, tag)
        digest = _verified_digest(fetched, route.upstream.name)
        result = await self._store(route, digest, fetched, CacheStatus.MISS)
        await self.ctx.index.set_tag(route.upstream.name, route.repository, tag, str(digest))
        return result

    async def _revalidate(self, route: Route, tag: str, cached: str, gate: _Gate) -> ManifestResult:
        name, repo = route.upstream.name, route.repository
        client = self.ctx.clients[name]
        await gate.enter()
        try:
            head = await self.ctx.call(client.head_manifest, repo, tag, QUICK)
        except RegistryError as exc:
            if not serve_stale_on(exc):
                await self.ctx.index.delete_tag(name, repo, tag)
                raise
            log.warning(
                "serving stale %s/%s:%s (%s): upstream revalidation failed: %s",
                name,
                repo,
                tag,
                cached[:19],
                exc.message,
            )
            metrics.stale_serve(name)
            result = await self._by_digest(route, Digest.parse(cached), gate)
            return _with(result, CacheStatus.STALE)
        if head.digest is None:
            # Upstream does not say the digest on HEAD: a GET is the only way to know.
            return await self._fetch_tag(route, tag, gate)
        if head.digest == cached:
            await self.ctx.index.set_tag(name, repo, tag, cached)
            result = await self._by_digest(route, Digest.parse(cached), gate)
            return _with(result, CacheStatus.REVALIDATED)
        result = await self._by_digest(route, Digest.parse(head.digest), gate)
        await self.ctx.index.set_tag(name, repo, tag, head.digest)
        return _with(result, CacheStatus.MISS)


def _with(result: ManifestResult, status: CacheStatus) -> ManifestResult:
    return ManifestResult(result.body, result.media_type, result.digest, status)


def _verified_digest(fetched: Manifest, upstream: str) -> Digest:
    """The sha256 of the bytes; upstream's Docker-Content-Digest must agree if sent."""
    digest = Digest.of(fetched.body)
    if fetched.digest:
        try:
            claimed = Digest.parse(fetched.digest.strip())
        except RegistryError:
            raise BadGateway(f"upstream {upstream} sent an invalid Docker-Content-Digest") from None
        if not claimed.matches(fetched.body):
            metrics.digest_mismatch("manifest")
            raise BadGateway(f"upstream {upstream} sent a manifest that does not match its digest")
    return digest


def _platform_child(body: bytes, platform: tuple[str, str], upstream: str) -> str | None:
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    for item in doc.get("manifests") or []:
        plat = item.get("platform") or {}
        if (plat.get("os"), plat.get("architecture")) == platform and "digest" in item:
            # From upstream, and about to become a path and a URL: a digest, or a 502.
            child = valid_digest(item["digest"])
            if child is None:
                raise BadGateway(f"upstream {upstream} sent an index with an invalid child digest")
            return child
    return None
