"""A write that waited too long for another transaction's lock (``IndexBusy``) is not an
outage: the front keeps its access times for the next beat and stays healthy, where an
unreachable index (``IndexUnavailable``) makes it degraded. SQLite's "database is locked"
after its busy timeout is such a write too."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import pytest

from registry_cache.errors import IndexBusy, IndexUnavailable
from registry_cache.index import front as front_module
from registry_cache.index import sqlite as sqlite_index
from registry_cache.index.base import Index, TagKey
from registry_cache.index.front import IndexFront
from registry_cache.index.sqlite import SqliteIndex


class FailingWrites:
    """Only what ``IndexFront.flush`` calls: access times, failing with ``error``
    until it is None, then recorded."""

    def __init__(self, error: IndexUnavailable | None) -> None:
        self.error = error
        self.recorded: list[dict[str, float]] = []

    async def record_access(
        self, objects: Mapping[str, float], tags: Mapping[TagKey, float]
    ) -> None:
        if self.error is not None:
            raise self.error
        self.recorded.append(dict(objects))


def front(index: FailingWrites) -> IndexFront:
    return IndexFront(cast(Index, index), clock=lambda: 100.0)


async def test_a_busy_write_keeps_the_touches_and_the_front_healthy() -> None:
    index = FailingWrites(IndexBusy("index x: canceling statement due to lock timeout"))
    f = front(index)
    f.touch("sha256:a", 50.0)
    await f.flush()
    assert f.health().ok
    index.error = None
    await f.flush()
    assert index.recorded == [{"sha256:a": 50.0}]


async def test_an_unreachable_index_makes_the_front_degraded() -> None:
    index = FailingWrites(IndexUnavailable("index x: connection refused"))
    f = front(index)
    f.touch("sha256:a", 50.0)
    await f.flush()
    health: Any = f.health()
    assert not health.ok and "refused" in health.error


async def test_sqlite_a_write_past_another_process_lock_is_busy_not_an_outage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_index, "WRITE_BUSY_TIMEOUT", 0.2)  # read at first connection
    path = tmp_path / "index.sqlite3"
    index = await SqliteIndex.open(path)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        f = IndexFront(index, clock=lambda: 100.0)
        other.execute("BEGIN IMMEDIATE")  # another process's write transaction
        with pytest.raises(IndexBusy):
            await index.set_tag("docker.io", "library/alpine", "3.19", "sha256:" + "a" * 64, 1.0)
        await f.set_tag("docker.io", "library/alpine", "3.19", "sha256:" + "a" * 64)
        assert f.health().ok  # lost that write; reachable all along
        other.execute("ROLLBACK")
        await f.set_tag("docker.io", "library/alpine", "3.19", "sha256:" + "b" * 64)
        row = await index.get_tag("docker.io", "library/alpine", "3.19")
        assert row is not None and row.digest == "sha256:" + "b" * 64
    finally:
        other.close()
        await index.close()


async def test_a_request_stops_waiting_for_a_locked_write_which_then_lands(
    tmp_path: Path,
) -> None:
    """The server's front (``write_wait``): a write stuck behind another process's lock
    holds its request for ``write_wait`` at most, and lands once the lock is gone, in
    the order the writes were made; ``drain`` waits for it."""
    path = tmp_path / "index.sqlite3"
    index = await SqliteIndex.open(path)  # the real 30 s busy timeout
    other = sqlite3.connect(path, isolation_level=None)
    f = IndexFront(index, write_wait=0.05)
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    try:
        other.execute("BEGIN IMMEDIATE")
        loop = asyncio.get_running_loop()
        began = loop.time()
        await f.set_tag("docker.io", "library/alpine", "3.19", a)
        await f.set_tag("docker.io", "library/alpine", "3.19", b)  # queued behind the first
        assert loop.time() - began < 5.0  # two waits of 0.05 s, nowhere near 30 s
        # The memo answers meanwhile, with the newest digest.
        row = await f.get_tag("docker.io", "library/alpine", "3.19", max_age=60.0)
        assert row is not None and row.digest == b
        assert await index.get_tag("docker.io", "library/alpine", "3.19") is None
        other.execute("ROLLBACK")
        await asyncio.wait_for(f.drain(), timeout=20.0)
        landed = await index.get_tag("docker.io", "library/alpine", "3.19")
        assert landed is not None and landed.digest == b
        assert f.health().ok
    finally:
        other.close()
        await index.close()


async def test_without_write_wait_a_write_is_awaited_to_its_end(tmp_path: Path) -> None:
    """The commands' front waits for every write (they exit right after)."""
    index = await SqliteIndex.open(tmp_path / "index.sqlite3")
    try:
        f = IndexFront(index)
        await f.set_tag("docker.io", "library/alpine", "3.19", "sha256:" + "c" * 64)
        row = await index.get_tag("docker.io", "library/alpine", "3.19")
        assert row is not None and row.digest == "sha256:" + "c" * 64
    finally:
        await index.close()


async def test_writes_past_the_cap_of_late_ones_are_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A lock held for minutes must not grow the server's memory without end."""
    monkeypatch.setattr(front_module, "MAX_LATE_WRITES", 1)
    path = tmp_path / "index.sqlite3"
    index = await SqliteIndex.open(path)
    other = sqlite3.connect(path, isolation_level=None)
    f = IndexFront(index, write_wait=0.05)
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    try:
        other.execute("BEGIN IMMEDIATE")
        await f.set_tag("docker.io", "library/alpine", "3.19", a)  # late: goes on
        await f.set_tag("docker.io", "library/alpine", "3.19", b)  # over the cap: lost
        assert "index write dropped: 1 others still wait on a lock" in caplog.text
        other.execute("ROLLBACK")
        await asyncio.wait_for(f.drain(), timeout=20.0)
        landed = await index.get_tag("docker.io", "library/alpine", "3.19")
        assert landed is not None and landed.digest == a
    finally:
        other.close()
        await index.close()
