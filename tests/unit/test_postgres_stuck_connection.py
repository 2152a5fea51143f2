"""A pooled PostgreSQL connection left stuck by a server restart is dropped, not reused.

asyncpg can hand back a connection the server ended mid-operation with its protocol
still in the error state: the next statement raises ``InternalClientError`` before
it is sent. The index terminates that connection and runs the job once more on a
fresh one; only a second such failure counts as the index being unreachable (and
never escapes as anything but ``IndexUnavailable``). The pool here is a fake; the
restart itself is exercised against a real server in tests/integration/test_cluster.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from registry_cache.errors import IndexUnavailable
from registry_cache.index.postgres import PostgresIndex


class FakeConnection:
    def __init__(self, stuck: bool) -> None:
        self.stuck = stuck
        self.terminated = False

    async def fetchval(self, query: str) -> int:
        if self.stuck:
            raise asyncpg.exceptions.InternalClientError(
                "cannot switch to state 11; another operation (2) is in progress"
            )
        return 1

    def terminate(self) -> None:
        self.terminated = True


class FakePool:
    """Hands out ``stuck`` connections first, then good ones; a terminated one is
    never handed out again (as asyncpg's pool does)."""

    def __init__(self, stuck: int) -> None:
        self.connections = [FakeConnection(i < stuck) for i in range(stuck + 1)]
        self.handed: list[FakeConnection] = []

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[FakeConnection]:
        conn = next(c for c in self.connections if not c.terminated)
        self.handed.append(conn)
        yield conn


def index_over(pool: FakePool) -> PostgresIndex:
    index = PostgresIndex("postgresql://cache@127.0.0.1:1/cache", "secret", "http://a")
    fake: Any = pool
    index._pool = fake
    index._migrated = True
    return index


async def test_a_stuck_connection_is_terminated_and_the_job_runs_on_a_fresh_one() -> None:
    pool = FakePool(stuck=1)
    index = index_over(pool)
    assert await index.run(lambda conn: conn.fetchval("SELECT 1")) == 1
    first, second = pool.handed
    assert first.terminated and not second.terminated
    await index.ping()  # not in the retry window: nothing counted as an outage


async def test_two_stuck_connections_make_the_index_unavailable_not_a_crash() -> None:
    pool = FakePool(stuck=2)
    index = index_over(pool)
    with pytest.raises(IndexUnavailable) as raised:
        await index.run(lambda conn: conn.fetchval("SELECT 1"))
    assert "another operation" in raised.value.message and "secret" not in raised.value.message
    assert [c.terminated for c in pool.handed] == [True, True]
    with pytest.raises(IndexUnavailable, match="retrying shortly"):
        await index.ping()  # an outage like any other: a request never waits twice
