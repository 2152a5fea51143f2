"""``cache ls/du/verify/gc/prune``: pure aggregation on hand-made snapshots, then the
maintenance operations and the CLI on a real (small) data directory."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from registry_cache.cli.main import main
from registry_cache.digest import Digest
from registry_cache.index.base import Cursor, ObjectRow, TagEntry
from registry_cache.index.front import IndexFront
from registry_cache.index.sqlite import SqliteIndex
from registry_cache.store.blobs import FileBlobStore
from registry_cache.store.inventory import (
    Chosen,
    FileInfo,
    PruneRule,
    Refs,
    Snapshot,
    chosen_objects,
    images,
    plan_gc,
    referenced,
    repo_matches,
    totals,
)
from registry_cache.store.layout import Layout
from registry_cache.store.maintenance import collect_garbage, prune, verify

NOW = 1_000_000.0
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def row(digest: str, size: int, media_type: str | None = None, age: float = 3600) -> ObjectRow:
    return ObjectRow(digest, size, media_type, NOW - age, NOW - age)


def snapshot() -> Snapshot:
    """docker.io/app:1 = index {amd64 (cached, one layer missing), arm64 (never pulled)};
    docker.io/base:1 = image sharing layer L1; ghcr.io/x pulled by digest only; Z unreferenced."""
    objects = {
        "IDX": row("IDX", 100, OCI_INDEX),
        "AMD": row("AMD", 50, OCI_MANIFEST),
        "CFG": row("CFG", 10),
        "L1": row("L1", 1000),
        "BASE": row("BASE", 40, OCI_MANIFEST),
        "BCFG": row("BCFG", 5),
        "GX": row("GX", 30, OCI_MANIFEST),
        "GL": row("GL", 300),
        "Z": row("Z", 7),
    }
    refs = {
        "IDX": Refs((), ("AMD", "ARM")),
        "AMD": Refs(("CFG", "L1", "L2"), ()),
        "BASE": Refs(("BCFG", "L1"), ()),
        "GX": Refs(("GL",), ()),
    }
    app, base, x = ("docker.io", "app"), ("docker.io", "base"), ("ghcr.io", "x")
    links = {
        "IDX": frozenset({app}),
        "AMD": frozenset({app}),
        "CFG": frozenset({app}),
        "L1": frozenset({app, base}),
        "BASE": frozenset({base}),
        "BCFG": frozenset({base}),
        "GX": frozenset({x}),
        "GL": frozenset({x}),
    }
    tags = [
        TagEntry("docker.io", "app", "1", "IDX", NOW - 60),
        TagEntry("docker.io", "base", "1", "BASE", NOW - 86400 * 40),
    ]
    return Snapshot(objects, tags, links, refs)


def test_images_size_counts_cached_children_and_their_blobs() -> None:
    found = {i.name: i for i in images(snapshot())}
    app = found["app:1"]
    assert app.size == 100 + 50 + 10 + 1000
    assert (app.platforms, app.platforms_cached, app.missing) == (2, 1, 1)
    assert not app.complete  # L2 of the cached platform is gone; arm64 is merely absent
    base = found["base:1"]
    assert (base.size, base.complete, base.platforms) == (40 + 5 + 1000, True, 0)
    untagged = found["x@GX"]
    assert (untagged.upstream, untagged.tag, untagged.size) == ("ghcr.io", None, 330)
    assert untagged.last_pulled == NOW - 3600
    assert [i.upstream for i in images(snapshot())] == ["docker.io", "docker.io", "ghcr.io"]


def test_image_whose_manifest_is_gone_shows_as_not_cached() -> None:
    snap = snapshot()
    snap = Snapshot({k: v for k, v in snap.objects.items() if k != "BASE"}, snap.tags, snap.links)
    base = next(i for i in images(snap) if i.repo == "base")
    assert (base.cached, base.size, base.complete) == (False, 0, False)


def test_totals_per_upstream_shared_and_unreferenced() -> None:
    sums = totals(snapshot())
    by = {u.upstream: u for u in sums.upstreams}
    assert (by["docker.io"].repos, by["docker.io"].tags) == (2, 2)
    assert by["docker.io"].bytes == 100 + 50 + 10 + 1000 + 40 + 5  # L1 counted once
    assert (by["ghcr.io"].objects, by["ghcr.io"].bytes) == (2, 330)
    assert (sums.shared_objects, sums.shared_bytes) == (1, 1000)
    assert (sums.unreferenced_objects, sums.unreferenced_bytes) == (1, 7)
    assert sums.bytes == sum(r.size for r in snapshot().objects.values())


def test_referenced_includes_tags_links_and_manifest_contents() -> None:
    names = referenced(snapshot())
    assert {"IDX", "L2", "ARM", "GL"} <= names and "Z" not in names


def test_plan_gc_orphans_adoption_and_missing_rows() -> None:
    snap = snapshot()
    old, new = FileInfo(1, NOW - 7200), FileInfo(1, NOW - 5)
    files = {d: old for d in snap.objects if d != "CFG"}  # CFG's file is gone
    files |= {"STRAY": old, "FRESH": new, "L2": old, "BUSY": old}
    plan = plan_gc(snap, files, now=NOW, grace=3600, busy={"BUSY"})
    assert plan.orphans == ("STRAY", "Z")  # FRESH: too recent; BUSY: a fill holds it
    assert plan.adopt == ("L2",)  # referenced by AMD, verified file, no row
    assert plan.missing == ("CFG",)


def test_plan_gc_drops_tags_whose_manifest_file_is_gone() -> None:
    snap = snapshot()
    files = {d: FileInfo(1, NOW - 7200) for d in snap.objects if d != "BASE"}
    assert "BASE" in plan_gc(snap, files, now=NOW, grace=60).missing


def test_repo_patterns() -> None:
    assert repo_matches(("docker.io", "library/alpine"), ["docker.io/library/*"])
    assert repo_matches(("docker.io", "library/alpine"), ["library/alp*"])
    assert not repo_matches(("ghcr.io", "library/alpine"), ["docker.io/*"])


def _chosen(rule: PruneRule, snap: Snapshot) -> list[str]:
    return sorted(
        d for d, r in snap.objects.items() if rule.takes_object(r, snap.links.get(d, frozenset()))
    )


def test_prune_by_repository_keeps_shared_objects() -> None:
    snap = snapshot()
    rule = PruneRule(NOW, patterns=("docker.io/base",))
    assert [(t.repo, t.tag) for t in snap.tags if rule.takes_tag(t)] == [("base", "1")]
    assert _chosen(rule, snap) == ["BASE", "BCFG"]  # L1 is app's too; Z is nobody's


def test_prune_by_age_and_both() -> None:
    snap = snapshot()
    objects = dict(snap.objects) | {"CFG": row("CFG", 10, age=60)}
    snap = Snapshot(objects, snap.tags, snap.links, snap.refs)
    rule = PruneRule(NOW, older_than=1800)
    assert [t.repo for t in snap.tags if rule.takes_tag(t)] == ["base"]
    assert "CFG" not in _chosen(rule, snap) and "Z" in _chosen(rule, snap)
    assert rule.too_recent(objects["CFG"]) and not rule.too_recent(objects["Z"])
    both = PruneRule(NOW, older_than=1800, patterns=("ghcr.io/*",))
    assert [t for t in snap.tags if both.takes_tag(t)] == [] and _chosen(both, snap) == ["GL", "GX"]
    recent = PruneRule(NOW, patterns=("ghcr.io/*",), grace=7200)
    assert _chosen(recent, snap) == [] and recent.too_recent(objects["GX"])


async def test_chosen_objects_reads_only_the_old_end_of_the_index(tmp_path: Path) -> None:
    """Oldest first, a page at a time: the walk ends at the first row too recent, and asks
    for holders only with ``--repo``."""
    index = await SqliteIndex.open(tmp_path / "index.db")
    try:
        now = time.time()
        digests = [str(Digest.of(f"object {n}".encode())) for n in range(20_000)]
        # 11,000 objects untouched for 2 days, the other 9,000 used an hour ago.
        await index.import_rows(
            [ObjectRow(d, 10, None, now - 86400 * 2, now - (3600 if n >= 11_000 else 86400 * 2))
             for n, d in enumerate(digests)],
            [], [],
        )  # fmt: skip
        await index.link("docker.io", "old", digests[:6000])
        await index.link("docker.io", "kept", digests[5000:6000])  # shared with another repo
        asked: list[int] = []

        async def rows_page(after: Cursor | None, limit: int) -> list[ObjectRow]:
            page = await index.objects_page(after, limit)
            asked.append(len(page))
            return page

        by_age = PruneRule(now, older_than=86400)
        pages = [page async for page in chosen_objects(index, rows_page, by_age)]
        # The third page holds the last old rows: no fourth is asked for.
        assert sum(len(p) for p in pages) == 11_000 and asked == [5000, 5000, 5000]
        assert all(c.holders == frozenset() for p in pages for c in p)  # not asked for
        by_repo = PruneRule(now, older_than=86400, patterns=("docker.io/old",))
        chosen = [c async for p in chosen_objects(index, index.objects_page, by_repo) for c in p]
        assert {c.entry.digest for c in chosen} == set(digests[:5000])
        assert {c.holders for c in chosen} == {frozenset({("docker.io", "old")})}
    finally:
        await index.close()


async def test_chosen_objects_with_repo_reads_only_what_the_repositories_link(
    tmp_path: Path,
) -> None:
    """With ``--repo`` the rows come by the matched repositories' links, not by a walk
    of the index: the same objects, in the same order; over the cap, the walk."""
    index = await SqliteIndex.open(tmp_path / "index.db")
    try:
        now = time.time()
        digests = [str(Digest.of(f"object {n}".encode())) for n in range(12_000)]
        await index.import_rows(
            [ObjectRow(d, 10, None, now - 86400 * 9, now - 86400 * 2 - n)
             for n, d in enumerate(digests)],
            [], [],
        )  # fmt: skip
        await index.link("docker.io", "team1/a", digests[:5000])
        await index.link("docker.io", "team1/b", digests[4000:7000])
        await index.link("docker.io", "team2/c", digests[6500:7000])  # shared: stays
        await index.link("docker.io", "team2/d", digests[7000:])
        await index.record_access({digests[10]: now}, {})  # used just now: stays
        walked: list[int] = []
        by_digest: list[int] = []

        async def rows_page(after: Cursor | None, limit: int) -> list[ObjectRow]:
            walked.append(limit)
            return await index.objects_page(after, limit)

        async def rows_of(wanted: Sequence[str]) -> list[ObjectRow]:
            by_digest.append(len(wanted))
            return await index.get_objects(wanted)

        async def chosen(rule: PruneRule, most: int) -> list[Chosen]:
            pages = chosen_objects(index, rows_page, rule, rows_of=rows_of, candidates=most)
            return [c async for page in pages for c in page]

        team1 = PruneRule(now, older_than=86400, patterns=("docker.io/team1/*",), grace=60)
        looked_up = await chosen(team1, 10_000)
        # team1's 7,000 rows (a page at a time), then each page of those not too recent
        # again, just before it goes; no walk.
        assert walked == [] and by_digest == [5000, 2000, 5000, 1999]
        # The higher n the older: least recently used first; team2/c keeps its 500.
        expected = [digests[n] for n in range(6499, -1, -1) if n != 10]
        assert [c.entry.digest for c in looked_up] == expected
        assert looked_up[0].holders == frozenset({("docker.io", "team1/b")})
        walked_through = await chosen(team1, 6999)  # more than that: the index is walked
        assert walked and walked_through == looked_up

        # Pulled between the look-up and its page: it stays, as it would in the walk.
        async def touched_meanwhile(wanted: Sequence[str]) -> list[ObjectRow]:
            if len(by_digest) == 2:  # the keys are built (two reads): the first page's
                await index.record_access({digests[6499]: time.time()}, {})
            by_digest.append(len(wanted))
            return await index.get_objects(wanted)

        by_digest.clear()
        pages = chosen_objects(index, rows_page, team1, rows_of=touched_meanwhile)
        late = [c.entry.digest async for page in pages for c in page]
        assert late == expected[1:] and by_digest[2:] == [5000, 1999]

        walked.clear()
        by_digest.clear()
        assert await chosen(PruneRule(now, patterns=("nobody/*",)), 10_000) == []
        assert walked == [] and by_digest == []  # matched nothing: read nothing
    finally:
        await index.close()


# ------------------------------------------------------- real data directory


Data = tuple[Layout, FileBlobStore, IndexFront]


@pytest.fixture
async def data(tmp_path: Path) -> AsyncIterator[Data]:
    layout = Layout(tmp_path / "data")
    layout.create()
    index = IndexFront(await SqliteIndex.open(layout.index))
    yield layout, FileBlobStore(layout), index
    await index.index.close()


def _age(layout: Layout, digest: Digest, seconds: float) -> None:
    """Make an object look untouched for ``seconds`` (file and rows)."""
    then = time.time() - seconds
    os.utime(layout.blob(digest), (then, then))
    with sqlite3.connect(layout.index) as db:
        db.execute("UPDATE objects SET last_access = ? WHERE digest = ?", (then, str(digest)))
        db.execute("UPDATE tags SET last_pulled = ? WHERE digest = ?", (then, str(digest)))


async def _image(data: Data, seed: str) -> dict[str, Digest]:
    """A small image (manifest, config, one layer) stored and tagged like the proxy does."""
    _, store, index = data
    layer, config = f"layer {seed}".encode() * 50, f'{{"seed": "{seed}"}}'.encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"digest": str(Digest.of(config)), "size": len(config)},
            "layers": [{"digest": str(Digest.of(layer)), "size": len(layer)}],
        }
    ).encode()
    out = {}
    for name, body, media in (
        ("layer", layer, None),
        ("config", config, None),
        ("manifest", manifest, OCI_MANIFEST),
    ):
        digest = Digest.of(body)
        await store.put(digest, body)
        await index.add_object(str(digest), len(body), media)
        await index.link("reg.test", seed, [str(digest)])
        out[name] = digest
    await index.set_tag("reg.test", seed, "1", str(out["manifest"]))
    return out


async def test_verify_quarantines_corrupt_objects_and_drops_rows(data: Data) -> None:
    layout, store, index = data
    one = await _image(data, "one")
    path = layout.blob(one["layer"])
    damaged = bytearray(path.read_bytes())
    damaged[10] ^= 0xFF
    path.write_bytes(bytes(damaged))
    report = await verify(store, index)
    assert report.corrupt == (str(one["layer"]),) and not report.ok
    assert layout.quarantined(one["layer"]).exists() and await store.stat(one["layer"]) is None
    assert await index.get_object(str(one["layer"])) is None
    again = await verify(store, index)
    assert again.ok and again.checked == 2


async def test_verify_hashes_in_parallel_and_reports_progress(data: Data) -> None:
    _, store, index = data
    images_ = [await _image(data, f"img{i}") for i in range(4)]
    seen: list[int] = []
    totals_seen: list[int] = []
    report = await verify(
        store, index, on_bytes=seen.append, on_total=totals_seen.append, parallel=3
    )
    sizes = [await store.stat(d) for image in images_ for d in image.values()]
    expected = sum(size or 0 for size in sizes)
    assert report.ok and report.checked == 12
    assert totals_seen == [expected] and sum(seen) == expected == report.bytes


async def test_gc_removes_orphans_stale_partials_and_tmp_files(data: Data) -> None:
    layout, store, index = data
    kept = await _image(data, "kept")
    orphan = Digest.of(b"nobody wants me")
    await store.put(orphan, b"nobody wants me")
    stray = Digest.of(b"x" * 10)  # referenced by nothing in the index yet: an orphan too
    partial = layout.partial(Digest.of(b"never finished"))
    partial.write_bytes(b"half")
    leftover = layout.tmp / "abc.123.456"
    leftover.write_bytes(b"tmp")
    then = time.time() - 7200
    for path in (layout.blob(orphan), partial, leftover):
        os.utime(path, (then, then))
    fresh_partial = layout.partial(stray)
    fresh_partial.write_bytes(b"new")
    dry = await collect_garbage(store, index, grace=3600, dry_run=True)
    assert dry.orphans == (str(orphan),) and await store.stat(orphan) is not None
    report = await collect_garbage(store, index, grace=3600)
    assert report.orphans == (str(orphan),) and await store.stat(orphan) is None
    assert not partial.exists() and not leftover.exists() and fresh_partial.exists()
    assert all([await store.stat(d) is not None for d in kept.values()])
    assert (await verify(store, index)).ok


async def test_gc_adopts_a_referenced_file_without_a_row(data: Data) -> None:
    layout, store, index = data
    one = await _image(data, "one")
    await index.index.forget([str(one["manifest"]), str(one["layer"])])
    await index.set_tag("reg.test", "one", "1", str(one["manifest"]))  # forget dropped it
    for digest in one.values():
        _age(layout, digest, 7200)
    report = await collect_garbage(store, index, grace=3600)
    assert sorted(report.adopted) == sorted([str(one["manifest"]), str(one["layer"])])
    adopted = await index.get_object(str(one["manifest"]))
    assert adopted is not None and adopted.media_type == OCI_MANIFEST


async def test_prune_by_repo_and_age(data: Data) -> None:
    layout, store, index = data
    one, two = await _image(data, "one"), await _image(data, "two")
    for digest in (*one.values(), *two.values()):
        _age(layout, digest, 7200)
    report = await prune(store, index, older_than=None, patterns=["reg.test/one"], grace=60)
    assert set(report.removed) == {str(d) for d in one.values()}
    assert await index.index.get_tag("reg.test", "one", "1") is None
    assert await index.index.links_of("reg.test", "one") == []
    assert all([await store.stat(d) is not None for d in two.values()])
    report = await prune(store, index, older_than=3600, patterns=(), grace=60)
    assert set(report.removed) == {str(d) for d in two.values()}
    assert await index.index.all_tags() == []


# ------------------------------------------------------------------ the CLI


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    if args[:2] in (("cache", "verify"), ("cache", "gc"), ("cache", "prune")):
        # In this process: the default (low) would lower pytest's own priority for good.
        args = (*args, "--priority", "normal")
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_ls_du_verify_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    layout = Layout(tmp_path / "data")
    layout.create()

    async def prepare() -> dict[str, Digest]:
        index = IndexFront(await SqliteIndex.open(layout.index))
        try:
            return await _image((layout, FileBlobStore(layout), index), "one")
        finally:
            await index.index.close()

    one = asyncio.run(prepare())
    where = ["--data-dir", str(layout.root)]
    code, out, _ = _cli(capsys, "cache", "ls", *where, "--json")
    listed = json.loads(out)["images"]
    assert code == 0 and [(i["repository"], i["tag"], i["complete"]) for i in listed] == [
        ("one", "1", True)
    ]
    assert listed[0]["size"] == sum(layout.blob(d).stat().st_size for d in one.values())
    code, out, _ = _cli(capsys, "cache", "du", *where, "--json")
    assert code == 0 and json.loads(out)["upstreams"][0]["upstream"] == "reg.test"
    code, out, _ = _cli(capsys, "cache", "ls", *where)
    assert code == 0 and "one:1" in out and "complete" in out
    code, out, _ = _cli(capsys, "cache", "verify", *where)
    assert code == 0 and "checked 3 object(s)" in out
    layout.blob(one["config"]).write_bytes(b"tampered")
    code, out, err = _cli(capsys, "cache", "verify", *where)
    assert code == 1 and str(one["config"]) in out
    assert err.count("\n") == 1 and err.startswith("registry-cache: verify found 1 corrupt")


def test_cli_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _cli(capsys, "cache", "ls", "--data-dir", str(tmp_path / "nope"))
    assert (
        code == 1
        and err.strip()
        == f"registry-cache: data directory {tmp_path / 'nope'} (--data-dir {tmp_path / 'nope'}):"
        " does not exist"
    )
    code, _, err = _cli(capsys, "cache", "du", "--data-dir", str(tmp_path))
    assert code == 1 and "not a cache data directory" in err
    code, _, err = _cli(capsys, "cache", "prune", "--data-dir", str(tmp_path))
    assert code == 2 and "--older-than" in err
    code, _, err = _cli(capsys, "cache", "prune", "--data-dir", str(tmp_path), "--older-than", "x")
    assert code == 2 and "invalid duration" in err
