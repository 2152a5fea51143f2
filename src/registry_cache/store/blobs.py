"""Content-addressed storage of verified bytes: the ``BlobStore`` contract.

``BlobStore`` is the one way any part of the product reaches blob and manifest
content. A read hands back a body answer (``store/body.py``), never a path.
``FileBlobStore`` is the local tier (the data directory); an object store joins it
behind the same contract. Every write is temp file → hash while writing → verify
→ fsync → atomic rename → fsync dir: a reader never sees a partial or wrong object.

``tests/contract/test_blobstore_contract.py`` runs one suite over every implementation.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Protocol

from ..digest import Digest
from ..errors import DigestMismatch, InsufficientStorage, StorageUnavailable
from .body import Body, FileBody
from .layout import Layout

_WRITES = itertools.count()  # unique temp names within this process (next() is atomic)
MAX_READ = 8 << 20  # read() is for manifests (upstream caps them at 4 MiB)
COMMITTED_MODE = 0o444  # see FileBlobStore.commit


class BlobStore(Protocol):
    def describe(self) -> str:
        """Where the content lives, for messages (no credentials)."""

    async def stat(self, digest: Digest) -> int | None:
        """Size of a stored object, None when absent."""

    async def open(self, digest: Digest) -> Body | None:
        """A body answer for the whole object, None when absent. The caller closes it."""

    async def read(self, digest: Digest) -> bytes | None:
        """A whole small object (a manifest), None when absent."""

    async def put(self, digest: Digest, data: bytes) -> None:
        """Verify and store ``data``: DigestMismatch when it does not hash to ``digest``."""

    async def delete(self, digest: Digest) -> int:
        """Remove an object; the bytes freed (0 when absent)."""

    def walk(self) -> AsyncIterator[tuple[Digest, int]]:
        """Every stored object with its size."""

    async def check(self) -> None:
        """Raise StorageUnavailable unless a new object could be stored now (readiness)."""


class FileBlobStore:
    """The data directory. Fills write into it through ``store/fill.py``."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    @classmethod
    def at(cls, root: Path) -> FileBlobStore:
        return cls(Layout(root))

    @property
    def root(self) -> Path:
        """The data directory itself (for messages and reports)."""
        return self.layout.root

    @property
    def index_file(self) -> Path:
        """Where the SQLite index lives in this data directory."""
        return self.layout.index

    @property
    def quarantine_dir(self) -> Path:
        """Where ``cache verify`` moves objects that fail their digest."""
        return self.layout.quarantine

    def describe(self) -> str:
        return f"data directory {self.layout.root}"

    async def stat(self, digest: Digest) -> int | None:
        return self.stat_now(digest)

    def stat_now(self, digest: Digest) -> int | None:
        """``stat`` for threads and synchronous callers inside ``store/``."""
        try:
            return os.stat(self.layout.blob_str(digest)).st_size
        except FileNotFoundError:
            return None

    async def open(self, digest: Digest) -> FileBody | None:
        # Opening a local file is a metadata lookup, not I/O worth a thread hop.
        return FileBody.open(self.layout.blob_str(digest))

    async def read(self, digest: Digest) -> bytes | None:
        try:
            with open(self.layout.blob_str(digest), "rb") as handle:  # noqa: ASYNC230
                return handle.read(MAX_READ)
        except FileNotFoundError:
            return None

    async def put(self, digest: Digest, data: bytes) -> None:
        if not digest.matches(data):
            raise DigestMismatch(str(digest), str(Digest.of(data, digest.algorithm)), len(data))
        await asyncio.to_thread(self._write_verified, digest, data)

    def _write_verified(self, digest: Digest, data: bytes) -> None:
        target = self.layout.blob(digest)
        if target.exists():
            return
        self.layout.tmp.mkdir(parents=True, exist_ok=True)
        # A name of its own per write: two requests may store the same manifest at once.
        tmp = self.layout.tmp / f"{digest.hex}.{os.getpid()}.{next(_WRITES)}"
        try:
            with open(tmp, "xb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            tmp.unlink(missing_ok=True)  # a half-written temp file would hold the space
            raise storage_error(exc, self.describe()) from None
        self.commit(digest, tmp)

    def commit(self, digest: Digest, verified_file: Path) -> None:
        """Publish a file whose content the caller verified (a finished fill). Sync.

        Verified content is read-only (0444): besides saying "immutable", that is how
        followers of a fill in other workers tell, through their own descriptor, that
        the inode they stream was committed, even if eviction unlinked it since.
        """
        target = self.layout.blob(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(verified_file, COMMITTED_MODE)
        os.replace(verified_file, target)
        _fsync_dir(target.parent)

    async def delete(self, digest: Digest) -> int:
        return self.delete_now(digest)

    def delete_now(self, digest: Digest) -> int:
        target = self.layout.blob_str(digest)
        try:
            size = os.stat(target).st_size
            os.unlink(target)
        except FileNotFoundError:
            return 0
        return size

    async def walk(self) -> AsyncIterator[tuple[Digest, int]]:
        # One fan-out directory per thread hop: a million files never block the loop.
        for fan in await asyncio.to_thread(self._fans):
            for item in await asyncio.to_thread(_scan_list, fan):
                yield item

    def walk_now(self) -> Iterator[tuple[Digest, int]]:
        for fan in self._fans():
            yield from _scan(fan)

    def _fans(self) -> list[Path]:
        root = self.layout.blobs
        if not root.is_dir():
            return []
        return [
            fan
            for algorithm in sorted(root.iterdir())
            if algorithm.is_dir()
            for fan in sorted(algorithm.iterdir())
        ]

    async def check(self) -> None:
        await asyncio.to_thread(self._check_now)

    def _check_now(self) -> None:
        import tempfile

        try:
            with tempfile.NamedTemporaryFile(dir=self.layout.tmp, prefix=".ready-"):
                pass
        except OSError as exc:
            raise StorageUnavailable(
                f"{self.describe()} does not take new files: {exc.strerror or exc}"
            ) from None


def storage_error(exc: OSError, where: str) -> Exception:
    """A full disk is a 507; any other I/O error a 503 naming the tier."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientStorage(f"no space left in the cache's {where}")
    return StorageUnavailable(f"{where}: {exc.strerror or exc}")


def _scan(fan: Path) -> Iterator[tuple[Digest, int]]:
    try:
        entries = list(os.scandir(fan))
    except FileNotFoundError:
        return
    for entry in entries:
        digest = Layout.digest_of_blob_path(Path(entry.path))
        if digest is None:
            continue
        try:
            yield digest, entry.stat().st_size
        except FileNotFoundError:
            continue


def _scan_list(fan: Path) -> list[tuple[Digest, int]]:
    return list(_scan(fan))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
