"""Single-flight fills with fake upstream sources (no network)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import threading
from pathlib import Path

import pytest
from urllib3.exceptions import ProtocolError

from registry_cache.digest import Digest, Hasher
from registry_cache.errors import DigestMismatch
from registry_cache.index.front import IndexFront
from registry_cache.index.sqlite import SqliteIndex
from registry_cache.store.blobs import FileBlobStore
from registry_cache.store.fill import (
    HOLDBACK,
    FillFailed,
    LocalFills,
    Origin,
    RemoteFill,
)
from registry_cache.store.layout import Layout
from tests.harness.fills import read_all
from tests.harness.wait import until

DATA = os.urandom(3 * (1 << 20) + 12345)
DIGEST = Digest("sha256", hashlib.sha256(DATA).hexdigest())
ORIGIN = Origin("docker.io", "library/test")


class FakeSource:
    """Serves ``data[start:]``; optionally breaks after ``break_after`` bytes."""

    def __init__(
        self,
        data: bytes,
        start: int,
        break_after: int | None = None,
        gate: threading.Event | None = None,
        honour_range: bool = True,
    ) -> None:
        self.start = start if honour_range else 0
        self.size = len(data)
        self._data = data
        self._pos = self.start
        self._break_after = break_after
        self._sent = 0
        self._gate = gate

    def readinto(self, buffer: memoryview) -> int:
        if self._gate is not None:
            self._gate.wait(5)
        if self._break_after is not None and self._sent >= self._break_after:
            raise ProtocolError("connection reset by peer")
        count = min(len(buffer), len(self._data) - self._pos, 256 * 1024)
        buffer[:count] = self._data[self._pos : self._pos + count]
        self._pos += count
        self._sent += count
        return count

    def close(self) -> None:
        pass


class Opener:
    def __init__(self, data: bytes = DATA, **kwargs: object) -> None:
        self.offsets: list[int] = []
        self.data = data
        self.kwargs = kwargs
        self.breaks_left = 0

    def __call__(self, offset: int) -> FakeSource:
        self.offsets.append(offset)
        break_after = None
        if self.breaks_left:
            self.breaks_left -= 1
            break_after = 1 << 20
        return FakeSource(self.data, offset, break_after=break_after, **self.kwargs)  # type: ignore[arg-type]


async def manager(tmp_path: Path) -> LocalFills:
    layout = Layout(tmp_path)
    layout.create()
    index = IndexFront(await SqliteIndex.open(layout.index))
    return LocalFills(FileBlobStore(layout), index)


async def fills_finished(fills: LocalFills) -> None:
    for fill in list(fills.fills.values()):
        await fill.finished


async def test_one_fill_many_readers(tmp_path: Path) -> None:
    fills = await manager(tmp_path)
    opener = Opener()
    results = []
    for _ in range(8):
        joined = await fills.join_or_start(DIGEST, ORIGIN, opener)
        assert joined is not None
        results.append(joined)
    assert [started for _, started in results] == [True] + [False] * 7
    bodies = await asyncio.gather(*(read_all(reader) for reader, _ in results))
    assert all(body == DATA for body in bodies)
    assert opener.offsets == [0]  # exactly one upstream fetch
    await fills_finished(fills)  # the commit follows the last byte
    assert fills.store.stat_now(DIGEST) == len(DATA)
    assert not fills.layout.partial(DIGEST).exists()


async def test_break_midway_resumes_with_range(tmp_path: Path) -> None:
    fills = await manager(tmp_path)
    opener = Opener()
    opener.breaks_left = 2
    joined = await fills.join_or_start(DIGEST, ORIGIN, opener)
    assert joined is not None
    assert await read_all(joined[0]) == DATA
    assert opener.offsets[0] == 0 and len(opener.offsets) == 3
    assert opener.offsets[1] > 0 and opener.offsets[2] > opener.offsets[1]
    await fills_finished(fills)


async def test_a_finished_fill_logs_where_its_time_went(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fills = await manager(tmp_path)
    opener = Opener()
    opener.breaks_left = 1
    caplog.set_level(logging.INFO, logger="registry_cache.fill")
    joined = await fills.join_or_start(DIGEST, ORIGIN, opener)
    assert joined is not None
    assert await read_all(joined[0]) == DATA
    await fills_finished(fills)
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("filled")]
    assert line.startswith(f"filled {DIGEST} from docker.io (3.0 MiB, 1 resumes): answered ")
    stages = re.findall(r"(answered|first byte|last byte|verified|committed) ([\d.]+) ms", line)
    assert [name for name, _ in stages] == [
        "answered",
        "first byte",
        "last byte",
        "verified",
        "committed",
    ]
    times = [float(at) for _, at in stages]
    assert times == sorted(times)  # each stage after the one before


async def test_upstream_ignoring_range_is_skipped(tmp_path: Path) -> None:
    fills = await manager(tmp_path)
    opener = Opener(honour_range=False)
    opener.breaks_left = 1
    joined = await fills.join_or_start(DIGEST, ORIGIN, opener)
    assert joined is not None
    assert await read_all(joined[0]) == DATA
    await fills_finished(fills)


class GatedHasher:
    """sha256 whose final digest waits for ``gate``: holds a fill between its last
    written byte and its verification, the window the hold-back exists for."""

    def __init__(self, gate: threading.Event) -> None:
        self._hash = hashlib.sha256()
        self._gate = gate

    def update(self, data: bytes | memoryview, /) -> None:
        self._hash.update(data)

    def hexdigest(self) -> str:
        assert self._gate.wait(10), "the test never let the hash finish"
        return self._hash.hexdigest()


def gated_digest(gate: threading.Event) -> Digest:
    class GatedDigest(Digest):
        __slots__ = ()

        def hasher(self) -> Hasher:
            return GatedHasher(gate)

    return GatedDigest(DIGEST.algorithm, DIGEST.hex)


async def test_digest_mismatch_never_releases_the_last_byte(tmp_path: Path) -> None:
    """Every byte is in the file and the digest not yet known: readers get all but the
    held-back byte; then the mismatch fails them. Each state is waited for, none assumed."""
    fills = await manager(tmp_path)
    bad = bytearray(DATA)
    bad[-1] ^= 0xFF  # the damage is in the last byte: only the final hash can see it
    verifying = threading.Event()
    digest = gated_digest(verifying)
    joined = await fills.join_or_start(digest, ORIGIN, Opener(data=bytes(bad)))
    assert joined is not None
    reader = joined[0]
    fill = fills.in_process(digest)
    assert fill is not None
    size = await reader.wait_size()
    assert size == len(DATA)
    await until(lambda: fill.written == size, within=10)  # written, not yet verified
    end = await reader.readable(0)
    assert end == size - HOLDBACK  # all but the held-back byte, and not one more
    handle = reader.open()
    try:
        assert os.pread(handle.fileno(), size, 0) == bytes(bad)  # the file has them all
    finally:
        handle.close()
    verifying.set()  # the digest is computed: it does not match
    with pytest.raises(FillFailed) as info:
        async with asyncio.timeout(10):
            await reader.readable(end)
    reader.detach()
    assert isinstance(info.value.error, DigestMismatch)
    await asyncio.wait_for(fill.finished, 10)
    assert fills.store.stat_now(DIGEST) is None
    assert not fills.layout.partial(DIGEST).exists()


async def test_crash_leftover_is_rehashed_and_resumed(tmp_path: Path) -> None:
    fills = await manager(tmp_path)
    fills.layout.partial(DIGEST).write_bytes(DATA[: 1 << 20])
    opener = Opener()
    joined = await fills.join_or_start(DIGEST, ORIGIN, opener)
    assert joined is not None
    assert await read_all(joined[0]) == DATA
    assert opener.offsets == [1 << 20]
    await fills_finished(fills)


async def test_other_process_follows_through_the_file(tmp_path: Path) -> None:
    gate = threading.Event()
    first = await manager(tmp_path)
    joined = await first.join_or_start(DIGEST, ORIGIN, Opener(gate=gate))
    assert joined is not None and joined[1]
    # A second manager stands in for another worker: flock conflicts per open file.
    second = LocalFills(first.store, first.index)
    other = await second.join_or_start(DIGEST, ORIGIN, Opener())
    assert other is not None
    remote, started = other
    assert isinstance(remote, RemoteFill) and not started
    gate.set()
    bodies = await asyncio.gather(read_all(joined[0]), read_all(remote))
    assert list(bodies) == [DATA, DATA]
    await fills_finished(first)


async def test_committed_blob_is_not_refilled(tmp_path: Path) -> None:
    fills = await manager(tmp_path)
    await fills.store.put(DIGEST, DATA)
    assert await fills.join_or_start(DIGEST, ORIGIN, Opener()) is None
