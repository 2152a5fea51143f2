"""Uploads to the bucket of what the local tier committed: background, bounded, verified.

``offer`` is called on the event loop once a fill from upstream committed (or a
manifest was stored) and returns at once; at most ``concurrency`` uploads run per
process, the rest wait (up to ``MAX_PENDING``; beyond that, and while the bucket is
unavailable, content is simply not stored in it: counted, never an error for a
client). An upload:

1. takes the digest's note, ``DATA/uploads/<digest>.upload``, with an exclusive
   ``flock`` (another worker uploading it holds it: nothing to do);
2. asks the bucket (HEAD): an object of the right size is there already → recorded;
3. opens the committed local file (its shared ``flock`` keeps eviction off it) and
   hands it to ``S3BlobStore.upload`` (verified by construction); the note records
   the multipart upload's key and id before its first part;
4. records the object in the index (``add_shared``) and removes the note.

A note left behind (a crash, a kill, a failed abort while the bucket was down) is
found unlocked by ``sweep.py``, which aborts its upload.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .. import metrics
from ..digest import Digest
from ..errors import DigestMismatch, IndexUnavailable, StorageUnavailable
from ..index.front import IndexFront
from ..store.blobs import FileBlobStore
from ..store.layout import Layout
from .store import S3BlobStore

log = logging.getLogger("registry_cache.bucket")

CONCURRENCY = 2  # uploads at a time per process (each holds up to two parts in memory)
MAX_PENDING = 1024


@dataclass(frozen=True, slots=True)
class Note:
    """An upload in flight, as its note says."""

    path: Path
    key: str
    upload_id: str


class Journal:
    """``DATA/uploads/``: one note per upload in flight, flocked while it runs."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    @classmethod
    def beside(cls, local: FileBlobStore) -> Journal:
        """The journal in ``local``'s data directory."""
        return cls(local.layout)

    @contextlib.contextmanager
    def hold(self, digest: Digest) -> Iterator[NoteWriter | None]:
        """The digest's note, locked; None when another process holds it. The note is
        removed on a clean exit and kept when the upload failed (the sweep aborts it)."""
        self.layout.uploads.mkdir(parents=True, exist_ok=True)
        path = self.layout.upload_note(digest)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield None
                return
            writer = NoteWriter(fd)
            try:
                yield writer
            except BaseException:
                if not writer.written:
                    _unlink(path)  # no multipart upload was started: nothing to abort
                raise
            _unlink(path)
        finally:
            os.close(fd)  # releases the lock

    def abandoned(self) -> list[Note]:
        """Notes nobody holds, with what they say (an empty one is removed)."""
        found: list[Note] = []
        try:
            names = sorted(os.listdir(self.layout.uploads))
        except FileNotFoundError:
            return found
        for name in names:
            path = self.layout.uploads / name
            note = _read_unlocked(path)
            if note is not None:
                found.append(note)
        return found


class NoteWriter:
    def __init__(self, fd: int) -> None:
        self._fd = fd
        self.written = False

    def __call__(self, key: str, upload_id: str) -> None:
        data = f"{key}\n{upload_id}\n".encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)
        os.fsync(self._fd)  # a kill -9 right after must still find it
        self.written = True


def _read_unlocked(path: Path) -> Note | None:
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None  # an upload in progress
        lines = os.pread(fd, 4096, 0).decode(errors="replace").split("\n")
        if len(lines) < 2 or not lines[0] or not lines[1]:
            _unlink(path)  # died before its upload started
            return None
        return Note(path, lines[0], lines[1])
    finally:
        os.close(fd)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class StoredListener(Protocol):
    """Told of every object an upload stored (the bucket's evictor)."""

    def stored(self, digest: Digest, size: int) -> None: ...


class Uploader:
    def __init__(
        self,
        bucket: S3BlobStore,
        local: FileBlobStore,
        index: IndexFront,
        journal: Journal,
        *,
        listener: StoredListener | None = None,
        concurrency: int = CONCURRENCY,
    ) -> None:
        self.bucket = bucket
        self.local = local
        self.index = index
        self.journal = journal
        self.listener = listener
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: dict[Digest, asyncio.Task[None]] = {}
        self._warned_full = False

    def offer(self, digest: Digest, data: bytes | None = None) -> None:
        """Store ``digest`` in the bucket soon (loop thread; returns at once). ``data``:
        the whole object (a manifest), else the committed local file is read."""
        if digest in self._tasks:
            return
        if not self.bucket.breaker.allow():
            metrics.bucket_bypass("upload")
            return
        if len(self._tasks) >= MAX_PENDING:
            metrics.bucket_bypass("upload")
            if not self._warned_full:
                log.warning("%d uploads pending: not storing more for now", MAX_PENDING)
                self._warned_full = True
            return
        self._warned_full = False
        task = asyncio.create_task(self._run(digest, data), name=f"upload {digest}")
        self._tasks[digest] = task
        task.add_done_callback(lambda _: self._tasks.pop(digest, None))

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def drain(self) -> None:
        """Until every upload offered so far ended (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def _run(self, digest: Digest, data: bytes | None) -> None:
        async with self._slots:
            try:
                await self.upload(digest, data)
            except StorageUnavailable as exc:
                metrics.bucket_bypass("upload")
                log.info("%s not stored in the bucket: %s", digest, exc.message)
            except DigestMismatch as exc:
                log.error("local copy of %s failed verification, not uploaded: %s", digest, exc)
            except Exception:
                log.exception("uploading %s failed", digest)

    async def upload(self, digest: Digest, data: bytes | None = None) -> bool:
        """True when this call stored it (False: there already, gone, or another worker's)."""
        if not self.bucket.breaker.allow():
            raise StorageUnavailable(f"{self.bucket.describe()} is unavailable")
        size = len(data) if data is not None else self.local.stat_now(digest)
        if size is None:
            return False  # evicted meanwhile
        if await self.bucket.stat(digest) == size:
            await self._record(digest, size)
            return False
        if data is not None:
            await self.bucket.put(digest, data)
        else:
            with self.journal.hold(digest) as note:
                if note is None:
                    return False
                body = await self.local.open(digest)
                if body is None:
                    return False
                try:
                    await self.bucket.upload(digest, body.file.fileno(), body.size, started=note)
                finally:
                    await body.close()
        await self._record(digest, size)
        if self.listener is not None:
            self.listener.stored(digest, size)
        return True

    async def _record(self, digest: Digest, size: int) -> None:
        try:
            await self.index.index.add_shared(str(digest), size, time.time())
        except IndexUnavailable as exc:  # the bucket holds it; gc adopts it later
            log.info("could not record %s in the bucket's index rows: %s", digest, exc.message)

    async def close(self) -> None:
        """Cancel uploads in progress (each aborts its multipart upload, shielded)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
