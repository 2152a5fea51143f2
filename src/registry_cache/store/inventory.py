"""What the cache holds, as plain data: snapshots of the index plus the manifest graph.

The rules are pure and unit-tested with hand-made snapshots: ``images`` (what
``cache ls`` shows), ``totals`` (``cache du``), ``referenced`` / ``plan_gc`` (what
``cache gc`` calls an orphan) and ``PruneRule`` (what ``cache prune`` selects).

A big cache is never loaded whole: the index stores what each manifest lists
(``Index.record_refs``, written when the manifest is stored), ``iter_images`` walks
the tags a page at a time and has the index compute what ``image`` would of each
(``Index.image_stats``), ``cache du`` has the index aggregate, and ``gc``/``verify``
go one fan-out directory (``fan_ranges``) at a time. Manifests stored by a release
before the index kept references are parsed from their files once
(``ensure_refs``); only when the index is read-only and some are still unknown do
``ls`` and ``du`` fall back to a whole ``load``. ``prune`` walks the objects in
least-recently-used order and stops at the first one too recent, or with ``--repo``
reads only the rows the matched repositories link (``chosen_objects``).

Definitions used throughout:

- an object is *cached* when the index has a row for it (the index and the files
  agree except transiently; ``cache verify`` checks that they do);
- an image is a tag (or a manifest a repository pulled by digest that no tag and
  no index names); its size is the bytes of its cached objects: the manifest, and
  for an image manifest its config and layers, for an index every *cached* child
  with its config and layers (platforms never pulled are not missing, just absent);
- an object is *referenced* when a tag names it, a repository link names it, or a
  stored manifest lists it (as config, layer or child).
"""

from __future__ import annotations

import asyncio
import fnmatch
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from ..digest import Digest
from ..errors import RegistryError
from ..index.base import (
    Cursor,
    ImageStats,
    Index,
    ManifestRefs,
    ObjectRow,
    TagEntry,
    TagKey,
    UntaggedManifest,
)
from ..mediatypes import referenced_digests
from .blobs import BlobStore
from .evict import Entry

Repo = tuple[str, str]  # (upstream, repository)
PAGE = 5000
IMAGE_PAGE = 2000  # images per query of their sizes (``iter_images``)
IMAGES_AHEAD = 2  # pages whose sizes are being asked for meanwhile (SQLite: two readers)
Refs = ManifestRefs  # what a stored manifest lists: blobs (config, layers) and children


@dataclass(frozen=True)
class Snapshot:
    objects: Mapping[str, ObjectRow]
    tags: Sequence[TagEntry] = ()
    links: Mapping[str, frozenset[Repo]] = field(default_factory=dict)
    refs: Mapping[str, Refs] = field(default_factory=dict)  # stored manifests only


@dataclass(frozen=True, slots=True)
class FileInfo:
    size: int
    mtime: float


async def all_objects(index: Index) -> list[ObjectRow]:
    """Every object row, least recently used first (page by page)."""
    rows: list[ObjectRow] = []
    cursor = None
    while page := await index.objects_page(cursor, PAGE):
        rows += page
        cursor = (page[-1].last_access, page[-1].digest)
    return rows


async def parse_refs(store: BlobStore, digest: str) -> Refs | None:
    """What a stored manifest lists, from its file; None when it cannot be read."""
    try:
        body = await store.read(Digest.parse(digest))
    except (OSError, RegistryError):
        return None  # a bad name or an unreadable file: nothing to follow
    if body is None:
        return None  # evicted under us
    blobs, children = referenced_digests(body)
    return Refs(tuple(dict.fromkeys(blobs)), tuple(dict.fromkeys(children)))


async def ensure_refs(index: Index, store: BlobStore, *, writable: bool = True) -> bool:
    """Record the references of stored manifests the index does not know yet (stored
    by an earlier release), parsing each file once. Returns whether the index now
    knows them all: not when it is read-only (``writable`` False) and some are
    unknown (the caller then uses ``load``)."""
    if not writable:
        return not await index.unparsed_manifests(None, 1)
    after = None
    while names := await index.unparsed_manifests(after, PAGE):
        found = {}
        for digest in names:
            refs = await parse_refs(store, digest)
            if refs is not None:
                found[digest] = refs
        await index.record_refs(found)
        after = names[-1]
    return True


async def load(index: Index, store: BlobStore, rows: Sequence[ObjectRow] | None = None) -> Snapshot:
    """The whole index and every stored manifest's references, in memory (``ls``/``du``
    on a read-only index with manifests of an earlier release).
    ``rows``: the objects to look at instead of the local tier's (the bucket's, for
    ``cache``: manifests the index has no references of are read from ``store``)."""
    objects = {row.digest: row for row in (await all_objects(index) if rows is None else rows)}
    tags = await index.all_tags()
    links: dict[str, set[Repo]] = {}
    for upstream, repo in await index.repositories():
        for digest in await index.links_of(upstream, repo):
            links.setdefault(digest, set()).add((upstream, repo))
    manifests = [d for d, row in objects.items() if row.media_type is not None]
    refs: dict[str, Refs] = {}
    for start in range(0, len(manifests), PAGE):
        refs.update(await index.refs_of(manifests[start : start + PAGE]))
    for digest in manifests:
        if digest not in refs:
            parsed = await parse_refs(store, digest)
            if parsed is not None:
                refs[digest] = parsed
    return Snapshot(objects, tags, {d: frozenset(r) for d, r in links.items()}, refs)


def _sort_key(item: TagEntry | UntaggedManifest) -> tuple[str, str, bool, str]:
    """The order of ``images``: tags of a repository first, then its digest-only ones."""
    if isinstance(item, TagEntry):
        return item.upstream, item.repo, False, item.tag
    return item.upstream, item.repo, True, item.digest


async def iter_images(
    index: Index, page: int = IMAGE_PAGE, ahead: int = IMAGES_AHEAD
) -> AsyncGenerator[Image, None]:
    """``images`` of the whole cache, in its order, a page of tags at a time, the
    index computing each page's sizes (``Index.image_stats``; ``ensure_refs`` first:
    they follow the references the index recorded). The sizes of up to ``ahead``
    pages more are being computed while one is consumed: the database works while
    the output is written."""
    pages = _image_pages(index, page)
    pending: deque[tuple[list[ImageItem], asyncio.Future[dict[str, ImageStats]]]] = deque()
    more = True

    async def ask() -> None:
        nonlocal more
        while more and len(pending) <= ahead:
            items = await anext(pages, None)
            if items is None:
                more = False
                return
            pending.append((items, asyncio.ensure_future(_stats(index, items))))

    try:
        await ask()
        while pending:
            items, stats = pending.popleft()
            found = await stats
            await ask()
            for item in items:
                yield _image_of(item, found[item.digest])
    finally:
        for _, stats in pending:
            stats.cancel()
        await asyncio.gather(*(stats for _, stats in pending), return_exceptions=True)
        await pages.aclose()


async def _stats(index: Index, items: Sequence[ImageItem]) -> dict[str, ImageStats]:
    return await index.image_stats([i.digest for i in items])


ImageItem = TagEntry | UntaggedManifest


async def _image_pages(index: Index, page: int) -> AsyncGenerator[list[ImageItem], None]:
    """Tags, with the manifests pulled by digest only merged in, ``page`` at a time."""
    untagged = deque(await index.untagged_manifests())
    after = None
    while True:
        tags = await index.tags_page(after, page)
        batch: list[ImageItem] = []
        for tag in tags:
            while untagged and _sort_key(untagged[0]) < _sort_key(tag):
                batch.append(untagged.popleft())
            batch.append(tag)
        if not tags:
            batch += untagged
            untagged.clear()
        for start in range(0, len(batch), page):
            yield batch[start : start + page]
        if not tags:
            return
        after = (tags[-1].upstream, tags[-1].repo, tags[-1].tag)


def _image_of(item: ImageItem, stats: ImageStats) -> Image:
    if isinstance(item, TagEntry):
        tag: str | None = item.tag
        last = item.last_pulled
    else:
        tag, last = None, item.last_access
    return Image(
        upstream=item.upstream,
        repo=item.repo,
        tag=tag,
        digest=item.digest,
        media_type=stats.media_type,
        size=stats.size,
        objects=stats.objects,
        missing=stats.missing,
        platforms=stats.platforms,
        platforms_cached=stats.platforms_cached,
        last_pulled=last,
    )


# --------------------------------------------------------------------- images


@dataclass(frozen=True, slots=True)
class Image:
    upstream: str
    repo: str
    tag: str | None  # None: pulled by digest only
    digest: str
    media_type: str | None
    size: int  # bytes of the cached objects (see module doc)
    objects: int
    missing: int  # blobs the cached manifests list that are not cached
    platforms: int  # children of an index (0 for an image manifest)
    platforms_cached: int
    last_pulled: float

    @property
    def cached(self) -> bool:
        return self.objects > 0

    @property
    def complete(self) -> bool:
        return self.cached and self.missing == 0

    @property
    def name(self) -> str:
        return f"{self.repo}:{self.tag}" if self.tag else f"{self.repo}@{self.digest}"


def closure(snap: Snapshot, root: str) -> tuple[set[str], set[str], int, int]:
    """(cached objects, missing blobs, children, cached children) of the image at ``root``."""
    present: set[str] = set()
    missing: set[str] = set()
    children = cached_children = 0
    if root not in snap.objects:
        return present, missing, 0, 0
    stack = [root]
    while stack:
        digest = stack.pop()
        if digest in present:
            continue
        present.add(digest)
        refs = snap.refs.get(digest)
        if refs is None:
            continue
        for blob in refs.blobs:
            (present if blob in snap.objects else missing).add(blob)
        for child in refs.children:
            if digest == root:
                children += 1
                cached_children += child in snap.objects
            if child in snap.objects:
                stack.append(child)
    return present, missing, children, cached_children


def image(snap: Snapshot, repo: Repo, tag: str | None, digest: str, *, last_pulled: float) -> Image:
    present, missing, children, cached_children = closure(snap, digest)
    row = snap.objects.get(digest)
    return Image(
        upstream=repo[0],
        repo=repo[1],
        tag=tag,
        digest=digest,
        media_type=row.media_type if row else None,
        size=sum(snap.objects[d].size for d in present),
        objects=len(present),
        missing=len(missing),
        platforms=children,
        platforms_cached=cached_children,
        last_pulled=last_pulled,
    )


def images(snap: Snapshot) -> list[Image]:
    """Every tag, plus manifests pulled by digest only, sorted by upstream, repo, name."""
    found = [
        image(snap, (t.upstream, t.repo), t.tag, t.digest, last_pulled=t.last_pulled)
        for t in snap.tags
    ]
    tagged = {(t.upstream, t.repo, t.digest) for t in snap.tags}
    children = {c for refs in snap.refs.values() for c in refs.children}
    for digest, row in snap.objects.items():
        if row.media_type is None or digest in children:
            continue
        for holder in sorted(snap.links.get(digest, ())):
            if (*holder, digest) not in tagged:
                found.append(image(snap, holder, None, digest, last_pulled=row.last_access))
    return sorted(found, key=lambda i: (i.upstream, i.repo, i.tag is None, i.tag or i.digest))


# --------------------------------------------------------------------- totals


@dataclass(frozen=True, slots=True)
class UpstreamTotals:
    upstream: str
    repos: int
    tags: int
    objects: int
    bytes: int  # each object once, however many of its repositories hold it


@dataclass(frozen=True, slots=True)
class Totals:
    upstreams: tuple[UpstreamTotals, ...]
    objects: int
    bytes: int
    shared_objects: int  # held by more than one repository (stored once)
    shared_bytes: int
    unreferenced_objects: int  # see ``referenced``: what ``cache gc`` removes
    unreferenced_bytes: int


def referenced(snap: Snapshot) -> set[str]:
    """Digests a tag, a repository link or a stored manifest names."""
    names = {t.digest for t in snap.tags} | set(snap.links)
    for refs in snap.refs.values():
        names.update(refs.blobs)
        names.update(refs.children)
    return names


def totals(snap: Snapshot) -> Totals:
    owners: dict[str, set[str]] = {}  # upstream -> digests
    repos: dict[str, set[str]] = {}
    tags: dict[str, int] = {}
    for digest, holders in snap.links.items():
        for upstream, repo in holders:
            repos.setdefault(upstream, set()).add(repo)
            if digest in snap.objects:
                owners.setdefault(upstream, set()).add(digest)
    for t in snap.tags:
        repos.setdefault(t.upstream, set()).add(t.repo)
        tags[t.upstream] = tags.get(t.upstream, 0) + 1
        if t.digest in snap.objects:
            owners.setdefault(t.upstream, set()).add(t.digest)
    rows = tuple(
        UpstreamTotals(
            upstream=name,
            repos=len(repos.get(name, ())),
            tags=tags.get(name, 0),
            objects=len(owners.get(name, ())),
            bytes=sum(snap.objects[d].size for d in owners.get(name, ())),
        )
        for name in sorted(repos)
    )
    shared = [d for d, holders in snap.links.items() if d in snap.objects and len(holders) > 1]
    names = referenced(snap)
    loose = [d for d in snap.objects if d not in names]
    return Totals(
        upstreams=rows,
        objects=len(snap.objects),
        bytes=sum(r.size for r in snap.objects.values()),
        shared_objects=len(shared),
        shared_bytes=sum(snap.objects[d].size for d in shared),
        unreferenced_objects=len(loose),
        unreferenced_bytes=sum(snap.objects[d].size for d in loose),
    )


# ------------------------------------------------------------------------- gc


@dataclass(frozen=True, slots=True)
class GcPlan:
    orphans: tuple[str, ...]  # unreferenced objects (file and/or row) to delete
    adopt: tuple[str, ...]  # referenced files without a row: index them
    missing: tuple[str, ...]  # rows (and tags) whose file is gone: drop them


def plan_gc(
    snap: Snapshot,
    files: Mapping[str, FileInfo],
    *,
    now: float,
    grace: float,
    busy: Collection[str] = frozenset(),
) -> GcPlan:
    """Decide from a snapshot (rows read *before* ``files`` was listed; see maintenance.gc).

    Nothing written or accessed within ``grace`` and nothing with a fill in flight
    (``busy``) is touched: a fill commits its file a moment before its row appears.
    """
    return plan_gc_part(
        snap.objects,
        referenced(snap),
        {t.digest for t in snap.tags},
        files,
        now=now,
        grace=grace,
        busy=busy,
    )


def plan_gc_part(
    objects: Mapping[str, ObjectRow],
    names: Collection[str],
    tagged: Collection[str],
    files: Mapping[str, FileInfo],
    *,
    now: float,
    grace: float,
    busy: Collection[str] = frozenset(),
) -> GcPlan:
    """``plan_gc`` over a part of the digests (one fan-out directory): its rows, the
    digests of the part that are ``referenced`` (``names``) or tagged, and its files."""
    recent = now - grace
    orphans: list[str] = []
    adopt: list[str] = []
    for digest, info in files.items():
        row = objects.get(digest)
        if digest in busy or info.mtime > recent or (row and row.last_access > recent):
            continue
        if digest not in names:
            orphans.append(digest)
        elif row is None:
            adopt.append(digest)
    orphans += [d for d in objects if d not in files and d not in names and d not in busy]
    missing = {d for d in objects if d not in files and d in names and d not in busy}
    missing |= {d for d in tagged if d not in files and d not in busy}
    return GcPlan(tuple(sorted(orphans)), tuple(sorted(adopt)), tuple(sorted(missing)))


# ---------------------------------------------------------------------- prune


@dataclass(frozen=True, slots=True)
class Chosen:
    """An object ``cache prune`` removes, with the repositories linked to it (known only
    with ``--repo``: they lose their link to it)."""

    entry: Entry
    holders: frozenset[Repo] = frozenset()


def repo_matches(repo: Repo, patterns: Sequence[str]) -> bool:
    """Shell-style match against ``upstream/repo`` or ``repo`` (``docker.io/library/*``)."""
    upstream, name = repo
    return any(
        fnmatch.fnmatchcase(f"{upstream}/{name}", p) or fnmatch.fnmatchcase(name, p)
        for p in patterns
    )


@dataclass(frozen=True, slots=True)
class PruneRule:
    """What ``cache prune`` selects.

    ``older_than``: tags not pulled and objects not accessed for that long (object
    level, like ``--max-age``). ``patterns``: only tags of matching repositories, and
    only objects every holder of which matches (an object another repository also
    holds stays). Both: both conditions. Objects accessed within ``grace`` stay.
    """

    now: float
    older_than: float | None = None
    patterns: tuple[str, ...] = ()
    grace: float = 0.0

    def matches(self, repo: Repo) -> bool:
        return repo_matches(repo, self.patterns)

    def takes_tag(self, tag: TagEntry) -> bool:
        if self.patterns and not self.matches((tag.upstream, tag.repo)):
            return False
        return self.older_than is None or tag.last_pulled < self.now - self.older_than

    def too_recent(self, row: ObjectRow) -> bool:
        """Used within ``grace`` or ``older_than``: in least-recently-used order, every
        row after this one is too."""
        if row.last_access > self.now - self.grace:
            return True
        return self.older_than is not None and row.last_access >= self.now - self.older_than

    def takes_object(self, row: ObjectRow, holders: Collection[Repo]) -> bool:
        if self.too_recent(row):
            return False
        return not self.patterns or (bool(holders) and all(self.matches(r) for r in holders))


RowPage = Callable[[Cursor | None, int], Awaitable[list[ObjectRow]]]
RowsOf = Callable[[Sequence[str]], Awaitable[list[ObjectRow]]]
# With --repo, a matched repository's objects are looked up by their links when they
# are at most this many (~30 MB held); more, and the index is walked instead.
CANDIDATES = 150_000


async def chosen_tags(index: Index, rule: PruneRule) -> list[TagEntry]:
    """The tags ``rule`` takes, a page of the index at a time."""
    chosen: list[TagEntry] = []
    after: TagKey | None = None
    while page := await index.tags_page(after, PAGE):
        chosen += [t for t in page if rule.takes_tag(t)]
        last = page[-1]
        after = (last.upstream, last.repo, last.tag)
    return chosen


async def chosen_objects(
    index: Index,
    rows_page: RowPage,
    rule: PruneRule,
    *,
    rows_of: RowsOf | None = None,
    candidates: int = CANDIDATES,
) -> AsyncGenerator[list[Chosen], None]:
    """The objects ``rule`` takes, a page at a time, least recently used first.

    ``rows_page``: the tier's rows in that order (``Index.objects_page``, or
    ``shared_page`` for the bucket). The walk stops at the first row too recent (with
    ``--older-than`` only the old end of the index is read) and asks for holders only
    with ``--repo``, so memory holds a page, never the index. The caller may delete a
    page's objects before asking for the next: the cursor is past them.

    With ``--repo`` and ``rows_of`` (the tier's rows by digest: ``Index.get_objects``)
    only what a matched repository links is read, when that is at most ``candidates``
    objects: an object every holder of which matches has at least one matched holder.
    Pruning one team's repositories then reads their rows, not the whole index (and a
    pattern that matches nothing reads nothing).
    """
    if rule.patterns and rows_of is not None:
        keys = await _by_links(index, rows_of, rule, candidates)
        if keys is not None:
            async for taken in _chosen_among(index, rows_of, rule, keys):
                yield taken
            return
    cursor: Cursor | None = None
    while page := await rows_page(cursor, PAGE):
        cursor = (page[-1].last_access, page[-1].digest)
        young = next((n for n, row in enumerate(page) if rule.too_recent(row)), None)
        rows = page if young is None else page[:young]
        chosen = await _chosen_of(index, rule, rows)
        if chosen:
            yield chosen
        if young is not None:
            return


async def _chosen_of(index: Index, rule: PruneRule, rows: Sequence[ObjectRow]) -> list[Chosen]:
    holders = await index.holders([r.digest for r in rows]) if rule.patterns and rows else {}
    return [
        Chosen(Entry(r.digest, r.size, r.last_access), linked)
        for r in rows
        if rule.takes_object(r, linked := holders.get(r.digest, frozenset()))
    ]


async def _by_links(
    index: Index, rows_of: RowsOf, rule: PruneRule, most: int
) -> list[tuple[float, str]] | None:
    """(last access, digest) of what the repositories ``rule`` matches link to, least
    recently used first; None when that is over ``most`` objects. Only those pairs are
    held (about 200 bytes an object), the digest strings the links gave."""
    found: set[str] = set()
    for upstream, repo in await index.repositories():
        if rule.matches((upstream, repo)):
            found.update(await index.links_of(upstream, repo))
            if len(found) > most:
                return None
    keys: list[tuple[float, str]] = []
    while found:
        chunk = [found.pop() for _ in range(min(PAGE, len(found)))]
        accessed = {r.digest: r.last_access for r in await rows_of(chunk) if not rule.too_recent(r)}
        keys += [(accessed[d], d) for d in chunk if d in accessed]
    keys.sort()
    return keys


async def _chosen_among(
    index: Index, rows_of: RowsOf, rule: PruneRule, keys: Sequence[tuple[float, str]]
) -> AsyncGenerator[list[Chosen], None]:
    for start in range(0, len(keys), PAGE):
        # Read again just before the page goes: what was used meanwhile stays, as in
        # the walk (whose rows are read a page at a time).
        batch = [d for _, d in keys[start : start + PAGE]]
        now = {r.digest: r for r in await rows_of(batch)}
        current = [now[d] for d in batch if d in now]  # takes_object: not too recent
        chosen = await _chosen_of(index, rule, current)
        if chosen:
            yield chosen
