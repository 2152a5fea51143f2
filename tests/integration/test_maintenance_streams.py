"""``cache ls/du/gc/verify/prune`` without the whole index in memory agree with the whole
snapshot, over SQLite and PostgreSQL, on a data set shaped like a lived-in cache.

The reference is what these commands computed before they were streamed: every
row and tag in memory and every stored manifest parsed from its file, fed to the
pure rules of ``store/inventory.py``. The data set comes from the big-cache
benchmark's builder (indexes of two platforms, one never pulled; layers shared by
many images; evicted layers; images pulled by digest only; unreferenced objects;
verified files without a row), written through ``Index.import_rows``: with the
manifests' references recorded (as the cache records them when it stores a
manifest), or without them (an index an earlier release wrote, which the first
command fills in from the files), or without them and read-only (the commands
then fall back to the whole snapshot).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.bigcache.dataset import build
from registry_cache.digest import Digest
from registry_cache.index.base import Index
from registry_cache.index.front import IndexFront
from registry_cache.index.postgres import PostgresIndex
from registry_cache.index.sqlite import SqliteIndex
from registry_cache.mediatypes import referenced_digests
from registry_cache.store.blobs import FileBlobStore
from registry_cache.store.inventory import (
    PruneRule,
    Refs,
    Snapshot,
    all_objects,
    images,
    iter_images,
    plan_gc,
    totals,
)
from registry_cache.store.layout import Layout
from registry_cache.store.maintenance import (
    collect_garbage,
    disk_usage,
    list_images,
    prune,
    scan_files,
    verify,
)

OBJECTS = 3000


async def whole_snapshot(index: Index, store: FileBlobStore) -> Snapshot:
    """Every row in memory, every stored manifest parsed from its file."""
    objects = {row.digest: row for row in await all_objects(index)}
    links: dict[str, set[tuple[str, str]]] = {}
    for upstream, repo in await index.repositories():
        for digest in await index.links_of(upstream, repo):
            links.setdefault(digest, set()).add((upstream, repo))
    refs = {}
    for digest, row in objects.items():
        if row.media_type is not None:
            body = await store.read(Digest.parse(digest))
            assert body is not None
            blobs, children = referenced_digests(body)
            refs[digest] = Refs(tuple(blobs), tuple(children))
    tags = await index.all_tags()
    return Snapshot(objects, tags, {d: frozenset(r) for d, r in links.items()}, refs)


@pytest.fixture
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "sqlite":
        path = tmp_path / "data" / "index.sqlite3"
        path.parent.mkdir()

        async def opener(readonly: bool = False) -> Index:
            return await SqliteIndex.open(path, readonly=readonly)

    else:
        database = request.getfixturevalue("pg_database")

        async def opener(readonly: bool = False) -> Index:
            return await PostgresIndex.open(database.url, replica="http://a:5000")

    yield request.param, opener, Layout(tmp_path / "data")


@pytest.mark.parametrize(
    ("backend", "mode"),
    [
        ("sqlite", "recorded"),
        ("sqlite", "backfilled"),
        ("sqlite", "read-only"),
        ("postgresql", "recorded"),
        ("postgresql", "backfilled"),  # a PostgreSQL index is never read-only
    ],
    indirect=["backend"],
)
async def test_streamed_commands_agree_with_the_whole_snapshot(backend: Any, mode: str) -> None:
    _, opener, layout = backend
    store = FileBlobStore(layout)
    index = await opener()
    try:
        summary, _, _ = await build(
            layout.root, index, OBJECTS, now=time.time() - 60, refs=mode == "recorded"
        )
        assert summary.unreferenced and summary.unindexed_files and summary.missing_blobs
        expected = await whole_snapshot(index, store)
        if mode == "read-only":
            await index.close()
            index = await opener(readonly=True)
        front = IndexFront(index)
        writable = mode != "read-only"
        unparsed = await index.unparsed_manifests(None, 1)
        assert bool(unparsed) == (mode != "recorded")

        listed = [i async for i in list_images(store, front, writable=writable)]
        assert listed == images(expected)
        assert any(i.tag is None for i in listed) and any(i.platforms == 2 for i in listed)
        if writable:  # many small pages, asked for ahead: the same images, in order
            assert [i async for i in iter_images(index, page=37, ahead=3)] == listed
            pages = iter_images(index, page=37)
            assert [await anext(pages) for _ in range(100)] == listed[:100]
            await pages.aclose()  # left early: the pages asked for ahead are dropped

        usage = await disk_usage(store, front, writable=writable)
        files = scan_files(layout)
        assert usage.totals == totals(expected)
        stray = [f.size for d, f in files.items() if d not in expected.objects]
        assert (usage.unindexed_files, usage.unindexed_bytes) == (len(stray), sum(stray))
        if not writable:
            return

        assert await index.unparsed_manifests(None, 1) == []  # filled in once, for good
        now = time.time()
        dry = await collect_garbage(store, front, grace=0, dry_run=True)
        plan = plan_gc(expected, files, now=now, grace=0)
        assert (dry.orphans, dry.adopted, dry.missing) == (plan.orphans, plan.adopt, plan.missing)
        assert dry.orphans and dry.adopted

        report = await verify(store, front)
        assert report.ok and report.checked == len(files)

        # prune, oldest first a page at a time: what the rule takes from the whole snapshot.
        by_age = sorted(expected.objects.values(), key=lambda r: (r.last_access, r.digest))
        for older_than, patterns in ((30 * 86400, ()), (None, ("team1*",)), (86400, ("*/app4*",))):
            rule = PruneRule(now, older_than, patterns, grace=0)
            dry_prune = await prune(
                store, front, older_than=older_than, patterns=patterns, grace=0, dry_run=True
            )
            taken = [
                r.digest
                for r in by_age
                if rule.takes_object(r, expected.links.get(r.digest, frozenset()))
            ]
            assert sorted(dry_prune.removed) == sorted(taken) and taken
            ages = [expected.objects[d].last_access for d in dry_prune.removed]
            assert ages == sorted(ages)  # least recently used first
            assert dry_prune.freed == sum(expected.objects[d].size for d in taken)
            assert set(dry_prune.tags) == {t for t in expected.tags if rule.takes_tag(t)}
    finally:
        await index.close()
