"""The index contract: what the cache knows about content besides the bytes.

Every SQL statement of the product lives behind ``Index`` (``sqlite.py`` for one
machine, ``postgres.py`` for a cluster). The methods are async and never block
the event loop. They hold what blob files cannot say about themselves: which tag
points at which digest and when upstream last confirmed it, which repository may
see which digest, manifest media types, sizes and last access.

Blob *presence* is decided by the blob store, so a crash between a store write and
an index write loses metadata at worst, never correctness.

Two tiers hold content: this replica's local tier (the data directory: what the
object methods list, size and evict) and, when configured, the shared tier (the
bucket: the ``*_shared`` methods). An object row (the catalog: size, media type,
last access anywhere) and the tags naming it stay while any tier holds the
content, so content the bucket holds stays known after every local copy went.

``tests/contract/test_index_contract.py`` runs one suite over every implementation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..errors import IndexUnavailable

__all__ = [
    "Cursor",
    "DigestRange",
    "ImageStats",
    "Index",
    "IndexUnavailable",
    "LinkKey",
    "ManifestRefs",
    "ObjectRow",
    "RangeUsage",
    "RepoKey",
    "TagEntry",
    "TagImport",
    "TagKey",
    "TagRow",
    "UntaggedManifest",
    "UpstreamUsage",
    "UsageSummary",
]

TagKey = tuple[str, str, str]  # (upstream, repository, tag)
RepoKey = tuple[str, str]  # (upstream, repository)
LinkKey = tuple[str, str, str]  # (upstream, repository, digest)


@dataclass(frozen=True, slots=True)
class TagRow:
    digest: str
    checked_at: float  # last time upstream confirmed (or gave) this digest
    last_pulled: float


@dataclass(frozen=True, slots=True)
class TagEntry:
    upstream: str
    repo: str
    tag: str
    digest: str
    last_pulled: float


@dataclass(frozen=True, slots=True)
class TagImport:
    """A tag row as ``import_rows`` takes it (every column ``set_tag`` and access times set)."""

    upstream: str
    repo: str
    tag: str
    digest: str
    checked_at: float
    last_pulled: float


@dataclass(frozen=True, slots=True)
class ObjectRow:
    digest: str
    size: int
    media_type: str | None  # set for manifests, None for blobs
    created: float
    last_access: float


# Where an LRU page walk continues: (last_access, digest) of the last row seen.
Cursor = tuple[float, str]


@dataclass(frozen=True, slots=True)
class ManifestRefs:
    """What a stored manifest lists (``mediatypes.referenced_digests``)."""

    blobs: tuple[str, ...]  # config and layers
    children: tuple[str, ...]  # manifests of an index


@dataclass(frozen=True, slots=True)
class DigestRange:
    """What the index says about the digests ``lo <= d < hi`` (one fan-out directory)."""

    objects: list[ObjectRow]  # rows of this tier, by digest
    referenced: frozenset[str]  # digests in the range a tag, a link or a stored manifest names
    tagged: frozenset[str]  # digests in the range a tag names


@dataclass(frozen=True, slots=True)
class UntaggedManifest:
    """A stored manifest a repository pulled by digest only (no tag, no stored parent)."""

    upstream: str
    repo: str
    digest: str
    last_access: float


@dataclass(frozen=True, slots=True)
class ImageStats:
    """What ``cache ls`` shows of the image at a manifest (``inventory.closure``): the
    cached objects it reaches (the manifest; for an image manifest its config and
    layers; for an index every cached child with theirs), each once."""

    media_type: str | None  # the manifest's; None when it is not stored
    size: int  # bytes of those objects
    objects: int
    missing: int  # blobs the reached manifests list that are not stored
    platforms: int  # children of an index (0 for an image manifest)
    platforms_cached: int


NO_IMAGE = ImageStats(None, 0, 0, 0, 0, 0)  # a manifest that is not stored
CLOSURE_DEPTH = 8  # manifests below manifests followed (an index of indexes: 2)


@dataclass(frozen=True, slots=True)
class RangeUsage:
    """What ``cache du`` needs of the digests ``lo <= d < hi`` (one fan-out directory)."""

    digests: list[str]  # stored objects of this tier, sorted
    unreferenced_objects: int  # of those, what no tag, link or stored manifest names
    unreferenced_bytes: int


@dataclass(frozen=True, slots=True)
class UpstreamUsage:
    upstream: str
    repos: int  # with a tag or a link
    tags: int
    objects: int  # stored objects its tags or links name, each once
    bytes: int


@dataclass(frozen=True, slots=True)
class UsageSummary:
    """``cache du``'s figures the index aggregates (see ``inventory.totals``; what no
    tag, link or manifest names comes from ``digest_range``, fan by fan)."""

    upstreams: tuple[UpstreamUsage, ...]  # sorted by name
    objects: int
    bytes: int
    shared_objects: int  # stored, linked to more than one repository
    shared_bytes: int


class Index(Protocol):
    """The storage-independent index. Times are Unix seconds (floats)."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise ``IndexUnavailable`` unless a query answers (readiness)."""

    async def generation(self) -> int:
        """A counter that grows whenever rows were deleted (forget, prune, unlink):
        whoever remembers rows drops its memos when it changed."""

    async def wait_changed(self, within: float) -> bool:
        """Wait up to ``within`` s for rows to be deleted anywhere; True if they were.

        SQLite polls ``generation``; PostgreSQL is told at once (LISTEN/NOTIFY).
        """

    # ------------------------------------------------------------------ tags

    async def get_tag(self, upstream: str, repo: str, tag: str) -> TagRow | None: ...

    async def set_tag(
        self, upstream: str, repo: str, tag: str, digest: str, checked_at: float
    ) -> None:
        """Insert or update; ``last_pulled`` becomes ``checked_at`` too."""

    async def delete_tag(self, upstream: str, repo: str, tag: str) -> None: ...

    async def list_tags(self, upstream: str, repo: str) -> list[str]:
        """Sorted tag names of one repository."""

    async def all_tags(self) -> list[TagEntry]:
        """Every tag, sorted by upstream, repository, tag."""

    async def prune_tags(self, entries: Sequence[TagEntry]) -> int:
        """Delete these tags unless pulled after the ``last_pulled`` given; the count."""

    # --------------------------------------------------------------- objects

    async def add_object(self, digest: str, size: int, media_type: str | None, now: float) -> None:
        """Insert, or refresh size/last access (a media type once known is kept)."""

    async def adopt_objects(self, rows: Sequence[ObjectRow]) -> None:
        """Insert rows for verified files found without one (``cache gc``); keep existing."""

    async def get_object(self, digest: str) -> ObjectRow | None: ...

    async def total_size(self) -> int:
        """Sum of the sizes of every object row (a running total: no scan)."""

    async def count_objects(self) -> int:
        """The number of object rows (a running total: no scan)."""

    async def get_objects(self, digests: Sequence[str]) -> list[ObjectRow]:
        """The rows of those of ``digests`` that have one (any order)."""

    async def objects_page(self, after: Cursor | None, limit: int) -> list[ObjectRow]:
        """Up to ``limit`` objects in least-recently-used order, after ``after``.

        A walk over the whole index costs one page in memory at a time.
        """

    async def forget(self, digests: Sequence[str]) -> None:
        """This replica's local tier no longer holds these. Their object rows and the
        tags naming them go too, unless another tier (the bucket, another replica)
        still holds the content."""

    # ------------------------------------------------------ the shared tier

    async def add_shared(self, digest: str, size: int, now: float) -> None:
        """The bucket holds ``digest`` (its catalog row is created if missing, and kept
        while the bucket holds it, whatever the local tiers hold)."""

    async def is_shared(self, digest: str) -> bool: ...

    async def shared_totals(self) -> tuple[int, int]:
        """(objects, bytes) the bucket holds."""

    async def shared_page(self, after: Cursor | None, limit: int) -> list[ObjectRow]:
        """Up to ``limit`` objects the bucket holds, least recently used first (the
        catalog's last access: anywhere in the cluster), after ``after``."""

    async def forget_shared(self, digests: Sequence[str]) -> None:
        """The bucket no longer holds these; rows and tags go once no tier does."""

    # ------------------------------------------------------------ references

    async def record_refs(self, refs: Mapping[str, ManifestRefs]) -> None:
        """What these stored manifests (rows with a media type) list, when stored or
        parsed later from their files; known from then on, until the row goes."""

    async def prune_refs(self) -> int:
        """Drop the references of manifests whose row is gone (``cache gc``; eviction
        leaves them, which only ever count while their manifest is stored); how many."""

    async def unparsed_manifests(self, after: str | None, limit: int) -> list[str]:
        """Stored manifests whose references were never recorded (rows written by a
        release before they were), by digest, after ``after``."""

    async def refs_of(self, manifests: Sequence[str]) -> dict[str, ManifestRefs]:
        """Recorded references of those of ``manifests`` that are stored."""

    async def digest_range(self, lo: str, hi: str | None) -> DigestRange:
        """Rows and references of the digests ``lo <= d < hi`` (``hi`` None: no end)."""

    # --------------------------------------------------------------- listing

    async def tags_page(self, after: TagKey | None, limit: int) -> list[TagEntry]:
        """Up to ``limit`` tags in (upstream, repository, tag) order after ``after``."""

    async def untagged_manifests(self) -> list[UntaggedManifest]:
        """Stored manifests linked to a repository no tag of which names them and that
        no stored manifest lists as a child (what ``cache ls`` shows as pulled by digest:
        as long as that part of its output), in (upstream, repository, digest) order."""

    async def image_stats(self, roots: Sequence[str]) -> dict[str, ImageStats]:
        """``ImageStats`` of the images at these manifests, computed by the index (one
        query for a page of images, whatever they reach); every root has an entry
        (``NO_IMAGE`` when it is not stored)."""

    async def usage_summary(self) -> UsageSummary: ...

    async def range_usage(self, lo: str, hi: str | None) -> RangeUsage:
        """The stored digests ``lo <= d < hi`` and the count and bytes of those nothing
        names (``DigestRange.referenced``), counted by the index."""

    # ----------------------------------------------------------------- links

    async def is_linked(self, upstream: str, repo: str, digest: str) -> bool: ...

    async def link(self, upstream: str, repo: str, digests: Sequence[str]) -> None: ...

    async def unlink(self, upstream: str, repo: str, digests: Sequence[str] | None) -> None:
        """Remove some links of a repository, or all of them (``None``)."""

    async def repositories(self, upstream: str | None = None) -> list[RepoKey]:
        """Every (upstream, repository) with a tag or a link, sorted."""

    async def links_of(self, upstream: str, repo: str) -> list[str]: ...

    async def holders(self, digests: Sequence[str]) -> dict[str, frozenset[RepoKey]]:
        """The repositories linked to each of ``digests`` (those with no link are left out)."""

    # ---------------------------------------------------------- access times

    async def record_access(
        self, objects: Mapping[str, float], tags: Mapping[TagKey, float]
    ) -> None:
        """Batched access times: each row's ``last_access``/``last_pulled`` only grows."""

    # ------------------------------------------------------------------- bulk

    async def import_rows(
        self,
        objects: Sequence[ObjectRow] = (),
        tags: Sequence[TagImport] = (),
        links: Sequence[LinkKey] = (),
        refs: Mapping[str, ManifestRefs] | None = None,
    ) -> None:
        """Insert many rows at once, as the serving path would have left them (a
        restore, a migration, the big-cache benchmark); rows already there are kept.
        ``refs``: as ``record_refs``, for manifests among ``objects``.

        Cut into transactions of bounded size; no generation bump (nothing is deleted).
        """
