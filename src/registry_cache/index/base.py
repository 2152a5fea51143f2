"""The index contract: what the cache knows about content besides the bytes.

Every SQL statement of the product lives behind ``Index`` (``sqlite.py`` for one
machine, ``postgres.py`` for a cluster). The methods are async and never block
the event loop. They hold what blob files cannot say about themselves: which tag
points at which digest and when upstream last confirmed it, which repository may
see which digest, manifest media types, sizes and last access.

Blob *presence* is decided by the blob store, so a crash between a store write and
an index write loses metadata at worst, never correctness.

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
    "LinkKey",
    "ObjectRow",
    "RepoKey",
    "TagEntry",
    "TagImport",
    "TagKey",
    "TagRow",
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
        """Drop object rows and the tags naming them (their content is gone)."""

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

    # ------------------------------------------------------------------- bulk

    async def import_rows(
        self,
        objects: Sequence[ObjectRow] = (),
        tags: Sequence[TagImport] = (),
        links: Sequence[LinkKey] = (),
    ) -> None:
        """Insert many rows at once, as the serving path would have left them (a
        restore, a migration, the big-cache benchmark); rows already there are kept.

        Cut into transactions of bounded size; no generation bump (nothing is deleted).
        """
