"""The ``Index`` contract: one suite, run over every implementation.

SQLite (the data directory's file) and PostgreSQL (a real server started by the
suite, a fresh database per test). In the manner of distribution's storage-driver
test suites: whatever the proxy, eviction and maintenance rely on is asserted
here, so a new implementation is done when this file passes over it.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from registry_cache.index.base import (
    NO_IMAGE,
    ImageStats,
    Index,
    IndexUnavailable,
    ManifestRefs,
    ObjectRow,
    RangeUsage,
    TagEntry,
    TagImport,
    TagRow,
    UntaggedManifest,
    UpstreamUsage,
    UsageSummary,
)
from registry_cache.index.postgres import PostgresIndex
from registry_cache.index.sqlite import SqliteIndex
from registry_cache.store.inventory import Snapshot, image

D = [f"sha256:{i:064x}" for i in range(20)]
BUCKET = "s3://bucket/prefix"  # the shared tier's name in a PostgreSQL index


@pytest.fixture(params=["sqlite", "postgresql"])
async def index(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Index]:
    made: Index
    if request.param == "sqlite":
        made = await SqliteIndex.open(tmp_path / "index.sqlite3")
    else:
        database = request.getfixturevalue("pg_database")
        made = await PostgresIndex.open(database.url, shared=BUCKET)
    yield made
    await made.close()


async def reopen(index: Index, tmp_path: Path) -> Index:
    """A second handle on the same index (another worker or replica)."""
    if isinstance(index, SqliteIndex):
        return await SqliteIndex.open(index.path)
    assert isinstance(index, PostgresIndex)
    return await PostgresIndex.open(index.url, shared=BUCKET)


# ------------------------------------------------------------------------ tags


async def test_tags_set_get_update_delete(index: Index) -> None:
    assert await index.get_tag("docker.io", "library/a", "1") is None
    await index.set_tag("docker.io", "library/a", "1", D[0], 100.0)
    row = await index.get_tag("docker.io", "library/a", "1")
    assert row is not None and (row.digest, row.checked_at, row.last_pulled) == (D[0], 100.0, 100.0)
    await index.set_tag("docker.io", "library/a", "1", D[1], 200.0)
    row = await index.get_tag("docker.io", "library/a", "1")
    assert row is not None and (row.digest, row.checked_at) == (D[1], 200.0)
    await index.delete_tag("docker.io", "library/a", "1")
    assert await index.get_tag("docker.io", "library/a", "1") is None


async def test_set_tag_never_moves_last_pulled_back(index: Index) -> None:
    await index.set_tag("u", "r", "t", D[0], 100.0)
    await index.record_access({}, {("u", "r", "t"): 500.0})
    await index.set_tag("u", "r", "t", D[0], 300.0)  # revalidated later, pulled later still
    row = await index.get_tag("u", "r", "t")
    assert row is not None and row.checked_at == 300.0 and row.last_pulled == 500.0


async def test_tags_are_listed_sorted_bytewise(index: Index) -> None:
    for tag in ("b", "a", "B", "10", "9"):
        await index.set_tag("u", "r", tag, D[0], 1.0)
    await index.set_tag("u", "other", "z", D[0], 1.0)
    await index.set_tag("v", "r", "y", D[0], 1.0)
    assert await index.list_tags("u", "r") == ["10", "9", "B", "a", "b"]
    entries = await index.all_tags()
    assert [(t.upstream, t.repo, t.tag) for t in entries] == [
        ("u", "other", "z"),
        ("u", "r", "10"),
        ("u", "r", "9"),
        ("u", "r", "B"),
        ("u", "r", "a"),
        ("u", "r", "b"),
        ("v", "r", "y"),
    ]


async def test_prune_tags_spares_tags_pulled_since(index: Index) -> None:
    await index.set_tag("u", "r", "old", D[0], 100.0)
    await index.set_tag("u", "r", "pulled", D[1], 100.0)
    before = await index.generation()
    await index.record_access({}, {("u", "r", "pulled"): 900.0})
    removed = await index.prune_tags(
        [TagEntry("u", "r", "old", D[0], 100.0), TagEntry("u", "r", "pulled", D[1], 100.0)]
    )
    assert removed == 1
    assert await index.list_tags("u", "r") == ["pulled"]
    assert await index.generation() > before
    assert await index.prune_tags([]) == 0


# --------------------------------------------------------------------- objects


async def test_objects_add_get_and_keep_a_known_media_type(index: Index) -> None:
    await index.add_object(D[0], 10, "application/x", 100.0)
    await index.add_object(D[0], 10, None, 50.0)  # re-added as a blob, earlier clock
    row = await index.get_object(D[0])
    assert row == ObjectRow(D[0], 10, "application/x", 100.0, 100.0)
    assert await index.get_object(D[1]) is None
    await index.add_object(D[1], 1 << 40, None, 200.0)  # sizes beyond 32 bits
    assert await index.total_size() == 10 + (1 << 40)
    assert await index.count_objects() == 2


async def test_adopt_keeps_existing_rows(index: Index) -> None:
    await index.add_object(D[0], 10, None, 100.0)
    await index.adopt_objects(
        [ObjectRow(D[0], 99, None, 1.0, 1.0), ObjectRow(D[1], 5, "application/x", 2.0, 3.0)]
    )
    assert (await index.get_object(D[0])) == ObjectRow(D[0], 10, None, 100.0, 100.0)
    assert (await index.get_object(D[1])) == ObjectRow(D[1], 5, "application/x", 2.0, 3.0)
    await index.adopt_objects([])


async def test_objects_page_walks_in_lru_order_by_keyset(index: Index) -> None:
    times = [5.0, 1.0, 3.0, 3.0, 2.0, 4.0, 1.0]
    for digest, when in zip(D, times, strict=False):
        await index.add_object(digest, 1, None, when)
    expected = sorted(zip(times, D, strict=False))
    seen: list[tuple[float, str]] = []
    cursor = None
    while page := await index.objects_page(cursor, 3):
        assert len(page) <= 3
        seen += [(r.last_access, r.digest) for r in page]
        cursor = (page[-1].last_access, page[-1].digest)
    assert seen == expected
    # Rows deleted behind the cursor do not disturb the walk.
    first = await index.objects_page(None, 2)
    await index.forget([first[0].digest])
    rest = await index.objects_page((first[1].last_access, first[1].digest), 100)
    assert [(r.last_access, r.digest) for r in rest] == expected[2:]


async def test_record_access_only_moves_forward(index: Index) -> None:
    await index.add_object(D[0], 1, None, 100.0)
    await index.set_tag("u", "r", "t", D[0], 100.0)
    await index.record_access({D[0]: 300.0, D[5]: 1.0}, {("u", "r", "t"): 400.0})
    await index.record_access({D[0]: 200.0}, {("u", "r", "t"): 150.0})
    row = await index.get_object(D[0])
    tag = await index.get_tag("u", "r", "t")
    assert row is not None and row.last_access == 300.0
    assert tag is not None and tag.last_pulled == 400.0
    assert await index.get_object(D[5]) is None  # touching never creates rows
    await index.record_access({}, {})


async def test_forget_drops_objects_and_tags_naming_them_and_bumps_generation(
    index: Index,
) -> None:
    await index.add_object(D[0], 1, "application/x", 1.0)
    await index.add_object(D[1], 1, None, 1.0)
    await index.set_tag("u", "r", "t", D[0], 1.0)
    await index.set_tag("u", "r", "keep", D[2], 1.0)
    await index.link("u", "r", [D[0], D[1]])
    before = await index.generation()
    await index.forget([D[0], D[1]])
    assert await index.get_object(D[0]) is None and await index.get_object(D[1]) is None
    assert await index.list_tags("u", "r") == ["keep"]
    assert await index.is_linked("u", "r", D[0])  # links record what upstream allowed
    assert await index.generation() > before
    await index.forget([])


async def test_forget_in_batches_bigger_than_one_transaction(index: Index) -> None:
    digests = [f"sha256:{i:064x}" for i in range(1234)]
    for digest in digests:
        await index.add_object(digest, 1, None, 1.0)
    await index.forget(digests[:1200])
    assert await index.count_objects() == 34


# ------------------------------------------------------------ the shared tier


async def test_what_the_bucket_holds_outlives_its_local_copy_with_its_tags(index: Index) -> None:
    await index.add_object(D[0], 10, "application/x", 1.0)
    await index.add_object(D[1], 5, None, 1.0)
    await index.set_tag("u", "r", "t", D[0], 1.0)
    await index.add_shared(D[0], 10, 2.0)
    assert await index.is_shared(D[0]) and not await index.is_shared(D[1])
    before = await index.generation()
    await index.forget([D[0], D[1]])  # the local tier evicted both
    # The local tier's view: empty.
    assert (await index.total_size(), await index.count_objects()) == (0, 0)
    assert await index.objects_page(None, 10) == []
    # The catalog: the bucket's object stays (media type and tag too), the other went.
    row = await index.get_object(D[0])
    assert row is not None and (row.size, row.media_type) == (10, "application/x")
    assert await index.get_object(D[1]) is None
    assert await index.list_tags("u", "r") == ["t"]
    assert await index.shared_totals() == (1, 10)
    assert await index.generation() > before
    # Filled again locally: both tiers hold it; then the bucket drops it: the row stays.
    await index.add_object(D[0], 10, None, 3.0)
    assert await index.count_objects() == 1
    await index.forget_shared([D[0]])
    assert await index.shared_totals() == (0, 0) and not await index.is_shared(D[0])
    assert await index.get_object(D[0]) is not None and await index.list_tags("u", "r") == ["t"]
    # And once neither holds it, row and tag go.
    await index.add_shared(D[0], 10, 4.0)
    await index.forget([D[0]])
    generation = await index.generation()
    await index.forget_shared([D[0]])
    assert await index.get_object(D[0]) is None and await index.list_tags("u", "r") == []
    assert await index.generation() > generation
    await index.forget_shared([])


async def test_content_found_in_the_bucket_joins_the_catalog_not_the_local_tier(
    index: Index,
) -> None:
    await index.add_shared(D[3], 7, 5.0)
    row = await index.get_object(D[3])
    assert row is not None and (row.size, row.media_type, row.last_access) == (7, None, 5.0)
    assert await index.count_objects() == 0 and await index.objects_page(None, 5) == []
    # Found again (gc re-adopting it, or a second upload): still one row, the size kept fresh.
    await index.add_shared(D[3], 7, 6.0)
    assert await index.shared_totals() == (1, 7)
    # A verified file of it found in the data directory (cache gc) makes it local again.
    await index.adopt_objects([ObjectRow(D[3], 7, None, 1.0, 1.0)])
    assert [r.digest for r in await index.objects_page(None, 5)] == [D[3]]


async def test_shared_page_walks_the_bucket_by_last_access_anywhere(index: Index) -> None:
    times = [5.0, 1.0, 3.0, 3.0, 2.0, 4.0]
    for digest, when in zip(D, times, strict=False):
        await index.add_shared(digest, 1, when)
    await index.add_object(D[10], 1, None, 0.5)  # only local: not the bucket's
    await index.record_access({D[1]: 9.0}, {})  # pulled recently (from any tier)
    expected = sorted((9.0 if d == D[1] else t, d) for d, t in zip(D, times, strict=False))
    seen: list[tuple[float, str]] = []
    cursor = None
    while page := await index.shared_page(cursor, 4):
        seen += [(r.last_access, r.digest) for r in page]
        cursor = (page[-1].last_access, page[-1].digest)
    assert seen == expected
    assert await index.shared_totals() == (6, 6)


# ------------------------------------------------------------------------ bulk


async def test_import_rows_inserts_everything_in_batches_and_keeps_existing_rows(
    index: Index,
) -> None:
    await index.add_object(D[0], 10, "application/x", 100.0)
    await index.set_tag("u", "r", "t", D[0], 100.0)
    before = await index.generation()
    many = [  # more than one transaction's worth in either implementation
        ObjectRow(f"sha256:{i + 100:064x}", i, None if i % 3 else "application/y", i, i + 0.5)
        for i in range(12_345)
    ]
    await index.import_rows(
        [ObjectRow(D[0], 99, None, 1.0, 1.0), *many],
        [TagImport("u", "r", "t", D[1], 1.0, 1.0), TagImport("u", "r", "n", D[2], 5.0, 7.0)],
        [("u", "r", D[0]), ("u", "r", D[0]), ("v", "s", D[3])],
    )
    assert await index.get_object(D[0]) == ObjectRow(D[0], 10, "application/x", 100.0, 100.0)
    assert await index.get_object(many[3].digest) == many[3]
    assert await index.count_objects() == 1 + len(many)
    assert await index.total_size() == 10 + sum(range(len(many)))
    assert await index.get_tag("u", "r", "t") == TagRow(D[0], 100.0, 100.0)  # kept
    assert await index.get_tag("u", "r", "n") == TagRow(D[2], 5.0, 7.0)
    assert await index.links_of("u", "r") == [D[0]]
    assert await index.repositories() == [("u", "r"), ("v", "s")]
    first = await index.objects_page(None, 2)
    assert [r.digest for r in first] == [many[0].digest, many[1].digest]
    assert await index.generation() == before  # nothing was deleted
    await index.import_rows()


# ------------------------------------------------------------------- totals


async def test_running_totals_stay_exact_through_every_kind_of_write(
    index: Index, tmp_path: Path
) -> None:
    """total_size/count_objects are kept by the index itself (no SUM per call)."""
    model: dict[str, int] = {}

    async def check() -> None:
        assert await index.total_size() == sum(model.values())
        assert await index.count_objects() == len(model)

    await check()
    await index.add_object(D[0], 10, None, 1.0)
    await index.add_object(D[1], 1 << 40, "application/x", 1.0)
    model |= {D[0]: 10, D[1]: 1 << 40}
    await check()
    await index.add_object(D[0], 25, None, 2.0)  # the same digest, a new size
    await index.add_object(D[1], 1 << 40, None, 3.0)  # the same size: unchanged
    model[D[0]] = 25
    await check()
    await index.adopt_objects(
        [ObjectRow(D[0], 999, None, 1.0, 1.0), ObjectRow(D[2], 7, None, 1, 1)]
    )
    model[D[2]] = 7  # adopting keeps existing rows and their sizes
    await check()
    await index.import_rows([ObjectRow(D[3], 3, None, 1, 1), ObjectRow(D[2], 70, None, 1, 1)])
    model[D[3]] = 3
    await check()
    await index.record_access({D[0]: 50.0, D[9]: 50.0}, {})
    await check()
    await index.forget([D[1], D[9]])
    del model[D[1]]
    await check()
    other = await reopen(index, tmp_path)
    try:

        async def write(handle: Index, start: int) -> None:
            for i in range(start, start + 40):
                await handle.add_object(f"sha256:{i:064x}", i, None, float(i))

        await asyncio.gather(write(index, 1000), write(other, 2000))
        model |= {f"sha256:{i:064x}": i for i in (*range(1000, 1040), *range(2000, 2040))}
        await asyncio.gather(
            index.forget([f"sha256:{i:064x}" for i in range(1000, 1020)]),
            other.forget([f"sha256:{i:064x}" for i in range(2000, 2030)]),
        )
        for i in (*range(1000, 1020), *range(2000, 2030)):
            del model[f"sha256:{i:064x}"]
        await check()
        assert await other.total_size() == sum(model.values())
    finally:
        await other.close()


async def test_running_totals_follow_each_tier_as_content_moves_between_them(
    index: Index,
) -> None:
    """The local tier's totals count what the data directory holds, the bucket's what
    it holds: a row the bucket keeps after its local copy went counts there only."""

    async def walk(page: Any) -> dict[str, int]:
        rows: dict[str, int] = {}
        cursor = None
        while found := await page(cursor, 3):
            rows |= {r.digest: r.size for r in found}
            cursor = (found[-1].last_access, found[-1].digest)
        return rows

    async def check(local: dict[str, int], shared: dict[str, int]) -> None:
        assert await walk(index.objects_page) == local
        assert await walk(index.shared_page) == shared
        assert (await index.count_objects(), await index.total_size()) == (
            len(local),
            sum(local.values()),
        )
        assert await index.shared_totals() == (len(shared), sum(shared.values()))

    await index.add_object(D[0], 10, None, 1.0)
    await index.add_object(D[1], 20, "application/x", 1.0)
    await check({D[0]: 10, D[1]: 20}, {})
    await index.add_shared(D[1], 20, 2.0)  # uploaded: in both tiers
    await index.add_shared(D[2], 40, 2.0)  # found in the bucket only
    await check({D[0]: 10, D[1]: 20}, {D[1]: 20, D[2]: 40})
    await index.add_shared(D[2], 41, 3.0)  # the bucket's size changed
    await index.forget([D[1], D[0]])  # evicted locally: D[1] stays the bucket's
    await check({}, {D[1]: 20, D[2]: 41})
    await index.add_object(D[1], 20, None, 4.0)  # filled again from the bucket
    await index.add_object(D[2], 41, None, 4.0)
    await index.adopt_objects([ObjectRow(D[4], 4, None, 4.0, 4.0)])  # a stray file indexed
    await check({D[1]: 20, D[2]: 41, D[4]: 4}, {D[1]: 20, D[2]: 41})
    await index.forget_shared([D[1], D[2]])  # gone from the bucket: still local
    await index.forget([D[4]])
    await index.import_rows([ObjectRow(D[3], 3, None, 1.0, 1.0)])
    await check({D[1]: 20, D[2]: 41, D[3]: 3}, {})
    await index.add_shared(D[3], 3, 5.0)
    await index.forget([D[1], D[2], D[3]])
    await index.forget_shared([D[3]])
    await check({}, {})
    assert await index.get_object(D[3]) is None  # no tier holds it: out of the catalog


async def test_maintenance_queries_cover_the_local_tier_only(index: Index) -> None:
    """ls/du/gc/verify walk the data directory through these; what only the bucket
    holds is the bucket's steps' business (bucket/maintenance.py)."""
    manifest = "application/vnd.oci.image.manifest.v1+json"
    await index.add_object(AMD, 200, manifest, 1.0)
    await index.record_refs({AMD: ManifestRefs((CFG, L1), ())})
    await index.add_object(CFG, 10, None, 1.0)
    await index.add_object(L1, 1000, None, 1.0)
    await index.link("u", "app", [AMD, CFG, L1])
    await index.add_shared(AMD, 200, 2.0)
    await index.add_shared(L1, 1000, 2.0)
    await index.forget([AMD, L1])  # the bucket keeps their rows
    assert [r.digest for r in await index.get_objects([AMD, CFG, L1])] == [CFG]
    found = await index.digest_range("", None)
    assert [r.digest for r in found.objects] == [CFG]
    assert found.referenced == {AMD, CFG, L1}  # the links name all three
    await index.unlink("u", "app", None)
    found = await index.digest_range("", None)
    assert found.referenced == frozenset()  # AMD lists CFG, but AMD is not stored here
    await index.link("u", "app", [AMD])
    assert await index.untagged_manifests() == []
    assert await index.refs_of([AMD]) == {}
    assert await index.unparsed_manifests(None, 10) == []
    summary = await index.usage_summary()
    assert (summary.objects, summary.bytes) == (1, 10)
    assert summary.upstreams == (UpstreamUsage("u", repos=1, tags=0, objects=0, bytes=0),)


# --------------------------------------------------------------- references

IDX, AMD, ARM, CFG, L1, L2 = (f"sha256:{c * 64}" for c in "abcdef")


async def _image_rows(index: Index) -> None:
    """An index (amd64 stored, arm64 never pulled) whose amd64 lists CFG, L1, L2 (L2 gone)."""
    await index.add_object(IDX, 300, "application/vnd.oci.image.index.v1+json", 5.0)
    await index.add_object(AMD, 200, "application/vnd.oci.image.manifest.v1+json", 5.0)
    for digest, size in ((CFG, 10), (L1, 1000)):
        await index.add_object(digest, size, None, 5.0)
    await index.record_refs(
        {IDX: ManifestRefs((), (AMD, ARM)), AMD: ManifestRefs((CFG, L1, L2), ())}
    )


async def test_references_of_stored_manifests_are_recorded_and_go_with_their_row(
    index: Index,
) -> None:
    await _image_rows(index)
    await index.record_refs({D[7]: ManifestRefs((D[8],), ())})  # not stored: ignored
    found = await index.refs_of([IDX, AMD, CFG, D[7]])
    assert found == {
        IDX: ManifestRefs((), (AMD, ARM)),
        AMD: ManifestRefs((CFG, L1, L2), ()),
    }
    assert await index.unparsed_manifests(None, 10) == []
    await index.forget([AMD])
    assert await index.refs_of([AMD]) == {}
    await index.add_object(AMD, 200, "application/vnd.oci.image.manifest.v1+json", 6.0)
    assert await index.refs_of([AMD]) == {}  # stored again: not known until recorded
    assert await index.unparsed_manifests(None, 10) == [AMD]
    await index.record_refs({AMD: ManifestRefs((CFG, L1, L2), ())})
    assert await index.refs_of([AMD]) == {AMD: ManifestRefs((CFG, L1, L2), ())}
    assert await index.prune_refs() == 0  # every manifest listing something is stored
    await index.forget([AMD, IDX])
    assert await index.prune_refs() == 3 + 2  # what AMD and IDX listed
    assert await index.prune_refs() == 0
    await index.record_refs({CFG: ManifestRefs((L1,), ())})  # a blob lists nothing
    assert await index.refs_of([CFG]) == {}


async def test_unparsed_manifests_are_paged_by_digest(index: Index) -> None:
    manifests = [f"sha256:{i:064x}" for i in range(7)]
    for digest in reversed(manifests):
        await index.add_object(digest, 1, "application/x", 1.0)
    await index.add_object(f"sha256:{99:064x}", 1, None, 1.0)  # a blob: never parsed
    await index.record_refs({manifests[3]: ManifestRefs((), ())})  # known: lists nothing
    assert await index.unparsed_manifests(None, 4) == [*manifests[:3], manifests[4]]
    assert await index.unparsed_manifests(manifests[4], 4) == manifests[5:]
    assert await index.refs_of([manifests[3]]) == {manifests[3]: ManifestRefs((), ())}


async def test_digest_range_gives_rows_and_what_names_them(index: Index) -> None:
    await _image_rows(index)
    await index.set_tag("u", "app", "1", IDX, 5.0)
    await index.link("u", "app", [D[5]])
    await index.add_object(D[6], 1, None, 5.0)  # nobody names it
    everything = await index.digest_range("", None)
    assert [r.digest for r in everything.objects] == sorted([IDX, AMD, CFG, L1, D[6]])
    assert everything.referenced == {IDX, AMD, ARM, CFG, L1, L2, D[5]}
    assert everything.tagged == {IDX}
    part = await index.digest_range("sha256:b", "sha256:e")  # AMD, CFG (and ARM named)
    assert [r.digest for r in part.objects] == [AMD, CFG]
    assert part.referenced == {AMD, ARM, CFG} and part.tagged == frozenset()
    assert (await index.digest_range("sha256:f", None)).referenced == {L2}
    await index.forget([AMD])  # a manifest gone names nothing any more
    assert (await index.digest_range("sha256:d", "sha256:g")).referenced == set()


SHARED_BY = 20_000  # manifests listing one base layer (at 1M objects the top one: 100,238)


async def test_a_range_costs_its_names_not_the_manifests_listing_them(index: Index) -> None:
    """A base layer most images are built on is listed by most manifests. Its range
    answers with the names once each: the PostgreSQL walk fetched every (blob,
    manifest) pair of the range and then every listing manifest's holding, so
    ``cache gc`` and ``cache verify`` peaked at 171 MB at 1M objects (100 MB since)."""
    manifest = "application/vnd.oci.image.manifest.v1+json"
    listing = [f"sha256:{i:064x}" for i in range(SHARED_BY)]  # all before the range asked
    await index.import_rows(
        [
            ObjectRow(L1, 1000, None, 1.0, 2.0),
            *(ObjectRow(m, 500, manifest, 1.0, 2.0) for m in listing),
        ],
        refs={m: ManifestRefs((L1,), ()) for m in listing},
    )
    gc.collect()
    tracemalloc.start()
    try:
        found = await index.digest_range("sha256:e", "sha256:f")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [r.digest for r in found.objects] == [L1]
    assert found.referenced == {L1} and found.tagged == frozenset()
    # One row and one name; what 20,000 pairs took was 8 MB and more.
    assert peak < 1 << 20, f"{peak} bytes allocated at once for a range of one row"


async def test_range_usage_lists_stored_digests_and_counts_what_nothing_names(
    index: Index,
) -> None:
    await _image_rows(index)
    await index.set_tag("u", "app", "1", IDX, 5.0)
    await index.link("u", "app", [D[5]])  # a link to nothing stored
    await index.add_object(D[6], 7, None, 5.0)  # nobody names it
    assert await index.range_usage("", None) == RangeUsage(sorted([IDX, AMD, CFG, L1, D[6]]), 1, 7)
    assert await index.range_usage("sha256:b", "sha256:e") == RangeUsage([AMD, CFG], 0, 0)
    assert await index.range_usage("sha256:f", None) == RangeUsage([], 0, 0)
    await index.forget([AMD])  # what it listed is named by nothing stored now
    assert await index.range_usage("", None) == RangeUsage(
        sorted([IDX, CFG, L1, D[6]]), 3, 10 + 1000 + 7
    )
    found = await index.digest_range("", None)  # the same rule, row by row
    loose = [r for r in found.objects if r.digest not in found.referenced]
    assert (len(loose), sum(r.size for r in loose)) == (3, 1017)
    await index.add_shared(D[7], 9, 6.0)  # the bucket's only: not this tier's
    assert D[7] not in (await index.range_usage("", None)).digests


async def test_image_stats_follow_what_each_stored_manifest_lists(index: Index) -> None:
    await _image_rows(index)  # IDX: AMD (CFG, L1, L2 gone) and ARM (never pulled)
    idx2, arm2, cfg2 = D[10], D[11], D[12]  # an index whose two children share L1
    await index.add_object(idx2, 50, "application/vnd.oci.image.index.v1+json", 5.0)
    await index.add_object(arm2, 70, "application/vnd.oci.image.manifest.v1+json", 5.0)
    await index.add_object(cfg2, 5, None, 5.0)
    await index.record_refs(
        {idx2: ManifestRefs((), (AMD, arm2)), arm2: ManifestRefs((cfg2, L1), ())}
    )
    index_type = "application/vnd.oci.image.index.v1+json"
    manifest = "application/vnd.oci.image.manifest.v1+json"
    found = await index.image_stats([IDX, AMD, idx2, CFG, D[9], AMD])
    assert found == {
        IDX: ImageStats(index_type, 300 + 200 + 10 + 1000, 4, 1, 2, 1),
        AMD: ImageStats(manifest, 200 + 10 + 1000, 3, 1, 0, 0),
        # L1 once, though both children list it
        idx2: ImageStats(index_type, 50 + 200 + 10 + 1000 + 70 + 5, 6, 1, 2, 2),
        CFG: ImageStats(None, 10, 1, 0, 0, 0),  # a blob: itself
        D[9]: NO_IMAGE,  # not stored
    }
    await index.add_shared(AMD, 200, 6.0)
    await index.forget([AMD])  # the bucket keeps its row; this tier does not hold it
    found = await index.image_stats([IDX, AMD])
    assert found == {IDX: ImageStats(index_type, 300, 1, 0, 2, 0), AMD: NO_IMAGE}
    assert await index.image_stats([]) == {}


async def test_image_stats_match_the_images_of_a_loaded_snapshot(index: Index) -> None:
    """The database's walk and ``inventory.image`` agree, image for image."""
    await _image_rows(index)
    await index.add_object(D[3], 40, "application/vnd.oci.image.manifest.v1+json", 5.0)
    await index.record_refs({D[3]: ManifestRefs((L1, D[4]), ())})  # D[4] never stored
    objects = {r.digest: r for r in await index.get_objects([IDX, AMD, CFG, L1, D[3]])}
    refs = await index.refs_of(list(objects))
    snap = Snapshot(objects, refs=refs)
    roots = [IDX, AMD, ARM, CFG, L1, D[3]]
    found = await index.image_stats(roots)
    for root in roots:
        want = image(snap, ("u", "r"), None, root, last_pulled=0.0)
        got = found[root]
        assert (
            got.media_type,
            got.size,
            got.objects,
            got.missing,
            got.platforms,
            got.platforms_cached,
        ) == (
            want.media_type,
            want.size,
            want.objects,
            want.missing,
            want.platforms,
            want.platforms_cached,
        ), root


async def test_get_objects_in_bulk(index: Index) -> None:
    digests = [f"sha256:{i:064x}" for i in range(1200)]
    await index.import_rows([ObjectRow(d, 1, None, 1.0, 2.0) for d in digests])
    found = await index.get_objects([*digests[::2], D[0].replace("0", "f")])
    assert sorted(r.digest for r in found) == sorted(digests[::2])
    assert found[0] == ObjectRow(found[0].digest, 1, None, 1.0, 2.0)


# ------------------------------------------------------------------ listing


async def test_tags_page_walks_every_tag_bytewise(index: Index) -> None:
    for upstream, repo, tag in [("v", "r", "y"), ("u", "r", "b"), ("u", "r", "B"), ("u", "a", "z")]:
        await index.set_tag(upstream, repo, tag, D[0], 1.0)
    seen = []
    after = None
    while page := await index.tags_page(after, 3):
        seen += [(t.upstream, t.repo, t.tag) for t in page]
        after = (page[-1].upstream, page[-1].repo, page[-1].tag)
    assert seen == [("u", "a", "z"), ("u", "r", "B"), ("u", "r", "b"), ("v", "r", "y")]
    assert seen == [(t.upstream, t.repo, t.tag) for t in await index.all_tags()]


async def test_untagged_manifests_are_those_pulled_by_digest_only(index: Index) -> None:
    await _image_rows(index)
    await index.add_object(D[3], 50, "application/vnd.oci.image.manifest.v1+json", 7.0)
    await index.set_tag("u", "app", "1", IDX, 5.0)
    await index.link("u", "app", [IDX, AMD, CFG, L1])  # AMD: a child of a stored index
    await index.link("u", "other", [IDX, CFG])  # IDX untagged there
    await index.link("v", "x", [D[3]])
    assert await index.untagged_manifests() == [
        UntaggedManifest("u", "other", IDX, 5.0),
        UntaggedManifest("v", "x", D[3], 7.0),
    ]
    await index.forget([IDX])  # its child is on its own now
    assert [(m.repo, m.digest) for m in await index.untagged_manifests()] == [
        ("app", AMD),
        ("x", D[3]),
    ]


async def test_usage_summary_aggregates_like_cache_du(index: Index) -> None:
    await _image_rows(index)
    await index.add_object(D[6], 7, None, 5.0)  # unreferenced
    await index.set_tag("u", "app", "1", IDX, 5.0)
    await index.set_tag("u", "gone", "1", D[9], 5.0)  # a tag whose manifest is not stored
    await index.link("u", "app", [IDX, AMD, CFG, L1])
    await index.link("u", "base", [L1])  # L1 shared by two repositories
    await index.link("w", "x", [CFG])
    assert await index.usage_summary() == UsageSummary(
        upstreams=(
            UpstreamUsage("u", repos=3, tags=2, objects=4, bytes=300 + 200 + 10 + 1000),
            UpstreamUsage("w", repos=1, tags=0, objects=1, bytes=10),
        ),
        objects=5,
        bytes=300 + 200 + 10 + 1000 + 7,
        shared_objects=2,  # L1 (app, base) and CFG (app, w/x)
        shared_bytes=1010,
    )


# ----------------------------------------------------------------------- links


async def test_links_and_repositories(index: Index) -> None:
    await index.link("u", "b", [D[0], D[1], D[0]])
    await index.link("u", "a", [D[1]])
    await index.link("v", "c", [])
    await index.set_tag("w", "t", "1", D[2], 1.0)
    assert await index.is_linked("u", "b", D[0]) and not await index.is_linked("u", "a", D[0])
    assert await index.links_of("u", "b") == sorted([D[0], D[1]])
    assert await index.repositories() == [("u", "a"), ("u", "b"), ("w", "t")]
    assert await index.repositories("u") == [("u", "a"), ("u", "b")]
    before = await index.generation()
    await index.unlink("u", "b", [D[0]])
    assert await index.links_of("u", "b") == [D[1]]
    await index.unlink("u", "b", None)
    assert await index.links_of("u", "b") == []
    assert await index.repositories("u") == [("u", "a")]
    assert await index.generation() > before


async def test_holders_are_the_repositories_linked_to_each_digest(index: Index) -> None:
    await index.link("u", "a", [D[0], D[1]])
    await index.link("v", "b", [D[1]])
    await index.set_tag("w", "t", "1", D[2], 1.0)  # a tag is not a link
    assert await index.holders([D[0], D[1], D[2], D[1]]) == {
        D[0]: frozenset({("u", "a")}),
        D[1]: frozenset({("u", "a"), ("v", "b")}),
    }
    assert await index.holders([]) == {}
    many = [f"sha256:{n + 10_000:064x}" for n in range(1200)]  # more than one statement's worth
    await index.link("u", "many", many)
    found = await index.holders(many)
    assert len(found) == 1200 and found[many[-1]] == frozenset({("u", "many")})


async def test_names_with_any_text_round_trip(index: Index) -> None:
    odd = 'reg.test/o\'neil "quoted" ünïcode'
    await index.set_tag(odd, odd, odd, D[0], 1.0)
    await index.link(odd, odd, [D[0]])
    assert await index.list_tags(odd, odd) == [odd]
    assert await index.is_linked(odd, odd, D[0])


# --------------------------------------------------------- sharing and changes


async def test_a_second_handle_sees_writes_and_is_told_of_deletions(
    index: Index, tmp_path: Path
) -> None:
    other = await reopen(index, tmp_path)
    try:
        await index.set_tag("u", "r", "t", D[0], 42.0)
        row = await other.get_tag("u", "r", "t")
        assert row is not None and row.digest == D[0]
        assert not await other.wait_changed(0.2)  # additions are not changes
        waiting = asyncio.create_task(other.wait_changed(10.0))
        await asyncio.sleep(0.1)
        await index.forget([D[0]])
        assert await waiting
    finally:
        await other.close()


async def test_concurrent_writers_lose_nothing(index: Index, tmp_path: Path) -> None:
    other = await reopen(index, tmp_path)
    try:

        async def write(handle: Index, start: int) -> None:
            for i in range(start, start + 50):
                await handle.add_object(f"sha256:{i:064x}", 1, None, float(i))

        await asyncio.gather(write(index, 0), write(other, 1000), write(index, 2000))
        assert await index.count_objects() == 150
    finally:
        await other.close()


async def test_postgresql_replicas_hold_their_own_local_tiers(pg_database: Any) -> None:
    """Each replica evicts its own copy; the catalog (and tags) go with the last copy."""
    a = await PostgresIndex.open(pg_database.url, replica="http://a:5000")
    b = await PostgresIndex.open(pg_database.url, replica="http://b:5000")
    try:
        await a.add_object(D[0], 10, "application/x", 1.0)
        await b.add_object(D[0], 10, None, 2.0)
        await a.add_object(D[1], 5, None, 1.0)
        await a.set_tag("u", "r", "t", D[0], 1.0)
        assert (await a.total_size(), await b.total_size()) == (15, 10)
        assert [r.digest for r in await b.objects_page(None, 10)] == [D[0]]
        await a.forget([D[0], D[1]])
        assert await a.total_size() == 0 and await b.total_size() == 10
        assert await a.get_object(D[1]) is None  # nobody holds it: out of the catalog
        row = await a.get_object(D[0])
        assert row is not None and row.media_type == "application/x"  # b still holds it
        assert await a.list_tags("u", "r") == ["t"]
        await b.forget([D[0]])
        assert await a.get_object(D[0]) is None and await a.list_tags("u", "r") == []
    finally:
        await a.close()
        await b.close()


async def test_postgresql_the_bucket_keeps_the_catalog_for_every_replica(pg_database: Any) -> None:
    a = await PostgresIndex.open(pg_database.url, replica="http://a:5000", shared=BUCKET)
    b = await PostgresIndex.open(pg_database.url, replica="http://b:5000", shared=BUCKET)
    try:
        await a.add_object(D[0], 10, "application/x", 1.0)
        await a.set_tag("u", "r", "t", D[0], 1.0)
        await a.add_shared(D[0], 10, 1.0)
        await a.forget([D[0]])
        assert await b.is_shared(D[0]) and await b.get_object(D[0]) is not None
        assert await b.total_size() == 0 and await b.shared_totals() == (1, 10)
        await b.add_object(D[0], 10, None, 2.0)  # b fills it from the bucket
        await b.forget_shared([D[0]])  # evicted from the bucket: b's copy keeps it known
        assert await a.get_object(D[0]) is not None and await a.list_tags("u", "r") == ["t"]
        await b.forget([D[0]])
        assert await a.get_object(D[0]) is None and await a.list_tags("u", "r") == []
    finally:
        await a.close()
        await b.close()


async def test_a_closed_index_raises_index_unavailable(index: Index, tmp_path: Path) -> None:
    other = await reopen(index, tmp_path)
    await other.close()
    with pytest.raises(IndexUnavailable):
        await other.get_tag("u", "r", "t")


async def test_sqlite_schema_2_migrates_with_every_row_in_the_data_directory(
    tmp_path: Path,
) -> None:
    """Rows written before the shared tier existed are the local tier's."""
    import sqlite3

    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE objects (digest TEXT PRIMARY KEY, size INTEGER NOT NULL, media_type TEXT,"
        " created REAL NOT NULL, last_access REAL NOT NULL) WITHOUT ROWID;"
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;"
        f"INSERT INTO objects VALUES ('{D[0]}', 3, NULL, 1.0, 2.0);"
        "INSERT INTO meta VALUES ('schema', '2');"
    )
    db.close()
    index = await SqliteIndex.open(path)
    try:
        assert [r.digest for r in await index.objects_page(None, 10)] == [D[0]]
        assert await index.total_size() == 3 and await index.shared_totals() == (0, 0)
    finally:
        await index.close()


async def test_postgresql_references_count_where_the_manifest_is_held(pg_database: Any) -> None:
    """A replica's gc and ls follow the manifests of its own local tier only."""
    a = await PostgresIndex.open(pg_database.url, replica="http://a:5000")
    b = await PostgresIndex.open(pg_database.url, replica="http://b:5000")
    try:
        await b.add_object(AMD, 200, "application/vnd.oci.image.manifest.v1+json", 1.0)
        await b.record_refs({AMD: ManifestRefs((CFG,), ())})
        await a.add_object(CFG, 10, None, 1.0)
        assert await b.refs_of([AMD]) == {AMD: ManifestRefs((CFG,), ())}
        assert await a.refs_of([AMD]) == {}  # not in a's tier
        assert (await a.digest_range("", None)).referenced == frozenset()
        assert (await b.digest_range("", None)).referenced == {CFG}
        assert [r.digest for r in await a.get_objects([AMD, CFG])] == [CFG]
    finally:
        await a.close()
        await b.close()


# ---------------------------------------------------------------- migrations

SQLITE_V2 = """
CREATE TABLE objects (digest TEXT PRIMARY KEY, size INTEGER NOT NULL, media_type TEXT,
    created REAL NOT NULL, last_access REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE tags (upstream TEXT NOT NULL, repo TEXT NOT NULL, tag TEXT NOT NULL,
    digest TEXT NOT NULL, checked_at REAL NOT NULL, last_pulled REAL NOT NULL,
    PRIMARY KEY (upstream, repo, tag)) WITHOUT ROWID;
CREATE TABLE links (upstream TEXT NOT NULL, repo TEXT NOT NULL, digest TEXT NOT NULL,
    PRIMARY KEY (upstream, repo, digest)) WITHOUT ROWID;
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX links_by_digest ON links (digest);
CREATE INDEX tags_by_digest ON tags (digest);
CREATE INDEX objects_lru ON objects (last_access, digest);
INSERT INTO meta VALUES ('schema', '2');
"""


async def test_sqlite_schema_2_migrates_with_exact_totals(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "index.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(SQLITE_V2)
        db.executemany(
            "INSERT INTO objects VALUES (?, ?, ?, 1.0, 1.0)",
            [(D[0], 10, "application/x"), (D[1], 32, None), (D[2], 5, "application/y")],
        )
    index = await SqliteIndex.open(path)
    try:
        assert (await index.total_size(), await index.count_objects()) == (47, 3)
        assert await index.unparsed_manifests(None, 10) == [D[0], D[2]]
        await index.add_object(D[3], 100, None, 2.0)
        assert await index.total_size() == 147
    finally:
        await index.close()
    again = await SqliteIndex.open(path)  # opening again changes nothing
    try:
        assert await again.total_size() == 147
    finally:
        await again.close()


# Schema 3 as released with the shared tier (before references and running totals).
SQLITE_V3 = (
    SQLITE_V2.replace("('schema', '2')", "('schema', '3')")
    + """
CREATE TABLE shared (digest TEXT PRIMARY KEY, size INTEGER NOT NULL, stored REAL NOT NULL)
    WITHOUT ROWID;
ALTER TABLE objects ADD COLUMN held INTEGER NOT NULL DEFAULT 1;
"""
)


async def test_sqlite_schema_3_migrates_with_exact_totals_of_both_tiers(tmp_path: Path) -> None:
    """A data directory of the release with the shared tier: rows the bucket alone
    holds (held = 0) count in the bucket's totals, not the local tier's."""
    import sqlite3

    path = tmp_path / "index.sqlite3"
    manifest = "application/vnd.oci.image.manifest.v1+json"
    with sqlite3.connect(path) as db:
        db.executescript(SQLITE_V3)
        db.executemany(
            "INSERT INTO objects VALUES (?, ?, ?, 1.0, 1.0, ?)",
            [
                (AMD, 200, manifest, 1),
                (CFG, 10, None, 1),
                (L1, 1000, None, 0),
                (ARM, 300, manifest, 0),
            ],
        )
        db.executemany("INSERT INTO shared VALUES (?, ?, 1.0)", [(L1, 1000), (ARM, 300), (CFG, 10)])
        db.execute("INSERT INTO tags VALUES ('u', 'app', '1', ?, 1.0, 1.0)", (ARM,))
    index = await SqliteIndex.open(path)
    try:
        assert (await index.count_objects(), await index.total_size()) == (2, 210)
        assert await index.shared_totals() == (3, 1310)
        assert await index.unparsed_manifests(None, 10) == [AMD]  # ARM: the bucket's
        await index.forget([CFG])  # the bucket keeps it
        await index.add_object(L1, 1000, None, 2.0)  # filled from the bucket
        assert (await index.count_objects(), await index.total_size()) == (2, 1200)
        await index.forget_shared([ARM])
        assert await index.get_tag("u", "app", "1") is None  # no tier holds it
        assert await index.shared_totals() == (2, 1010)
    finally:
        await index.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("4",)
    again = await SqliteIndex.open(path)  # opening again changes nothing
    try:
        assert (await again.count_objects(), await again.total_size()) == (2, 1200)
        assert await again.shared_totals() == (2, 1010)
    finally:
        await again.close()


async def test_sqlite_a_read_only_index_of_an_older_schema_is_refused(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "index.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(SQLITE_V3)
    with pytest.raises(IndexUnavailable, match="schema 3 is not this release's"):
        await SqliteIndex.open(path, readonly=True)


async def test_postgresql_schema_1_migrates_with_exact_totals_per_replica(
    pg_database: Any,
) -> None:
    import asyncpg

    from registry_cache.index import postgres

    conn = await asyncpg.connect(pg_database.url)
    try:
        await conn.execute(postgres.SCHEMA)
        await conn.execute("SET search_path = registry_cache")
        await conn.execute("INSERT INTO meta VALUES ('schema', '1')")
        for digest, size, media_type in ((D[0], 10, "application/x"), (D[1], 32, None)):
            await conn.execute(
                "INSERT INTO objects VALUES ($1, $2, $3, 1.0, 1.0)", digest, size, media_type
            )
        for replica, digest, size in (("a", D[0], 10), ("a", D[1], 32), ("b", D[1], 32)):
            await conn.execute(
                "INSERT INTO holdings VALUES ($1, $2, $3, 1.0)", replica, digest, size
            )
    finally:
        await conn.close()
    a = await PostgresIndex.open(pg_database.url, replica="a")
    b = await PostgresIndex.open(pg_database.url, replica="b")
    try:
        assert (await a.total_size(), await a.count_objects()) == (42, 2)
        assert (await b.total_size(), await b.count_objects()) == (32, 1)
        assert await a.unparsed_manifests(None, 10) == [D[0]]
        assert await b.unparsed_manifests(None, 10) == []  # b holds no manifest
    finally:
        await a.close()
        await b.close()


async def test_postgresql_schema_1_with_a_bucket_migrates_with_the_buckets_totals(
    pg_database: Any,
) -> None:
    """Schema 1 as released with the shared tier: the bucket's holdings get running
    totals of their own, like a replica's."""
    import asyncpg

    from registry_cache.index import postgres

    conn = await asyncpg.connect(pg_database.url)
    try:
        await conn.execute(postgres.SCHEMA)
        await conn.execute("SET search_path = registry_cache")
        await conn.execute("INSERT INTO meta VALUES ('schema', '1')")
        for digest, size in ((D[0], 10), (D[1], 32), (D[2], 100)):
            await conn.execute("INSERT INTO objects VALUES ($1, $2, NULL, 1.0, 1.0)", digest, size)
        for replica, digest, size in (("a", D[0], 10), (BUCKET, D[1], 32), (BUCKET, D[2], 100)):
            await conn.execute(
                "INSERT INTO holdings VALUES ($1, $2, $3, 1.0)", replica, digest, size
            )
    finally:
        await conn.close()
    a = await PostgresIndex.open(pg_database.url, replica="a", shared=BUCKET)
    try:
        assert (await a.total_size(), await a.count_objects()) == (10, 1)
        assert await a.shared_totals() == (2, 132)
        await a.add_shared(D[0], 10, 2.0)
        await a.forget_shared([D[2]])
        assert await a.shared_totals() == (2, 42)
        assert await a.get_object(D[2]) is None
    finally:
        await a.close()
