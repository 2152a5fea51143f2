"""An SQLITE_MISUSE from a write (seen under heavy disk writeback, cause unknown) is tried
once more, then an unavailable index: never an unexpected error (a 500) for a request."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from registry_cache.errors import IndexUnavailable
from registry_cache.index.sqlite import SqliteIndex


async def test_a_misused_write_is_tried_once_more_then_the_index_is_unavailable(
    tmp_path: Path,
) -> None:
    index = await SqliteIndex.open(tmp_path / "index.sqlite3")
    calls: list[int] = []

    def flaky(db: sqlite3.Connection) -> None:
        calls.append(1)
        db.execute("INSERT OR IGNORE INTO links (upstream, repo, digest) VALUES ('u', 'r', 'd')")
        if len(calls) == 1:
            raise sqlite3.InterfaceError("bad parameter or other API misuse")

    def broken(db: sqlite3.Connection) -> None:
        raise sqlite3.InterfaceError("bad parameter or other API misuse")

    try:
        await index._write(flaky)
        assert len(calls) == 2
        assert await index.is_linked("u", "r", "d")
        with pytest.raises(IndexUnavailable, match="API misuse"):
            await index._write(broken)
        await index.link("u", "r", ["e"])  # the writer's connection is usable afterwards
        assert await index.is_linked("u", "r", "e")
    finally:
        await index.close()
