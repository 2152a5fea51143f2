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
    "Index",
    "IndexUnavailable",
    "ObjectRow",
    "RepoKey",
    "TagEntry",
    "TagKey",
    "TagRow",
]

TagKey = tuple[str, str, str]  # (upstream, repository, tag)
RepoKey = tuple[str, str]  # (upstream, repository)


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
class ObjectRow:
    digest: str
    size: int
    media_type: str | None  # set for manifests, None for blobs
    created: float
    last_access: float


# Where an LRU page walk continues: (last_access, digest) of the last row seen.
Cursor = tuple[float, str]


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
        """Sum of the sizes of every object row."""

    async def count_objects(self) -> int: ...

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

    # ----------------------------------------------------------------- links

    async def is_linked(self, upstream: str, repo: str, digest: str) -> bool: ...

    async def link(self, upstream: str, repo: str, digests: Sequence[str]) -> None: ...

    async def unlink(self, upstream: str, repo: str, digests: Sequence[str] | None) -> None:
        """Remove some links of a repository, or all of them (``None``)."""

    async def repositories(self, upstream: str | None = None) -> list[RepoKey]:
        """Every (upstream, repository) with a tag or a link, sorted."""

    async def links_of(self, upstream: str, repo: str) -> list[str]: ...

    # ---------------------------------------------------------- access times

    async def record_access(
        self, objects: Mapping[str, float], tags: Mapping[TagKey, float]
    ) -> None:
        """Batched access times: each row's ``last_access``/``last_pulled`` only grows."""
