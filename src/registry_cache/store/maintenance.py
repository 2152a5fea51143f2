"""``cache gc``, ``cache verify`` and ``cache prune``: safe while the server runs.

Every deletion happens under ``DATA/evict.lock`` (the lock eviction takes), so at
most one process deletes at a time and rows never disappear between a read and
the check of their file. Fills are left alone: anything with a file under
``fills/`` is pinned (``evict.in_flight``) and files under ``blobs/`` are
immutable once published, so verify never reads an object that is being written.

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
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

from ..digest import Digest
from ..errors import RegistryError
from ..index.base import ObjectRow, TagEntry
from ..index.front import IndexFront
from ..mediatypes import manifest_media_type
from .blobs import FileBlobStore
from .evict import Entry, evict_lock, forget, in_flight, remove_objects
from .inventory import FileInfo, all_objects, load, plan_gc, plan_prune
from .layout import Layout

LOCK_WAIT = 30.0
CHUNK = 1 << 20


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
        # Rows before files: a row is only ever written after its file, so a row
        # read now whose file is absent later was really deleted, not yet to come.
        snap = await load(index.index, store)
        files = await asyncio.to_thread(scan_files, layout)
        plan = plan_gc(snap, files, now=now, grace=grace, busy=in_flight(layout))
        orphan_bytes = sum(
            files[d].size if d in files else snap.objects[d].size for d in plan.orphans
        )
        if not dry_run:
            await asyncio.to_thread(
                lambda: [store.delete_now(Digest.parse(d)) for d in plan.orphans]
            )
            await forget(index, store, [*plan.orphans, *plan.missing])
            await _adopt(index, store, plan.adopt, files)
        removed, removed_bytes = await asyncio.to_thread(
            clean_leftovers, layout, store, now, grace, dry_run
        )
    return GcReport(
        plan.orphans, orphan_bytes, plan.adopt, plan.missing, removed, removed_bytes, dry_run
    )


async def _adopt(
    index: IndexFront, store: FileBlobStore, digests: Sequence[str], files: dict[str, FileInfo]
) -> None:
    rows = []
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
        rows.append(ObjectRow(text, info.size, media_type, info.mtime, info.mtime))
    if rows:
        await index.index.adopt_objects(rows)


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

    Hashing runs without the lock (it may take long), ``parallel`` objects at a time
    on threads (hashlib releases the GIL); each quarantine, and the final check of
    rows against files, take it.
    """
    layout = store.layout
    objects = sorted(
        await asyncio.to_thread(lambda: list(store.walk_now())), key=lambda i: str(i[0])
    )
    if on_total is not None:
        on_total(sum(size for _, size in objects))
    corrupt: list[str] = []
    checked = total = vanished = 0
    loop = asyncio.get_running_loop()

    def progress(count: int) -> None:
        if on_bytes is not None:
            loop.call_soon_threadsafe(on_bytes, count)

    slots = asyncio.Semaphore(max(1, parallel))

    async def check_one(digest: Digest) -> None:
        nonlocal checked, total, vanished
        async with slots:
            result = await asyncio.to_thread(_hash_file, layout, digest, progress)
        if result is None:
            vanished += 1
            return
        actual, size, inode = result
        checked += 1
        total += size
        if actual != digest.hex and await _quarantine(layout, index, store, digest, inode):
            corrupt.append(str(digest))

    await asyncio.gather(*(check_one(digest) for digest, _ in objects))
    async with _locked(layout) as held:
        if not held:
            raise MaintenanceBusy(f"{layout.evict_lock} is held by another process")
        busy = in_flight(layout)
        missing = [
            row.digest
            for row in await all_objects(index.index)
            if row.digest not in busy and _absent(store, row.digest)
        ]
        await forget(index, store, missing)
    return VerifyReport(checked, total, tuple(sorted(corrupt)), tuple(missing), vanished)


def _hash_file(
    layout: Layout, digest: Digest, progress: Callable[[int], None]
) -> tuple[str, int, int] | None:
    """(hex digest, size, inode) of a blob file, None when it vanished."""
    try:
        handle = open(layout.blob(digest), "rb")  # noqa: SIM115 - closed below
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


def _absent(store: FileBlobStore, text: str) -> bool:
    try:
        return store.stat_now(Digest.parse(text)) is None
    except RegistryError:
        return False


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
    removed: tuple[Entry, ...]
    kept: int  # selected but pinned (in use or too recent)
    dry_run: bool

    @property
    def freed(self) -> int:
        return sum(e.size for e in self.removed)


async def prune(
    store: FileBlobStore,
    index: IndexFront,
    *,
    older_than: float | None,
    patterns: Sequence[str],
    grace: float,
    dry_run: bool = False,
) -> PruneReport:
    """See ``inventory.plan_prune``; a matched repository also loses its links to the
    objects removed, and without ``older_than`` all of them (it is forgotten)."""
    layout = store.layout
    async with _locked(layout) as held:
        if not held:
            raise MaintenanceBusy(f"{layout.evict_lock} is held by another process")
        now = time.time()
        snap = await load(index.index, store)
        plan = plan_prune(snap, now=now, older_than=older_than, patterns=patterns, grace=grace)
        if dry_run:
            return PruneReport(plan.tags, plan.objects, 0, True)
        removed = await remove_objects(store, index, plan.objects)
        gone = {e.digest for e in removed}
        # Unless pulled again since we looked; running servers drop their memos.
        await index.index.prune_tags(plan.tags)
        for upstream, repo in sorted(plan.repos):
            if older_than is None:
                await index.index.unlink(upstream, repo, None)
                continue
            await index.index.unlink(
                upstream, repo, [d for d in gone if (upstream, repo) in snap.links.get(d, ())]
            )
    return PruneReport(plan.tags, tuple(removed), len(plan.objects) - len(removed), False)
