"""The index: tags, repository links, objects and access times (see ``base.py``)."""

from __future__ import annotations

from ..config import Settings
from ..store.layout import Layout
from .base import Index, IndexUnavailable, ObjectRow, TagEntry, TagRow
from .sqlite import SqliteIndex

__all__ = [
    "Index",
    "IndexUnavailable",
    "ObjectRow",
    "SqliteIndex",
    "TagEntry",
    "TagRow",
    "open_index",
]


async def open_index(settings: Settings, *, readonly: bool = False, wait: bool = True) -> Index:
    """The configured index: SQLite in the data directory (the default), or PostgreSQL
    (``wait=False``: start even while it is unreachable; it is retried per query)."""
    if settings.index is not None:
        from .postgres import PostgresIndex  # asyncpg only when a cluster uses it

        return await PostgresIndex.open(
            settings.index,
            settings.index_secret(),
            replica=settings.advertise or "local",
            shared=settings.storage,
            wait=wait,
        )
    return await SqliteIndex.open(Layout(settings.data_dir).index, readonly=readonly)
