"""The ``FillCoordinator`` contract: one suite, run over every implementation.

``LocalFills`` (flock single flight on one machine) and ``ClusterFills`` (the same,
with each fill's source chosen across replicas: here one replica on a real
PostgreSQL, so every fill takes the lease and goes upstream). Fake upstream
sources: the contract is about coordination, not HTTP.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from urllib3.exceptions import ProtocolError

from registry_cache.cluster.directory import PostgresDirectory
from registry_cache.cluster.fills import ClusterFills
from registry_cache.cluster.leases import LeaseKeeper
from registry_cache.cluster.peers import PeerClient
from registry_cache.digest import Digest
from registry_cache.errors import DigestMismatch
from registry_cache.index.front import IndexFront
from registry_cache.index.postgres import PostgresIndex
from registry_cache.index.sqlite import SqliteIndex
from registry_cache.store.blobs import FileBlobStore
from registry_cache.store.fill import (
    HOLDBACK,
    FillCoordinator,
    FillFailed,
    LocalFills,
    Origin,
)
from registry_cache.store.layout import Layout
from tests.harness.fills import read_all

DATA = os.urandom((2 << 20) + 4321)
DIGEST = Digest("sha256", hashlib.sha256(DATA).hexdigest())
ORIGIN = Origin("docker.io", "library/contract")


class Source:
    def __init__(self, data: bytes, start: int, *, break_after: int | None, gate: Any) -> None:
        self.start, self.size = start, len(data)
        self._data, self._pos, self._sent = data, start, 0
        self._break_after, self._gate = break_after, gate

    def readinto(self, buffer: memoryview) -> int:
        if self._gate is not None:
            self._gate.wait(10)
        if self._break_after is not None and self._sent >= self._break_after:
            raise ProtocolError("connection reset by peer")
        count = min(len(buffer), len(self._data) - self._pos, 128 << 10)
        buffer[:count] = self._data[self._pos : self._pos + count]
        self._pos += count
        self._sent += count
        return count

    def close(self) -> None:
        pass


class Upstream:
    """An opener: records the offsets asked for; may break once, may be gated."""

    def __init__(
        self, data: bytes = DATA, *, breaks: int = 0, gate: threading.Event | None = None
    ) -> None:
        self.data, self.breaks, self.gate = data, breaks, gate
        self.offsets: list[int] = []

    def __call__(self, offset: int) -> Source:
        self.offsets.append(offset)
        broken = 1 << 20 if self.breaks else None
        self.breaks = max(0, self.breaks - 1)
        return Source(self.data, offset, break_after=broken, gate=self.gate)


@dataclass
class Subject:
    fills: FillCoordinator
    store: FileBlobStore


@pytest.fixture(params=["local", "cluster"])
async def subject(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Subject]:
    layout = Layout(tmp_path / "data")
    layout.create()
    store = FileBlobStore(layout)
    keeper: LeaseKeeper | None = None
    if request.param == "local":
        index = IndexFront(await SqliteIndex.open(layout.index))
        fills: FillCoordinator = LocalFills(store, index)
    else:
        database = request.getfixturevalue("pg_database")
        raw = await PostgresIndex.open(database.url, replica="http://127.0.0.1:1")
        index = IndexFront(raw)
        directory = PostgresDirectory(raw)
        keeper = LeaseKeeper(directory)
        import urllib3

        peers = PeerClient("0123456789abcdef0123", urllib3.PoolManager())
        fills = ClusterFills(LocalFills(store, index), directory, peers, keeper)
    yield Subject(fills, store)
    await fills.close()
    if keeper is not None:
        await keeper.stop()
    await index.index.close()


async def finished(subject: Subject, digest: Digest = DIGEST) -> None:
    fill = subject.fills.in_process(digest)
    if fill is not None:
        await asyncio.wait_for(asyncio.shield(fill.finished), 20)


async def test_one_fill_for_many_joiners_and_every_one_gets_every_byte(subject: Subject) -> None:
    upstream = Upstream()
    joined = [await subject.fills.join_or_start(DIGEST, ORIGIN, upstream) for _ in range(6)]
    assert all(j is not None for j in joined)
    assert [j[1] for j in joined if j] == [True, False, False, False, False, False]
    bodies = await asyncio.gather(*(read_all(j[0]) for j in joined if j))
    assert set(bodies) == {DATA}
    assert upstream.offsets == [0]
    await finished(subject)
    assert subject.store.stat_now(DIGEST) == len(DATA)


async def test_a_committed_blob_is_not_filled_again(subject: Subject) -> None:
    await subject.store.put(DIGEST, DATA)
    assert await subject.fills.join_or_start(DIGEST, ORIGIN, Upstream()) is None


async def test_followers_read_as_bytes_arrive_and_the_last_byte_waits(subject: Subject) -> None:
    gate = threading.Event()
    upstream = Upstream(gate=gate)
    joined = await subject.fills.join_or_start(DIGEST, ORIGIN, upstream)
    assert joined is not None
    reader = joined[0]
    assert await reader.wait_size() == len(DATA)  # from upstream's headers, before any byte
    fill = subject.fills.in_process(DIGEST)
    assert fill is not None and fill.written == 0  # the source holds its bytes back
    gate.set()
    first = await reader.readable(0)
    assert 0 < first <= len(DATA) - HOLDBACK or fill.verified
    assert await read_all(reader) == DATA
    await finished(subject)


async def test_progress_lists_a_fill_in_flight(subject: Subject) -> None:
    gate = threading.Event()
    joined = await subject.fills.join_or_start(DIGEST, ORIGIN, Upstream(gate=gate))
    assert joined is not None
    (progress,) = subject.fills.progress()
    assert (progress.digest, progress.upstream, progress.repository) == (
        str(DIGEST),
        ORIGIN.upstream,
        ORIGIN.repository,
    )
    gate.set()
    assert await read_all(joined[0]) == DATA
    await finished(subject)
    assert subject.fills.progress() == []


async def test_a_broken_source_resumes_with_range(subject: Subject) -> None:
    upstream = Upstream(breaks=1)
    joined = await subject.fills.join_or_start(DIGEST, ORIGIN, upstream)
    assert joined is not None
    assert await read_all(joined[0]) == DATA
    assert upstream.offsets[0] == 0 and len(upstream.offsets) == 2 and upstream.offsets[1] > 0
    await finished(subject)


async def test_wrong_bytes_fail_every_reader_one_byte_short_and_store_nothing(
    subject: Subject,
) -> None:
    bad = bytearray(DATA)
    bad[-1] ^= 0xFF
    joined = [
        await subject.fills.join_or_start(DIGEST, ORIGIN, Upstream(bytes(bad))) for _ in range(2)
    ]
    for item in joined:
        assert item is not None
        reader = item[0]
        seen = 0
        with pytest.raises(FillFailed) as info:
            async with asyncio.timeout(20):
                await reader.wait_size()
                while True:
                    seen = await reader.readable(seen)
        reader.detach()
        assert isinstance(info.value.error, DigestMismatch)
        assert seen <= len(DATA) - HOLDBACK
    await finished(subject)
    assert subject.store.stat_now(DIGEST) is None
