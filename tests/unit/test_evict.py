"""Eviction: the pure planner, then the executor and Evictor on a real data directory."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import pytest

from registry_cache.config import Settings
from registry_cache.digest import Digest
from registry_cache.index.front import IndexFront
from registry_cache.index.sqlite import SqliteIndex
from registry_cache.proxy.context import ProxyContext
from registry_cache.proxy.eviction import EvictionTask
from registry_cache.proxy.manifests import ManifestService
from registry_cache.proxy.memo import ManifestMemo
from registry_cache.store import evict
from registry_cache.store.blobs import FileBlobStore
from registry_cache.store.body import FileBody
from registry_cache.store.evict import (
    Entry,
    Evictor,
    Limits,
    Usage,
    bytes_over,
    disk_shortfall,
    evict_lock,
    in_flight,
    need_bytes,
    plan,
    remove_objects,
)
from registry_cache.store.fill import LocalFills
from registry_cache.store.layout import Layout
from tests.harness.fills import live_fill
from tests.unit.test_metrics import sample

NOW = 1_000_000.0


def e(name: str, size: int, age: float) -> Entry:
    return Entry(name, size, NOW - age)


# ---------------------------------------------------------------- planning


def test_bytes_over_uses_high_and_low_watermarks() -> None:
    assert bytes_over(950, 1000) == 0  # at the high watermark: nothing yet
    assert bytes_over(951, 1000) == 51  # above it: down to the low one (900)
    assert bytes_over(2000, 1000) == 1100
    assert bytes_over(10, 1000, high=0.5, low=0.1) == 0


def test_configured_watermarks() -> None:
    settings = Settings(
        default_upstream=None, max_size=1000, evict_at_percent=80, evict_to_percent=50
    )
    limits = Limits.from_settings(settings)
    assert need_bytes(Usage(stored=800, incoming=0, incoming_unwritten=0), limits) == 0
    assert need_bytes(Usage(stored=801, incoming=0, incoming_unwritten=0), limits) == 301
    default = Limits.from_settings(Settings(default_upstream=None, max_size=1000))
    assert need_bytes(Usage(stored=951, incoming=0, incoming_unwritten=0), default) == 51


def test_need_bytes_takes_the_worst_limit_and_counts_fills_in_flight() -> None:
    usage = Usage(stored=900, incoming=100, incoming_unwritten=60, disk_used=800, disk_size=1000)
    assert need_bytes(usage, Limits()) == 0
    assert need_bytes(usage, Limits(max_size=1000)) == 100  # 1000 > 950 → to 900
    # disk: 800 + 60 unwritten over 50% of 1000 → down to 45% = 450
    assert need_bytes(usage, Limits(max_disk_percent=50)) == 410
    assert need_bytes(usage, Limits(max_size=1000, max_disk_percent=50)) == 410
    assert need_bytes(Usage(10, 0, 0), Limits(max_disk_percent=50)) == 0  # no statvfs data


def test_plan_takes_least_recently_used_first_until_enough() -> None:
    entries = [e("new", 10, 100), e("old", 10, 1000), e("mid", 10, 500)]
    chosen = plan(entries, 15, now=NOW)
    assert [v.digest for v in chosen.victims] == ["old", "mid"]
    assert (chosen.freed, chosen.shortfall) == (20, 0)
    assert plan(entries, 0, now=NOW).victims == ()


def test_plan_never_picks_pinned_objects_and_takes_recent_ones_last() -> None:
    entries = [e("busy", 10, 1000), e("hot", 100, 5), e("old", 10, 900)]
    chosen = plan(entries, 200, now=NOW, pinned={"busy"})
    assert [v.digest for v in chosen.victims] == ["old", "hot"]  # the cap is a bound
    assert chosen.shortfall == 90
    assert [v.digest for v in plan(entries, 10, now=NOW, pinned={"busy"}).victims] == ["old"]


def test_plan_with_max_age_takes_every_expired_object_even_without_need() -> None:
    entries = [e("a", 10, 100 * 86400), e("b", 10, 40 * 86400), e("c", 10, 86400)]
    chosen = plan(entries, 0, now=NOW, max_age=30 * 86400)
    assert [v.digest for v in chosen.victims] == ["a", "b"]
    chosen = plan(entries, 25, now=NOW, max_age=30 * 86400)
    assert [v.digest for v in chosen.victims] == ["a", "b", "c"]


def test_plan_ties_break_by_digest_for_a_stable_order() -> None:
    entries = [Entry("b", 1, NOW - 100), Entry("a", 1, NOW - 100)]
    assert [v.digest for v in plan(entries, 1, now=NOW).victims] == ["a"]


# ------------------------------------------------------------------ executor

Data = tuple[Layout, FileBlobStore, IndexFront]


def _stored_access(layout: Layout, digest: Digest) -> float:
    """``last_access`` as written in the index file (a connection of its own)."""
    with closing(sqlite3.connect(layout.index)) as db:
        row = db.execute(
            "SELECT last_access FROM objects WHERE digest = ?", (str(digest),)
        ).fetchone()
    return float(row[0])


@pytest.fixture
async def data(tmp_path: Path) -> AsyncIterator[Data]:
    layout = Layout(tmp_path / "data")
    layout.create()
    index = IndexFront(await SqliteIndex.open(layout.index))
    yield layout, FileBlobStore(layout), index
    await index.index.close()


async def _put(data: Data, body: bytes, *, age: float, media_type: str | None = None) -> Digest:
    layout, store, index = data
    digest = Digest.of(body)
    await store.put(digest, body)
    await index.add_object(str(digest), len(body), media_type)
    old = time.time() - age
    with sqlite3.connect(layout.index) as db:  # add_object sets last_access = now; make it old
        db.execute("UPDATE objects SET last_access = ? WHERE digest = ?", (old, str(digest)))
    os.utime(layout.blob(digest), (old, old))
    return digest


async def test_remove_objects_deletes_files_then_rows_and_the_tags_of_manifests(
    data: Data,
) -> None:
    _, store, index = data
    blob = await _put(data, b"layer" * 100, age=3600)
    manifest = await _put(data, b'{"layers": []}', age=3600, media_type="application/x")
    await index.set_tag("docker.io", "library/a", "1", str(manifest))
    await index.link("docker.io", "library/a", [str(blob), str(manifest)])
    victims = [Entry(str(d), 1, 0) for d in (blob, manifest)]
    removed = await remove_objects(store, index, victims)
    assert len(removed) == 2
    assert await store.stat(blob) is None and await store.stat(manifest) is None
    assert await index.get_object(str(blob)) is None
    assert await index.get_object(str(manifest)) is None
    raw = index.index
    assert await raw.get_tag("docker.io", "library/a", "1") is None  # resolved again next time
    assert await raw.is_linked("docker.io", "library/a", str(blob))  # what upstream allowed stays


async def test_remove_objects_skips_fills_in_flight_and_blobs_being_served(data: Data) -> None:
    layout, store, index = data
    filling = await _put(data, b"filling", age=3600)
    served = await _put(data, b"served", age=3600)
    layout.partial(filling).write_bytes(b"")
    assert str(filling) in in_flight(layout)
    body = await store.open(served)
    assert isinstance(body, FileBody)
    victims = [Entry(str(d), 1, 0) for d in (filling, served)]
    try:
        assert await remove_objects(store, index, victims) == []
        assert await store.stat(filling) is not None and await store.stat(served) is not None
    finally:
        await body.close()
    assert [e.digest for e in await remove_objects(store, index, victims[1:])] == [str(served)]


def test_a_shared_lock_held_in_another_process_pins_a_blob(tmp_path: Path) -> None:
    """The being-served pin holds across processes: flock locks belong to open files."""
    layout = Layout(tmp_path)
    layout.create()
    digest = Digest.of(b"shared")
    path = layout.blob(digest)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"shared")
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # another worker serving the blob
        fd = os.open(path, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_SH)
        os.write(writer, b"x")
        time.sleep(5)
        os._exit(0)
    try:
        assert os.read(reader, 1) == b"x"
        assert evict.unlink_unless_busy(layout, digest) is None and path.exists()
    finally:
        os.kill(child, 9)
        os.waitpid(child, 0)
    assert evict.unlink_unless_busy(layout, digest) == 6 and not path.exists()


async def test_evictor_brings_usage_under_the_low_watermark(data: Data) -> None:
    _, store, index = data
    digests = [await _put(data, bytes([i]) * 1000, age=3600 - i) for i in range(10)]
    evictor = Evictor(store, index, Limits(max_size=8000))
    report = await evictor.run()
    assert report.ran and report.need == 10000 - 7200
    # Oldest first: 3 objects (3000 bytes) bring 10000 down to 7000 <= 7200.
    assert [e.digest for e in report.removed] == [str(d) for d in digests[:3]]
    assert await index.index.total_size() == 7000
    assert not (await evictor.run()).ran  # under the high watermark now: nothing to do


async def test_evictor_takes_recently_used_objects_when_nothing_older_is_left(
    data: Data,
) -> None:
    """The cap is a bound: objects used seconds ago go too, least recently used first."""
    _, store, index = data
    first = await _put(data, b"1" * 1000, age=3)
    second = await _put(data, b"2" * 1000, age=1)
    evictor = Evictor(store, index, Limits(max_size=1500))
    report = await evictor.run()
    assert [e.digest for e in report.removed] == [str(first)] and report.shortfall == 0
    assert await store.stat(second) is not None


async def test_evictor_walks_the_index_page_by_page(
    data: Data, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, store, index = data
    monkeypatch.setattr(evict, "PAGE", 3)
    digests = [await _put(data, bytes([i]) * 100, age=1000 - i) for i in range(10)]
    pages: list[int] = []
    real = index.index.objects_page

    async def counting(after: tuple[float, str] | None, limit: int) -> list[object]:
        rows = await real(after, limit)
        pages.append(len(rows))
        return rows  # type: ignore[return-value]

    monkeypatch.setattr(index.index, "objects_page", counting)
    report = await Evictor(store, index, Limits(max_size=500)).run()
    # 1000 bytes down to 450: the 6 oldest, over two pages of 3, and no more pages.
    assert [e.digest for e in report.removed] == [str(d) for d in digests[:6]]
    assert pages == [3, 3] and max(pages) <= 3


async def test_evictor_skips_while_another_process_holds_the_lock(data: Data) -> None:
    layout, store, index = data
    await _put(data, b"x" * 1000, age=3600)
    evictor = Evictor(store, index, Limits(max_size=100))
    async with evict_lock(layout) as held:
        assert held
        assert not (await evictor.run()).ran
    assert (await evictor.run()).ran


async def test_evictor_make_room_counts_the_announced_size(data: Data) -> None:
    layout, store, index = data
    old = await _put(data, b"o" * 600, age=3600)
    evictor = Evictor(store, index, Limits(max_size=1000))
    incoming = Digest.of(b"incoming")
    await evictor.make_room(incoming, 500)  # no note yet: 600 stored, fine
    assert await store.stat(old) is not None
    with live_fill(layout, incoming, 500):
        await evictor.make_room(incoming, 500)  # 600 + 500 > 950: make room first
    assert await store.stat(old) is None


async def test_a_fill_committing_while_usage_is_measured_counts_once(
    data: Data, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race of a CI failure: another worker's fill commits (note gone, row added)
    during a measurement. Counted twice, the cap looked exceeded by the blob's size and
    the objects just pulled were evicted, the fill's own blob with them."""
    layout, store, index = data
    await _put(data, b"o" * 600, age=3600)
    body = b"n" * 500
    digest = Digest.of(body)
    fill = contextlib.ExitStack()
    fill.enter_context(live_fill(layout, digest, len(body)))
    real = index.index.total_size

    async def commits_meanwhile() -> int:
        fill.close()  # the filler's lock goes with its descriptor
        layout.size_note(digest).unlink()  # removed before the commit (store/fill.py)
        layout.partial(digest).unlink()
        await store.put(digest, body)
        await index.add_object(str(digest), len(body))
        return await real()

    monkeypatch.setattr(index.index, "total_size", commits_meanwhile)
    try:
        usage = await evict.measure(layout, index)
    finally:
        fill.close()
    assert usage.stored + usage.incoming == 1100
    assert need_bytes(usage, Limits(max_size=1200)) == 0  # 1100: under 95% of it


async def test_evictor_with_max_age_only(data: Data) -> None:
    _, store, index = data
    stale = await _put(data, b"stale", age=40 * 86400)
    recent = await _put(data, b"recent", age=86400)
    evictor = Evictor(store, index, Limits(max_age=30 * 86400))
    assert [e.digest for e in (await evictor.run()).removed] == [str(stale)]
    assert await store.stat(recent) is not None


async def test_evictions_are_counted_by_reason(data: Data) -> None:
    _, store, index = data
    await _put(data, b"s" * 50, age=40 * 86400)  # past max_age
    await _put(data, b"o" * 700, age=3600)  # within it, but over the size cap
    await _put(data, b"n" * 300, age=60)
    before = {r: evicted(r) for r in ("age", "space")}
    evictor = Evictor(store, index, Limits(max_size=1000, max_age=30 * 86400))
    assert (await evictor.run()).freed == 750
    assert evicted("age") == before["age"] + 1
    assert evicted("space") == before["space"] + 1
    assert evicted("age", "bytes") - evicted("space", "bytes") < 0  # 50 vs 700 bytes


def evicted(reason: str, what: str = "objects") -> float:
    name = "evictions_total" if what == "objects" else "evicted_bytes_total"
    return sample(f"registry_cache_{name}", reason=reason)


# ------------------------------------------------------------ manifests


def _context(data: Data, settings: Settings, pool: ThreadPoolExecutor) -> ProxyContext:
    _, store, index = data
    fills = LocalFills(store, index)
    return ProxyContext(settings, index, store, fills, {}, pool, ManifestMemo())


async def test_manifest_whose_file_was_evicted_is_not_claimed_local(data: Data) -> None:
    """``_local`` must answer None (→ fetched again by digest) once the file is gone."""
    layout, store, index = data
    settings = Settings(data_dir=layout.root, default_upstream=None)
    body = b'{"schemaVersion": 2, "layers": []}'
    media = "application/vnd.oci.image.manifest.v1+json"
    digest = await _put(data, body, age=3600, media_type=media)
    with ThreadPoolExecutor(1) as pool:
        ctx = _context(data, settings, pool)
        service = ManifestService(ctx)
        assert await service._local(str(digest)) is not None
        ctx.memo.drop(str(digest))  # what eviction in this worker does
        await remove_objects(store, index, [Entry(str(digest), len(body), 0)])
        assert await service._local(str(digest)) is None
        # Row present but file gone (a crash mid-eviction): still not claimed.
        await index.add_object(str(digest), len(body), media)
        assert await service._local(str(digest)) is None


@pytest.mark.parametrize("wait", [0.0, 0.2])
async def test_evict_lock_is_exclusive_across_descriptors(tmp_path: Path, wait: float) -> None:
    layout = Layout(tmp_path)
    async with evict_lock(layout) as first:
        assert first
        started = time.monotonic()
        async with evict_lock(layout, wait) as second:
            assert not second
        assert time.monotonic() - started >= wait
    async with evict_lock(layout) as again:
        assert again


def test_partial_digest_names_round_trip(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.create()
    digest = Digest("sha256", hashlib.sha256(b"x").hexdigest())
    layout.size_note(digest).write_text("1")
    assert in_flight(layout) == {str(digest)}


# ------------------------------------------------------------- worker task


async def test_eviction_task_frees_after_a_full_disk_and_drops_the_memo(data: Data) -> None:
    from registry_cache.errors import InsufficientStorage
    from registry_cache.store.fill import Fill

    _, store, index = data
    manifest = await _put(data, b'{"layers": []}', age=3600, media_type="application/x")
    blob = await _put(data, b"b" * 400, age=1800)
    memo = ManifestMemo()
    memo.put(str(manifest), b'{"layers": []}', "application/x")
    task = EvictionTask(Evictor(store, index, Limits(max_size=10_000)), memo)
    first = await task.run_once()
    assert first is not None and not first.removed  # far under the cap
    failed = Fill.__new__(Fill)  # only what the listener reads
    failed.digest, failed.size = Digest.of(b"big"), 10
    failed.error, failed.done = InsufficientStorage("disk full"), False
    task.after_fill(failed)
    report = await task.run_once()
    assert report is not None and [e.digest for e in report.removed] == [str(manifest)]
    assert memo.get(str(manifest)) is None and await store.stat(blob) is not None


def test_disk_shortfall_compares_with_free_space(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    st = os.statvfs(tmp_path)
    assert disk_shortfall(layout, 0, headroom=0) == 0
    assert disk_shortfall(layout, st.f_bavail * st.f_frsize + (1 << 30), headroom=0) > 0


async def test_make_room_frees_what_the_disk_lacks_even_under_the_cap(
    data: Data, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, store, index = data
    oldest = await _put(data, b"1" * 300, age=7200)
    older = await _put(data, b"2" * 300, age=3600)
    monkeypatch.setattr(
        evict, "disk_shortfall", lambda layout, size, **_: 250 if size == 999 else 0
    )
    evictor = Evictor(store, index, Limits(max_size=1 << 30))
    await evictor.make_room(Digest.of(b"small"), 10)
    assert await store.stat(oldest) is not None
    await evictor.make_room(Digest.of(b"big"), 999)
    assert await store.stat(oldest) is None and await store.stat(older) is not None


async def test_before_fill_from_a_fill_thread_counts_this_workers_unflushed_hits(
    data: Data,
) -> None:
    """A hit is batched in memory; eviction for a fill thread must still see it."""
    layout, store, index = data
    hit = await _put(data, b"h" * 400, age=7200)
    cold = await _put(data, b"c" * 400, age=3600)
    task = EvictionTask(Evictor(store, index, Limits(max_size=1000)), ManifestMemo())
    task.start()
    try:
        assert await task.run_once() is not None  # 800 of 1000 bytes: nothing to do
        index.touch(str(hit))  # a hit just now, not yet written to the index
        # Not yet in the file, as another connection sees it: only the eviction's
        # own flush can save the hit (else this test would pass without one).
        assert _stored_access(layout, hit) < time.time() - 3600
        incoming = Digest.of(b"incoming")
        with live_fill(layout, incoming, 300):
            await asyncio.to_thread(task.before_fill, incoming, 300)
        assert await store.stat(hit) is not None and await store.stat(cold) is None
    finally:
        await task.stop()
