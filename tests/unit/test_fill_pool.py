"""Fills run on a bounded pool: N distinct cold digests never mean N threads."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
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
