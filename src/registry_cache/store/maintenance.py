"""``cache ls``/``du`` (``list_images``, ``disk_usage``), ``gc``, ``verify`` and ``prune``:
safe while the server runs.

Every deletion happens under ``DATA/evict.lock`` (the lock eviction takes), so at
most one process deletes at a time and rows never disappear between a read and
the check of their file. Fills are left alone: anything with a file under
``fills/`` is pinned (``evict.in_flight``) and files under ``blobs/`` are
immutable once published, so verify never reads an object that is being written.

A big cache is gone through a few fan-out directories of ``blobs/`` at a time
(``fan_ranges``): the index's rows of that digest range, then the directories'
files, so memory holds about 20,000 entries, never every row or file; ``prune``
walks the rows oldest first a page at a time, or with ``--repo`` reads what the
matched repositories link (``inventory.chosen_objects``).

Garbage (``gc``), each only when older than ``grace``:

- *orphans*: objects (file and/or row) that no tag, repository link or stored
  manifest names (``inventory.referenced``);
- rows (and tags) whose file is gone; referenced files without a row are *adopted*
  (indexed) rather than deleted, since they are valid, verified content;
- leftover temporary files (``tmp/``, ``fills/*.tmp``), size notes without their
  partial, and partials nobody holds the lock on (a crashed fill; resumable, which
  is why they are kept for ``grace``) or whose blob was committed meanwhile.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

from ..digest import Digest
from ..errors import RegistryError
from ..index.base import ObjectRow, TagEntry
from ..index.front import IndexFront
from ..mediatypes import manifest_media_type, referenced_digests
from .blobs import FileBlobStore
from .evict import evict_lock, forget, in_flight, remove_objects
from .inventory import (
    Chosen,
    FileInfo,
    Image,
    PruneRule,
    Refs,
    Totals,
    UpstreamTotals,
    chosen_objects,
    chosen_tags,
    ensure_refs,
    images,
    iter_images,
    load,
    plan_gc_part,
    totals,
)
from .layout import Layout

LOCK_WAIT = 30.0
RANGE_ROWS = 20_000  # index rows per digest range (fan_ranges)
_SHA256_HEX = re.compile(r"[a-f0-9]{64}")  # what Digest.parse accepts for sha256
CHUNK = 1 << 20
HASH_BATCH = 256  # files per thread hop in verify
PROGRESS_STEP = 8 << 20


class MaintenanceBusy(Exception):
    """Another process held ``evict.lock`` for too long."""


def _locked(layout: Layout) -> AbstractAsyncContextManager[bool]:
    return evict_lock(layout, LOCK_WAIT)


def scan_files(layout: Layout) -> dict[str, FileInfo]:
    """Every file under ``blobs/`` named like a digest, with size and mtime."""
    found: dict[str, FileInfo] = {}
    root = layout.blobs
    for algorithm in sorted(root.iterdir()) if root.is_dir() else ():
        for fan in sorted(algorithm.iterdir()) if algorithm.is_dir() else ():
            for entry in os.scandir(fan):
                digest = Layout.digest_of_blob_path(Path(entry.path))
                if digest is None:
                    continue
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    continue
                found[str(digest)] = FileInfo(st.st_size, st.st_mtime)
    return found


@dataclass(frozen=True, slots=True)
class FanRange:
    """Digests ``lo <= d < hi`` (``hi`` None: no end) and the fan-out directories whose
    files are all in the range (none for a range between directories)."""

    lo: str
    hi: str | None
    paths: tuple[Path, ...] = ()


def fan_ranges(layout: Layout, *, rows: int = 0, per_range: int = RANGE_ROWS) -> list[FanRange]:
    """The digest key space cut at fan-out directories (``blobs/sha256/ab`` starts the
    range ``sha256:ab``): every row falls in exactly one range, and every file of a
    directory in that directory's range. With ``rows`` (the index's count) several
    directories share a range, about ``per_range`` rows each: one query per range."""
    fans: list[tuple[str, Path]] = []
    root = layout.blobs
    for algorithm in root.iterdir() if root.is_dir() else ():
        if algorithm.is_dir():
            fans += [(f"{algorithm.name}:{fan.name}", fan) for fan in algorithm.iterdir()]
    fans.sort()
    step = max(1, per_range * len(fans) // rows) if rows else 1
    ranges = [FanRange("", fans[0][0] if fans else None)]
    for start in range(0, len(fans), step):
        group = fans[start : start + step]
        hi = fans[start + step][0] if start + step < len(fans) else None
        ranges.append(FanRange(group[0][0], hi, tuple(path for _, path in group)))
    return ranges


async def _ranges(layout: Layout, index: IndexFront) -> list[FanRange]:
    rows = await index.index.count_objects()
    return await asyncio.to_thread(lambda: fan_ranges(layout, rows=rows))


def _blob_entries(part: FanRange) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """(digest, entry) of each file in a range's directories that is where the cache
    would look for it (a file named for another directory is not)."""
    for path in part.paths:
        prefix = f"{path.parent.name}:"
        try:
            entries = list(os.scandir(path))
        except FileNotFoundError:
            continue
        sha256 = prefix == "sha256:"
        for entry in entries:
            name = entry.name
            if not name.startswith(path.name):
                continue
            if sha256 and _SHA256_HEX.fullmatch(name):  # the common case, without parse
                yield prefix + name, entry
                continue
            try:
                digest = str(Digest.parse(prefix + name))
            except RegistryError:
                continue
            yield digest, entry


def fan_names(part: FanRange) -> list[str]:
    """Digests of the files in a range's directories, sorted (no stat)."""
    return sorted(digest for digest, _ in _blob_entries(part))


def scan_fan(layout: Layout, part: FanRange) -> dict[str, FileInfo]:
    """``scan_files`` for one range's directories."""
    found: dict[str, FileInfo] = {}
    for digest, entry in sorted(_blob_entries(part), key=lambda item: item[0]):
        try:
            st = entry.stat()
        except FileNotFoundError:
            continue
        found[digest] = FileInfo(st.st_size, st.st_mtime)
    return found


def _blob_stat(layout: Layout, digest: str) -> os.stat_result | None:
    try:
        return os.stat(layout.blob_str(Digest.parse(digest)))
    except FileNotFoundError:
        return None


@dataclass(frozen=True, slots=True)
class SideUsage:
    """What ``cache du`` shows beside the objects: fills' partial files, the quarantine,
    and the file system the data directory lives on."""

    partials: tuple[int, int]  # (files, bytes)
    quarantine: tuple[int, int]
    disk_used: int
    disk_size: int


def side_usage(store: FileBlobStore) -> SideUsage:
    layout = store.layout
    st = os.statvfs(layout.root)
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    return SideUsage(
        dir_bytes(layout.fills),
        dir_bytes(layout.quarantine),
        used,
        used + st.f_bavail * st.f_frsize,
    )


def dir_bytes(path: Path) -> tuple[int, int]:
    """(files, bytes) directly under ``path``."""
    count = size = 0
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return 0, 0
    for entry in entries:
        try:
            size += entry.stat().st_size
            count += 1
        except FileNotFoundError:
            pass
    return count, size


# --------------------------------------------------------------------- ls, du


async def list_images(
    store: FileBlobStore, index: IndexFront, *, writable: bool = True
) -> AsyncIterator[Image]:
    """``cache ls``: every image in ``images`` order, without loading the index whole."""
    if await ensure_refs(index.index, store, writable=writable):
        async for found in iter_images(index.index):
            yield found
        return
    for found in images(await load(index.index, store)):
        yield found


@dataclass(frozen=True, slots=True)
class DiskUsage:
    totals: Totals
    unindexed_files: int  # verified files without a row (``cache gc`` adopts or removes)
    unindexed_bytes: int


async def disk_usage(
    store: FileBlobStore, index: IndexFront, *, writable: bool = True
) -> DiskUsage:
    """``cache du``: the index aggregates; what nothing names, and the files without a
    row, come from one fan-out directory at a time."""
    layout = store.layout
    if not await ensure_refs(index.index, store, writable=writable):
        snap = await load(index.index, store)
        files = await asyncio.to_thread(scan_files, layout)
        stray = [f.size for d, f in files.items() if d not in snap.objects]
        return DiskUsage(totals(snap), len(stray), sum(stray))
    # The aggregates run beside the walk: the index (SQLite's second reader thread,
    # another pooled PostgreSQL connection) works while directories are listed.
    summary = asyncio.ensure_future(index.index.usage_summary())
    try:
        loose = loose_bytes = stray_files = stray_bytes = 0
        for part in await _ranges(layout, index):
            found, names = await asyncio.gather(
                index.index.range_usage(part.lo, part.hi), asyncio.to_thread(fan_names, part)
            )
            loose += found.unreferenced_objects
            loose_bytes += found.unreferenced_bytes
            rows = set(found.digests)
            sizes = await asyncio.to_thread(_sizes, layout, [d for d in names if d not in rows])
            stray_files += len(sizes)
            stray_bytes += sum(sizes)
        summed = await summary
    finally:
        summary.cancel()
    sums = Totals(
        upstreams=tuple(
            UpstreamTotals(u.upstream, u.repos, u.tags, u.objects, u.bytes)
            for u in summed.upstreams
        ),
        objects=summed.objects,
        bytes=summed.bytes,
        shared_objects=summed.shared_objects,
        shared_bytes=summed.shared_bytes,
        unreferenced_objects=loose,
        unreferenced_bytes=loose_bytes,
    )
    return DiskUsage(sums, stray_files, stray_bytes)


def _sizes(layout: Layout, digests: Sequence[str]) -> list[int]:
    return [st.st_size for d in digests if (st := _blob_stat(layout, d)) is not None]


# ------------------------------------------------------------------------- gc


@dataclass(frozen=True, slots=True)
class GcReport:
    orphans: tuple[str, ...]
    orphan_bytes: int
    adopted: tuple[str, ...]
    missing: tuple[str, ...]
    files: tuple[str, ...]  # temporary files, partials and notes removed (names)
    file_bytes: int
    dry_run: bool


async def collect_garbage(
    store: FileBlobStore, index: IndexFront, *, grace: float, dry_run: bool = False
) -> GcReport:
    layout = store.layout
    async with _locked(layout) as held:
        if not held:
            raise MaintenanceBusy(f"{layout.evict_lock} is held by another process")
        now = time.time()
        await ensure_refs(index.index, store)
        busy = in_flight(layout)
        orphans: list[str] = []
        adopt: list[str] = []
        missing: list[str] = []
        orphan_bytes = 0
        adopt_files: dict[str, FileInfo] = {}
        for part in await _ranges(layout, index):
            # Rows before files: a row is only ever written after its file, so a row
            # read now whose file is absent later was really deleted, not yet to come.
            found = await index.index.digest_range(part.lo, part.hi)
            files = await asyncio.to_thread(scan_fan, layout, part)
            rows = {row.digest: row for row in found.objects}
            plan = plan_gc_part(
                rows, found.referenced, found.tagged, files, now=now, grace=grace, busy=busy
            )
            orphans += plan.orphans
            adopt += plan.adopt
            missing += plan.missing
            orphan_bytes += sum(files[d].size if d in files else rows[d].size for d in plan.orphans)
            adopt_files |= {d: files[d] for d in plan.adopt}
        if not dry_run:
            await asyncio.to_thread(lambda: [store.delete_now(Digest.parse(d)) for d in orphans])
            await forget(index, store, [*orphans, *missing])
            await _adopt(index, store, adopt, adopt_files)
            await index.index.prune_refs()  # of manifests evicted since the last gc
        removed, removed_bytes = await asyncio.to_thread(
            clean_leftovers, layout, store, now, grace, dry_run
        )
    return GcReport(
        tuple(sorted(orphans)),
        orphan_bytes,
        tuple(sorted(adopt)),
        tuple(sorted(missing)),
        removed,
        removed_bytes,
        dry_run,
    )


async def _adopt(
    index: IndexFront, store: FileBlobStore, digests: Sequence[str], files: dict[str, FileInfo]
) -> None:
    rows = []
    refs: dict[str, Refs] = {}
    for text in digests:
        info = files[text]
        media_type = None
        if info.size <= 4 << 20:  # could be a manifest: keep what the proxy needs to serve it
            try:
                body = await store.read(Digest.parse(text))
            except OSError:
                continue
            if body is None:
                continue
            guess = manifest_media_type(body, None)
            if guess != "application/octet-stream" and body.lstrip()[:1] == b"{":
                media_type = guess
                blobs, children = referenced_digests(body)
                refs[text] = Refs(tuple(dict.fromkeys(blobs)), tuple(dict.fromkeys(children)))
        rows.append(ObjectRow(text, info.size, media_type, info.mtime, info.mtime))
    if rows:
        await index.index.adopt_objects(rows)
        await index.index.record_refs(refs)


def clean_leftovers(
    layout: Layout, store: FileBlobStore, now: float, grace: float, dry_run: bool = False
) -> tuple[tuple[str, ...], int]:
    """Remove temp files, orphan size notes and unlocked partials older than ``grace``.

    A partial younger than that is kept: the next fill of its digest re-hashes and
    resumes it. One whose blob is already committed goes whatever its age.
    """
    removed: list[str] = []
    size = 0
    candidates = [*_entries(layout.tmp), *_entries(layout.fills)]
    for path in candidates:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue
        old = st.st_mtime < now - grace
        if path.parent == layout.tmp or path.name.endswith(".tmp"):
            doomed = old
        elif path.suffix == ".size":
            doomed = old and not path.with_suffix(".partial").exists()
        elif path.suffix == ".partial":
            digest = Layout.digest_of_fill_path(path)
            committed = digest is not None and store.stat_now(digest) is not None
            doomed = (old or committed) and _unlocked(path)
        else:
            doomed = False
        if doomed:
            if not dry_run:
                _unlink(path)
            removed.append(f"{path.parent.name}/{path.name}")
            size += st.st_size
    return tuple(removed), size


def _entries(path: Path) -> list[Path]:
    try:
        return sorted(path.iterdir())
    except FileNotFoundError:
        return []


def _unlocked(path: Path) -> bool:
    """Nobody fills it (a filler holds an exclusive flock for the whole fill)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# --------------------------------------------------------------------- verify


@dataclass(frozen=True, slots=True)
class VerifyReport:
    checked: int
    bytes: int
    corrupt: tuple[str, ...]  # quarantined
    missing: tuple[str, ...]  # rows whose file was gone (dropped)
    vanished: int  # evicted while we looked

    @property
    def ok(self) -> bool:
        return not self.corrupt and not self.missing


async def verify(
    store: FileBlobStore,
    index: IndexFront,
    *,
    on_bytes: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    parallel: int = 2,
) -> VerifyReport:
    """Re-hash every object under ``blobs/``; quarantine the ones whose bytes are wrong.

    Hashing runs without the lock (it may take long), ``parallel`` batches of files at
    a time on threads (hashlib releases the GIL; a batch is one thread hop for many
    small files), one fan-out directory after another; each quarantine, and the final
    check of rows against files, take it. ``on_total`` costs a first walk (a stat per
    file), so give it only when a progress bar shows it.
    """
    layout = store.layout
    if on_total is not None:
        on_total(await asyncio.to_thread(lambda: sum(size for _, size in store.walk_now())))
    corrupt: list[str] = []
    checked = total = vanished = 0
    loop = asyncio.get_running_loop()

    def progress(count: int) -> None:
        if on_bytes is not None:
            loop.call_soon_threadsafe(on_bytes, count)

    ranges = await _ranges(layout, index)
    workers = max(1, parallel)
    batches: asyncio.Queue[list[Digest] | None] = asyncio.Queue(maxsize=2 * workers)

    async def produce() -> None:
        for part in ranges:
            names = await asyncio.to_thread(fan_names, part)
            for start in range(0, len(names), HASH_BATCH):
                await batches.put([Digest.parse(d) for d in names[start : start + HASH_BATCH]])
        for _ in range(workers):
            await batches.put(None)

    async def work() -> None:
        nonlocal checked, total, vanished
        while (batch := await batches.get()) is not None:
            results = await asyncio.to_thread(_hash_batch, layout, batch, progress)
            for digest, result in zip(batch, results, strict=True):
                if result is None:
                    vanished += 1
                    continue
                actual, size, inode = result
                checked += 1
                total += size
                if actual != digest.hex and await _quarantine(layout, index, store, digest, inode):
                    corrupt.append(str(digest))

    await asyncio.gather(produce(), *(work() for _ in range(workers)))
    missing: list[str] = []
    async with _locked(layout) as held:
        if not held:
            raise MaintenanceBusy(f"{layout.evict_lock} is held by another process")
        busy = in_flight(layout)
        for part in ranges:
            rows = (await index.index.digest_range(part.lo, part.hi)).objects  # before files
            present = set(await asyncio.to_thread(fan_names, part))
            missing += [
                row.digest
                for row in rows
                if row.digest not in busy and row.digest not in present and _parses(row.digest)
            ]
        await forget(index, store, missing)
    return VerifyReport(checked, total, tuple(sorted(corrupt)), tuple(missing), vanished)


def _hash_batch(
    layout: Layout, digests: Sequence[Digest], progress: Callable[[int], None]
) -> list[tuple[str, int, int] | None]:
    """``_hash_file`` over a batch; progress reported per PROGRESS_STEP bytes, not per
    file (a million small files would otherwise be a million loop wake-ups)."""
    pending = 0

    def add(count: int) -> None:
        nonlocal pending
        pending += count
        if pending >= PROGRESS_STEP:
            progress(pending)
            pending = 0

    results = [_hash_file(layout, digest, add) for digest in digests]
    if pending:
        progress(pending)
    return results


def _hash_file(
    layout: Layout, digest: Digest, progress: Callable[[int], None]
) -> tuple[str, int, int] | None:
    """(hex digest, size, inode) of a blob file, None when it vanished."""
    try:
        handle = open(layout.blob_str(digest), "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return None
    size = 0
    with handle:
        hasher = digest.hasher()
        while chunk := handle.read(CHUNK):
            hasher.update(chunk)
            size += len(chunk)
            progress(len(chunk))
        inode = os.fstat(handle.fileno()).st_ino
    return hasher.hexdigest(), size, inode


def _parses(text: str) -> bool:
    try:
        Digest.parse(text)
    except RegistryError:
        return False
    return True


async def _quarantine(
    layout: Layout, index: IndexFront, store: FileBlobStore, digest: Digest, inode: int
) -> bool:
    async with _locked(layout) as held:
        if not held:
            raise MaintenanceBusy(f"{layout.evict_lock} is held by another process")
        path = layout.blob(digest)
        try:
            if os.stat(path).st_ino != inode:
                return False  # replaced (evicted and filled again) since we read it
        except FileNotFoundError:
            return False
        layout.quarantine.mkdir(parents=True, exist_ok=True)
        os.replace(path, layout.quarantined(digest))
        await forget(index, store, [str(digest)])
    return True


# ---------------------------------------------------------------------- prune


@dataclass(frozen=True, slots=True)
class PruneReport:
    tags: tuple[TagEntry, ...]
    removed: tuple[str, ...]  # digests, least recently used first
    freed: int  # bytes
    kept: int  # selected but pinned (in use or too recent)
    dry_run: bool


async def prune(
    store: FileBlobStore,
    index: IndexFront,
    *,
    older_than: float | None,
    patterns: Sequence[str],
    grace: float,
    dry_run: bool = False,
) -> PruneReport:
    """See ``inventory.PruneRule``; a matched repository also loses its links to the
    objects removed, and without ``older_than`` all of them (it is forgotten). Objects
    go a page at a time as ``inventory.chosen_objects`` finds them."""
    layout = store.layout
    async with _locked(layout) as held:
        if not held:
            raise MaintenanceBusy(f"{layout.evict_lock} is held by another process")
        rule = PruneRule(time.time(), older_than, tuple(patterns), grace)
        # Before any object goes: forgetting a manifest also drops the tags naming it.
        tags = await chosen_tags(index.index, rule)
        removed: list[str] = []
        freed = kept = 0
        async for page in chosen_objects(
            index.index, index.index.objects_page, rule, rows_of=index.index.get_objects
        ):
            if dry_run:
                removed += [c.entry.digest for c in page]
                freed += sum(c.entry.size for c in page)
                continue
            gone = await remove_objects(store, index, [c.entry for c in page])
            kept += len(page) - len(gone)
            removed += [e.digest for e in gone]
            freed += sum(e.size for e in gone)
            await unlink_matched(index, rule, page, {e.digest for e in gone})
        if dry_run:
            return PruneReport(tuple(tags), tuple(removed), freed, 0, True)
        # Unless pulled again since we looked; running servers drop their memos.
        await index.index.prune_tags(tags)
        if older_than is None and patterns:
            for upstream, repo in await index.index.repositories():
                if rule.matches((upstream, repo)):
                    await index.index.unlink(upstream, repo, None)
    return PruneReport(tuple(tags), tuple(removed), freed, kept, False)


async def unlink_matched(
    index: IndexFront, rule: PruneRule, page: Sequence[Chosen], gone: Collection[str]
) -> None:
    """With ``--repo`` and ``--older-than``, the matched repositories lose their links to
    the objects of ``page`` that are ``gone`` (``--repo`` alone forgets them whole)."""
    if rule.older_than is None or not rule.patterns:
        return
    by_repo: dict[tuple[str, str], list[str]] = {}
    for chosen in page:
        if chosen.entry.digest in gone:
            for holder in chosen.holders:
                by_repo.setdefault(holder, []).append(chosen.entry.digest)
    for (upstream, repo), digests in sorted(by_repo.items()):
        await index.index.unlink(upstream, repo, digests)
