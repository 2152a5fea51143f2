"""Eviction: the pure planner, then the executor and Evictor on a real data directory."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import pytest

from registry_cache.config import Settings
from registry_cache.digest import Digest
from registry_cache.proxy.context import ProxyContext
from registry_cache.proxy.manifests import ManifestService
from registry_cache.store import evict
from registry_cache.store.blobs import FileBlobStore
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
from registry_cache.store.fill import FillManager
from registry_cache.store.index import Index
from registry_cache.store.layout import Layout
from tests.harness.fills import live_fill
from tests.harness.wait import until
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
    chosen = plan(entries, 15, now=NOW, grace=30)
    assert [v.digest for v in chosen.victims] == ["old", "mid"]
    assert (chosen.freed, chosen.shortfall) == (20, 0)
    assert plan(entries, 0, now=NOW).victims == ()


def test_plan_never_picks_pinned_or_recent_objects() -> None:
    entries = [e("busy", 10, 1000), e("old", 10, 900), e("hot", 100, 5)]
    chosen = plan(entries, 200, now=NOW, pinned={"busy"}, grace=30)
    assert [v.digest for v in chosen.victims] == ["old"]
    assert chosen.shortfall == 190


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


def _data(tmp_path: Path) -> tuple[Layout, FileBlobStore, Index]:
    layout = Layout(tmp_path / "data")
    layout.create()
    return layout, FileBlobStore(layout), Index(layout.index)


def _stored_access(layout: Layout, digest: Digest) -> float:
    """``last_access`` as written in the index file (a connection of its own)."""
    with closing(sqlite3.connect(layout.index)) as db:
        row = db.execute(
            "SELECT last_access FROM objects WHERE digest = ?", (str(digest),)
        ).fetchone()
    return float(row[0])


def _put(
    store: FileBlobStore, index: Index, data: bytes, *, age: float, media_type: str | None = None
) -> Digest:
    digest = Digest.of(data)
    store.put(digest, data)
    index.add_object(str(digest), len(data), media_type)
    with index.transaction() as db:  # add_object sets last_access = now; make it old
        db.execute(
            "UPDATE objects SET last_access = ? WHERE digest = ?", (time.time() - age, str(digest))
        )
    old = time.time() - age
    os.utime(store.path(digest), (old, old))
    return digest


def test_remove_objects_deletes_files_then_rows_and_the_tags_of_manifests(tmp_path: Path) -> None:
    layout, store, index = _data(tmp_path)
    blob = _put(store, index, b"layer" * 100, age=3600)
    manifest = _put(store, index, b'{"layers": []}', age=3600, media_type="application/x")
    index.set_tag("docker.io", "library/a", "1", str(manifest))
    index.link("docker.io", "library/a", [str(blob), str(manifest)])
    victims = [Entry(str(d), 1, 0) for d in (blob, manifest)]
    removed = remove_objects(layout, store, index, victims, now=time.time(), grace=30)
    assert len(removed) == 2
    assert store.stat(blob) is None and store.stat(manifest) is None
    assert index.get_object(str(blob)) is None and index.get_object(str(manifest)) is None
    assert index.get_tag("docker.io", "library/a", "1") is None  # resolved again next time
    assert index.is_linked("docker.io", "library/a", str(blob))  # what upstream allowed stays


def test_remove_objects_skips_fills_in_flight_and_fresh_files(tmp_path: Path) -> None:
    layout, store, index = _data(tmp_path)
    filling = _put(store, index, b"filling", age=3600)
    fresh = _put(store, index, b"fresh", age=0)
    os.utime(store.path(fresh))  # written just now
    layout.partial(filling).write_bytes(b"")
    assert str(filling) in in_flight(layout)
    victims = [Entry(str(d), 1, 0) for d in (filling, fresh)]
    assert remove_objects(layout, store, index, victims, now=time.time(), grace=30) == []
    assert store.stat(filling) is not None and store.stat(fresh) is not None


def test_evictor_brings_usage_under_the_low_watermark(tmp_path: Path) -> None:
    layout, store, index = _data(tmp_path)
    digests = [_put(store, index, bytes([i]) * 1000, age=3600 - i) for i in range(10)]
    evictor = Evictor(layout, store, Limits(max_size=8000), grace=30)
    try:
        report = evictor.run()
        assert report.ran and report.need == 10000 - 7200
        # Oldest first: 3 objects (3000 bytes) bring 10000 down to 7000 <= 7200.
        assert [e.digest for e in report.removed] == [str(d) for d in digests[:3]]
        assert index.total_size() == 7000
        assert not evictor.run().ran  # under the high watermark now: nothing to do
    finally:
        evictor.close()


def test_evictor_skips_while_another_process_holds_the_lock(tmp_path: Path) -> None:
    layout, store, index = _data(tmp_path)
    _put(store, index, b"x" * 1000, age=3600)
    evictor = Evictor(layout, store, Limits(max_size=100), grace=30)
    try:
        with evict_lock(layout) as held:
            assert held
            assert not evictor.run().ran
        assert evictor.run().ran
    finally:
        evictor.close()


def test_evictor_before_fill_counts_the_announced_size(tmp_path: Path) -> None:
    layout, store, index = _data(tmp_path)
    old = _put(store, index, b"o" * 600, age=3600)
    evictor = Evictor(layout, store, Limits(max_size=1000), grace=30)
    incoming = Digest.of(b"incoming")
    try:
        evictor.before_fill(incoming, 500)  # no note yet: 600 stored, fine
        assert store.stat(old) is not None
        with live_fill(layout, incoming, 500):
            evictor.before_fill(incoming, 500)  # 600 + 500 > 950: make room first
        assert store.stat(old) is None
    finally:
        evictor.close()


def test_evictor_with_max_age_only(tmp_path: Path) -> None:
    layout, store, index = _data(tmp_path)
    stale = _put(store, index, b"stale", age=40 * 86400)
    recent = _put(store, index, b"recent", age=86400)
    evictor = Evictor(layout, store, Limits(max_age=30 * 86400), grace=30)
    try:
        assert [e.digest for e in evictor.run().removed] == [str(stale)]
        assert store.stat(recent) is not None
    finally:
        evictor.close()


def test_evictions_are_counted_by_reason(tmp_path: Path) -> None:
    layout, store, index = _data(tmp_path)
    _put(store, index, b"s" * 50, age=40 * 86400)  # past max_age
    _put(store, index, b"o" * 700, age=3600)  # within it, but over the size cap
    _put(store, index, b"n" * 300, age=60)
    before = {r: evicted(r) for r in ("age", "space")}
    evictor = Evictor(layout, store, Limits(max_size=1000, max_age=30 * 86400), grace=30)
    try:
        assert evictor.run().freed == 750
    finally:
        evictor.close()
    assert evicted("age") == before["age"] + 1
    assert evicted("space") == before["space"] + 1
    assert evicted("age", "bytes") - evicted("space", "bytes") < 0  # 50 vs 700 bytes


def evicted(reason: str, what: str = "objects") -> float:
    name = "evictions_total" if what == "objects" else "evicted_bytes_total"
    return sample(f"registry_cache_{name}", reason=reason)


# ------------------------------------------------------------ manifests


def test_manifest_whose_file_was_evicted_is_not_claimed_local(tmp_path: Path) -> None:
    """``_local`` must answer None (→ fetched again by digest) once the file is gone."""
    layout, store, index = _data(tmp_path)
    settings = Settings(data_dir=layout.root, default_upstream=None)
    body = b'{"schemaVersion": 2, "layers": []}'
    digest = _put(
        store, index, body, age=3600, media_type="application/vnd.oci.image.manifest.v1+json"
    )
    with ThreadPoolExecutor(1) as pool:
        ctx = ProxyContext(settings, index, store, FillManager(layout, store), {}, pool)
        service = ManifestService(ctx)
        assert service._local(str(digest)) is not None
        ctx.memo.drop(str(digest))  # what eviction in this worker does
        remove_objects(
            layout, store, index, [Entry(str(digest), len(body), 0)], now=time.time(), grace=30
        )
        assert service._local(str(digest)) is None
        # Row present but file gone (a crash mid-eviction): still not claimed.
        index.add_object(str(digest), len(body), "application/vnd.oci.image.manifest.v1+json")
        assert service._local(str(digest)) is None


@pytest.mark.parametrize("wait", [0.0, 0.2])
def test_evict_lock_is_exclusive_across_descriptors(tmp_path: Path, wait: float) -> None:
    layout = Layout(tmp_path)
    with evict_lock(layout) as first:
        assert first
        started = time.monotonic()
        with evict_lock(layout, wait) as second:
            assert not second
        assert time.monotonic() - started >= wait
    with evict_lock(layout) as again:
        assert again


def test_partial_digest_names_round_trip(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.create()
    digest = Digest("sha256", hashlib.sha256(b"x").hexdigest())
    layout.size_note(digest).write_text("1")
    assert in_flight(layout) == {str(digest)}


# ------------------------------------------------------------- worker task


async def test_eviction_task_wires_hooks_frees_after_disk_full_and_drops_memo(
    tmp_path: Path,
) -> None:
    from registry_cache.errors import InsufficientStorage
    from registry_cache.proxy.eviction import EvictionTask
    from registry_cache.store.fill import Fill

    layout, store, index = _data(tmp_path)
    manifest = _put(store, index, b'{"layers": []}', age=3600, media_type="application/x")
    blob = _put(store, index, b"b" * 400, age=1800)
    settings = Settings(data_dir=layout.root, default_upstream=None, max_size=10_000)
    seen: list[str] = []
    with ThreadPoolExecutor(2) as pool:
        ctx = ProxyContext(settings, index, store, FillManager(layout, store), {}, pool)
        ctx.fills.on_done = lambda fill: seen.append(str(fill.digest))
        ctx.memo.put(str(manifest), b'{"layers": []}', "application/x")
        task = EvictionTask.start(ctx)
        assert task is not None and ctx.fills.before_fill == task.evictor.before_fill
        try:
            first = await task.run_once()
            assert first is not None and not first.removed  # far under the cap
            failed = Fill.__new__(Fill)  # only what the callback reads
            failed.digest, failed.size = Digest.of(b"big"), 10
            failed.error, failed.done = InsufficientStorage("disk full"), False
            ctx.fills.on_done(failed)
            assert seen == [str(failed.digest)]  # the proxy's own callback still runs
            report = await task.run_once()
            assert report is not None and [e.digest for e in report.removed] == [str(manifest)]
            await until(lambda: ctx.memo.get(str(manifest)) is None)  # cleaned on the loop
            assert store.stat(blob) is not None
        finally:
            await task.stop()
        assert ctx.fills.before_fill is None


def test_no_eviction_task_for_an_unbounded_cache(tmp_path: Path) -> None:
    from registry_cache.proxy.eviction import EvictionTask

    layout, store, index = _data(tmp_path)
    with ThreadPoolExecutor(1) as pool:
        ctx = ProxyContext(
            Settings(data_dir=layout.root, default_upstream=None),
            index,
            store,
            FillManager(layout, store),
            {},
            pool,
        )
        assert EvictionTask.start(ctx) is None


def test_disk_shortfall_compares_with_free_space(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    st = os.statvfs(tmp_path)
    assert disk_shortfall(layout, 0, headroom=0) == 0
    assert disk_shortfall(layout, st.f_bavail * st.f_frsize + (1 << 30), headroom=0) > 0


def test_before_fill_frees_what_the_disk_lacks_even_under_the_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout, store, index = _data(tmp_path)
    oldest = _put(store, index, b"1" * 300, age=7200)
    older = _put(store, index, b"2" * 300, age=3600)
    monkeypatch.setattr(
        evict, "disk_shortfall", lambda layout, size, **_: 250 if size == 999 else 0
    )
    evictor = Evictor(layout, store, Limits(max_size=1 << 30), grace=30)
    try:
        evictor.before_fill(Digest.of(b"small"), 10)
        assert store.stat(oldest) is not None
        evictor.before_fill(Digest.of(b"big"), 999)
        assert store.stat(oldest) is None and store.stat(older) is not None
    finally:
        evictor.close()


async def test_before_fill_counts_this_workers_unflushed_hits(tmp_path: Path) -> None:
    """A hit is batched in memory; eviction from a fill thread must still see it."""
    from registry_cache.proxy.eviction import EvictionTask

    layout, store, index = _data(tmp_path)
    hit = _put(store, index, b"h" * 400, age=7200)
    cold = _put(store, index, b"c" * 400, age=3600)
    settings = Settings(data_dir=layout.root, default_upstream=None, max_size=1000)
    with ThreadPoolExecutor(2) as pool:
        ctx = ProxyContext(settings, index, store, FillManager(layout, store), {}, pool)
        task = EvictionTask.start(ctx)
        assert task is not None and ctx.fills.before_fill is not None
        try:
            # (The start-up pass may still run: 800 of 1000 bytes, nothing to evict,
            # and it flushes nothing; before_fill waits for its lock.)
            index.touch(str(hit))  # a hit just now, not yet written to the index
            # Not yet in the file, as another connection sees it: only before_fill's
            # own flush can save the hit (else this test would pass without one).
            assert _stored_access(layout, hit) < time.time() - 3600
            incoming = Digest.of(b"incoming")
            with live_fill(layout, incoming, 300):
                await asyncio.to_thread(ctx.fills.before_fill, incoming, 300)
            assert store.stat(hit) is not None and store.stat(cold) is None
        finally:
            await task.stop()
