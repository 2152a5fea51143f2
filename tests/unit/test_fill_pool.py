"""Fills run on a bounded pool: N distinct cold digests never mean N threads."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from pathlib import Path

from registry_cache.digest import Digest
from registry_cache.index.front import IndexFront
from registry_cache.index.sqlite import SqliteIndex
from registry_cache.store.blobs import FileBlobStore
from registry_cache.store.fill import LocalFills, Origin
from registry_cache.store.layout import Layout


class GatedSource:
    def __init__(self, data: bytes, gate: threading.Event) -> None:
        self.start, self.size = 0, len(data)
        self._data, self._pos, self._gate = data, 0, gate

    def readinto(self, buffer: memoryview) -> int:
        self._gate.wait(10)
        count = min(len(buffer), len(self._data) - self._pos)
        buffer[:count] = self._data[self._pos : self._pos + count]
        self._pos += count
        return count

    def close(self) -> None:
        pass


def fill_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("fill"))


async def test_fills_beyond_the_pool_wait_for_a_slot_instead_of_a_thread(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.create()
    index = IndexFront(await SqliteIndex.open(layout.index))
    fills = LocalFills(FileBlobStore(layout), index, max_fills=2)
    gate = threading.Event()
    blobs = [os.urandom(1000 + i) for i in range(6)]
    readers = []
    try:
        before = fill_threads()
        for data in blobs:
            digest = Digest("sha256", hashlib.sha256(data).hexdigest())

            def opener(_offset: int, data: bytes = data) -> GatedSource:
                return GatedSource(data, gate)

            joined = await fills.join_or_start(digest, Origin("u", "r"), opener)
            assert joined is not None and joined[1]
            readers.append(joined[0])
        assert fill_threads() - before <= 2
        gate.set()
        sizes = await asyncio.gather(*(reader.wait_size() for reader in readers))
        assert sizes == [len(d) for d in blobs]  # every queued fill ran in its turn
        for reader in readers:
            reader.detach()
        for fill in list(fills.fills.values()):
            await fill.finished
    finally:
        gate.set()
        await fills.close()
        await index.index.close()


class StallingSource:
    """64 KiB at once (readers are woken), the rest of ``first`` bytes 20 ms later (too
    soon for another wake-up), then a stall until ``gate`` opens, then the rest."""

    def __init__(self, data: bytes, first: int, gate: threading.Event) -> None:
        self.start, self.size = 0, len(data)
        self._data, self._pos, self._first, self._gate = data, 0, first, gate

    def readinto(self, buffer: memoryview) -> int:
        if self._pos >= self._first:
            self._gate.wait(10)
        elif self._pos > 0:
            time.sleep(0.02)
        end = (64 << 10) if self._pos == 0 else self._first
        if self._pos >= self._first:
            end = len(self._data)
        count = min(len(buffer), end - self._pos)
        buffer[:count] = self._data[self._pos : self._pos + count]
        self._pos += count
        return count

    def close(self) -> None:
        pass


async def test_bytes_written_just_before_a_stall_reach_readers_without_waiting_for_more(
    tmp_path: Path,
) -> None:
    """Readers are woken every 4 MiB or 50 ms; a stall right after a skipped wake-up
    must not keep bytes that are already in the file from them."""
    layout = Layout(tmp_path)
    layout.create()
    index = IndexFront(await SqliteIndex.open(layout.index))
    fills = LocalFills(FileBlobStore(layout), index)
    data = os.urandom(8 << 20)
    digest = Digest("sha256", hashlib.sha256(data).hexdigest())
    gate = threading.Event()
    first = (1 << 20) + 12345  # not at a 4 MiB boundary, read quickly after the first byte
    try:
        joined = await fills.join_or_start(
            digest, Origin("u", "r"), lambda _offset: StallingSource(data, first, gate)
        )
        assert joined is not None
        reader = joined[0]
        await reader.wait_size()
        seen = 0
        async with asyncio.timeout(5):  # the stall lasts until the gate opens (10 s)
            while seen < first:
                seen = await reader.readable(seen)
        assert seen == first
        gate.set()
        reader.detach()
        for fill in list(fills.fills.values()):
            await fill.finished
    finally:
        gate.set()
        await fills.close()
        await index.index.close()


class GatedIndex(SqliteIndex):
    """Records an object only once ``gate`` opens (a busy index, e.g. PostgreSQL under load)."""

    gate: asyncio.Event

    async def add_object(self, digest: str, size: int, media_type: str | None, now: float) -> None:
        await self.gate.wait()
        await super().add_object(digest, size, media_type, now)


class SizeAtAfterFill:
    """A listener (the evictor's place) noting the index's total size when told."""

    def __init__(self, index: SqliteIndex) -> None:
        self.index = index
        self.seen: list[asyncio.Task[int]] = []

    def before_fill(self, digest: Digest, size: int) -> None:
        pass

    def after_fill(self, fill: object) -> None:
        self.seen.append(asyncio.get_running_loop().create_task(self.index.total_size()))


async def test_the_listener_hears_of_a_committed_fill_once_its_object_is_in_the_index(
    tmp_path: Path,
) -> None:
    layout = Layout(tmp_path)
    layout.create()
    raw = await GatedIndex.open(layout.index)
    assert isinstance(raw, GatedIndex)
    raw.gate = asyncio.Event()
    listener = SizeAtAfterFill(raw)
    fills = LocalFills(FileBlobStore(layout), IndexFront(raw), listener=listener)
    data = os.urandom(5000)
    digest = Digest("sha256", hashlib.sha256(data).hexdigest())
    open_source = threading.Event()
    open_source.set()
    try:
        joined = await fills.join_or_start(
            digest, Origin("u", "r"), lambda _offset: GatedSource(data, open_source)
        )
        assert joined is not None
        reader, _ = joined
        assert await reader.wait_size() == len(data)
        reader.detach()
        fill = fills.fills.get(digest)
        if fill is not None:
            await fill.finished
        assert listener.seen == []  # committed, but its row is not in the index yet
        raw.gate.set()
        await fills.recorded(digest)
        for _ in range(100):  # the done callbacks run on the next turns of the loop
            if listener.seen:
                break
            await asyncio.sleep(0)
        assert [await task for task in listener.seen] == [len(data)]
    finally:
        raw.gate.set()
        await fills.close()
        await raw.close()
