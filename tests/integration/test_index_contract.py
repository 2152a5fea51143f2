"""The ``Index`` contract: one suite, run over every implementation.

SQLite (the data directory's file) and PostgreSQL (a real server started by the
suite, a fresh database per test). In the manner of distribution's storage-driver
test suites: whatever the proxy, eviction and maintenance rely on is asserted
here, so a new implementation is done when this file passes over it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from registry_cache.index.base import (
    Index,
    IndexUnavailable,
    ObjectRow,
    TagEntry,
    TagImport,
    TagRow,
)
from registry_cache.index.postgres import PostgresIndex
from registry_cache.index.sqlite import SqliteIndex

D = [f"sha256:{i:064x}" for i in range(20)]


@pytest.fixture(params=["sqlite", "postgresql"])
async def index(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Index]:
    made: Index
    if request.param == "sqlite":
        made = await SqliteIndex.open(tmp_path / "index.sqlite3")
    else:
        database = request.getfixturevalue("pg_database")
        made = await PostgresIndex.open(database.url)
    yield made
    await made.close()


async def reopen(index: Index, tmp_path: Path) -> Index:
    """A second handle on the same index (another worker or replica)."""
    if isinstance(index, SqliteIndex):
        return await SqliteIndex.open(index.path)
    assert isinstance(index, PostgresIndex)
    return await PostgresIndex.open(index.url)


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


async def test_a_closed_index_raises_index_unavailable(index: Index, tmp_path: Path) -> None:
    other = await reopen(index, tmp_path)
    await other.close()
    with pytest.raises(IndexUnavailable):
        await other.get_tag("u", "r", "t")
