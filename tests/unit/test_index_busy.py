"""A write that waited too long for another transaction's lock (``IndexBusy``) is not an
outage: the front keeps its access times for the next beat and stays healthy, where an
unreachable index (``IndexUnavailable``) makes it degraded."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from registry_cache.errors import IndexBusy, IndexUnavailable
from registry_cache.index.base import Index, TagKey
from registry_cache.index.front import IndexFront


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
