"""What ``cache ls/du/verify/gc/prune`` do to the bucket (after the data directory).

The planning is the data directory's (``store/inventory.py``), over a snapshot of
what the index says the bucket holds and a listing of the bucket itself (the
bucket's ``LastModified`` plays the file's mtime). Deletions are idempotent, so
running beside the servers (and their eviction) is safe: at worst both remove the
same object. Nothing written or accessed within ``grace`` is touched.

- ``verify``: every object under ``blobs/`` is read back (presigned GETs, in
  threads, ``parallel`` at a time: bytes never cross the event loop) and hashed;
  corrupt ones go to ``PREFIX/quarantine/`` and out of the index; rows whose
  object is gone are dropped.
- ``gc``: unreferenced objects, rows without objects, objects without rows
  (referenced ones are adopted), and abandoned multipart uploads (``sweep.py``,
  with ``grace`` as the age limit).
- ``prune``: the objects ``inventory.PruneRule`` selects among the bucket's, oldest first.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..digest import Digest
from ..errors import BlobUnknown, RegistryError
from ..index.base import Index, ObjectRow
from ..index.front import IndexFront
from ..store.inventory import FileInfo, PruneRule, Snapshot, chosen_objects, load, plan_gc
from ..store.maintenance import unlink_matched
from .store import S3BlobStore
from .sweep import sweep
from .upload import Journal

PAGE = 5000
HASH_CHUNK = 1 << 20


async def shared_rows(index: Index) -> list[ObjectRow]:
    """Every row of what the bucket holds, least recently used first (page by page)."""
    rows: list[ObjectRow] = []
    cursor = None
    while page := await index.shared_page(cursor, PAGE):
        rows += page
        cursor = (page[-1].last_access, page[-1].digest)
    return rows


async def listing(bucket: S3BlobStore) -> dict[str, FileInfo]:
    return {str(o.digest): FileInfo(o.size, o.modified) async for o in bucket.objects()}


async def snapshot(index: IndexFront, bucket: S3BlobStore) -> Snapshot:
    """The bucket's side of the index, with its manifests parsed (read from the bucket)."""
    return await load(index.index, bucket, await shared_rows(index.index))


# ------------------------------------------------------------------- totals


@dataclass(frozen=True, slots=True)
class BucketUsage:
    objects: int  # the index's rows
    bytes: int
    stored_objects: int  # what the bucket lists under blobs/
    stored_bytes: int
    unindexed: int  # listed, without a row (gc adopts or removes them)
    unindexed_bytes: int
    pending_uploads: int


async def usage(bucket: S3BlobStore, index: IndexFront) -> BucketUsage:
    count, size = await index.index.shared_totals()
    stored = await listing(bucket)
    rows = {r.digest for r in await shared_rows(index.index)}
    loose = [info.size for digest, info in stored.items() if digest not in rows]
    pending = await bucket.pending_uploads()
    return BucketUsage(
        count,
        size,
        len(stored),
        sum(i.size for i in stored.values()),
        len(loose),
        sum(loose),
        len(pending),
    )


# ------------------------------------------------------------------- verify


@dataclass(frozen=True, slots=True)
class BucketVerifyReport:
    checked: int
    bytes: int
    corrupt: tuple[str, ...]  # moved to quarantine/
    missing: tuple[str, ...]  # rows without an object (dropped)

    @property
    def ok(self) -> bool:
        return not self.corrupt and not self.missing


async def verify(
    bucket: S3BlobStore,
    index: IndexFront,
    *,
    parallel: int = 4,
    on_bytes: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> BucketVerifyReport:
    stored = await listing(bucket)
    if on_total is not None:
        on_total(sum(i.size for i in stored.values()))
    loop = asyncio.get_running_loop()

    def progress(count: int) -> None:
        if on_bytes is not None:
            loop.call_soon_threadsafe(on_bytes, count)

    slots = asyncio.Semaphore(max(1, parallel))
    corrupt: list[str] = []
    checked = total = 0

    async def check_one(text: str) -> None:
        nonlocal checked, total
        digest = Digest.parse(text)
        async with slots:
            url = await bucket.presign_get(digest)
            try:
                actual, size = await asyncio.to_thread(_hash_object, bucket, url, digest, progress)
            except BlobUnknown:
                return  # evicted while we looked
        checked += 1
        total += size
        if actual != digest.hex:
            await bucket.quarantine(digest)
            await index.index.forget_shared([text])
            corrupt.append(text)

    await asyncio.gather(*(check_one(d) for d in sorted(stored)))
    present = await listing(bucket)
    missing = [r.digest for r in await shared_rows(index.index) if r.digest not in present]
    await index.index.forget_shared(missing)
    return BucketVerifyReport(checked, total, tuple(sorted(corrupt)), tuple(sorted(missing)))


def _hash_object(
    bucket: S3BlobStore, url: str, digest: Digest, progress: Callable[[int], None]
) -> tuple[str, int]:
    stream = bucket.open_range_now(url, 0)
    hasher = digest.hasher()
    size = 0
    buffer = bytearray(HASH_CHUNK)
    view = memoryview(buffer)
    try:
        while count := stream.readinto(view):
            hasher.update(view[:count])
            size += count
            progress(count)
    finally:
        stream.close()
    return hasher.hexdigest(), size


# ----------------------------------------------------------------------- gc


@dataclass(frozen=True, slots=True)
class BucketGcReport:
    orphans: tuple[str, ...]
    orphan_bytes: int
    adopted: tuple[str, ...]
    missing: tuple[str, ...]
    uploads: int  # abandoned multipart uploads aborted
    dry_run: bool


async def collect_garbage(
    bucket: S3BlobStore,
    index: IndexFront,
    journal: Journal | None,
    *,
    grace: float,
    dry_run: bool = False,
) -> BucketGcReport:
    now = time.time()
    # Rows before the listing: an object is uploaded before its row is written.
    snap = await snapshot(index, bucket)
    stored = await listing(bucket)
    plan = plan_gc(snap, stored, now=now, grace=grace)
    orphan_bytes = sum(
        stored[d].size if d in stored else snap.objects[d].size for d in plan.orphans
    )
    swept = await sweep(bucket, journal, older_than=grace, dry_run=dry_run, now=now)
    if not dry_run:
        gone = await bucket.delete_many([Digest.parse(d) for d in plan.orphans])
        await index.index.forget_shared([*map(str, gone), *plan.missing])
        for digest in plan.adopt:
            await index.index.add_shared(digest, stored[digest].size, stored[digest].mtime)
    return BucketGcReport(
        plan.orphans, orphan_bytes, plan.adopt, plan.missing, swept.total, dry_run
    )


# -------------------------------------------------------------------- prune


@dataclass(frozen=True, slots=True)
class BucketPruneReport:
    removed: tuple[str, ...]
    bytes: int
    dry_run: bool


async def prune(
    bucket: S3BlobStore,
    index: IndexFront,
    *,
    older_than: float | None,
    patterns: Sequence[str],
    grace: float,
    dry_run: bool = False,
) -> BucketPruneReport:
    """The bucket's objects ``cache prune`` selects (tags are the data directory's step),
    deleted a page at a time as ``inventory.chosen_objects`` finds them."""
    rule = PruneRule(time.time(), older_than, tuple(patterns), grace)
    removed: list[str] = []
    freed = 0
    async for page in chosen_objects(index.index, index.index.shared_page, rule):
        sizes = {c.entry.digest: c.entry.size for c in page}
        if dry_run:
            removed += sizes
            freed += sum(sizes.values())
            continue
        victims = []
        for text in sizes:
            with contextlib.suppress(RegistryError):
                victims.append(Digest.parse(text))
        gone = [str(d) for d in await bucket.delete_many(victims)]
        await index.index.forget_shared(gone)
        removed += gone
        freed += sum(sizes[d] for d in gone)
        # --repo alone: the data directory's step unlinks the whole repository.
        await unlink_matched(index, rule, page, set(gone))
    return BucketPruneReport(tuple(removed), freed, dry_run)
