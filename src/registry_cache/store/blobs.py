"""Content-addressed storage of verified bytes.

``BlobStore`` is the narrow interface the proxy needs (six methods), so an
object-store backend can come later; ``FileBlobStore`` is the local one. Every
write is temp file → hash while writing → verify → fsync → atomic rename → fsync
dir: a reader can never see a file under ``blobs/`` that is partial or wrong.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from ..digest import Digest
from ..errors import DigestMismatch, InsufficientStorage
from .layout import Layout


class BlobStore(Protocol):
    def stat(self, digest: Digest) -> int | None:
        """Size of a stored object, None when absent."""

    def open(self, digest: Digest) -> BinaryIO:
        """An open file for reading (and ``sendfile``); FileNotFoundError when absent."""

    def read(self, digest: Digest) -> bytes:
        """Whole object (small things: manifests); FileNotFoundError when absent."""

    def put(self, digest: Digest, data: bytes) -> None:
        """Verify and store ``data``; DigestMismatch when it does not hash to ``digest``."""

    def commit(self, digest: Digest, verified_file: Path) -> None:
        """Publish a file whose content the caller has verified (a finished fill)."""

    def delete(self, digest: Digest) -> int:
        """Remove an object; returns the bytes freed (0 when absent)."""

    def walk(self) -> Iterator[tuple[Digest, int]]:
        """Every stored object with its size."""


class FileBlobStore:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def path(self, digest: Digest) -> Path:
        return self.layout.blob(digest)

    def stat(self, digest: Digest) -> int | None:
        try:
            return os.stat(self.layout.blob_str(digest)).st_size
        except FileNotFoundError:
            return None

    def open(self, digest: Digest) -> BinaryIO:
        return open(self.layout.blob(digest), "rb")

    def read(self, digest: Digest) -> bytes:
        return self.layout.blob(digest).read_bytes()

    def put(self, digest: Digest, data: bytes) -> None:
        if not digest.matches(data):
            raise DigestMismatch(str(digest), str(Digest.of(data, digest.algorithm)), len(data))
        target = self.layout.blob(digest)
        if target.exists():
            return
        self.layout.tmp.mkdir(parents=True, exist_ok=True)
        tmp = self.layout.tmp / f"{digest.hex}.{os.getpid()}.{id(data)}"
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            tmp.unlink(missing_ok=True)  # a half-written temp file would hold the space
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise InsufficientStorage("no space left in the cache's data directory") from None
            raise
        self._publish(tmp, target)

    def commit(self, digest: Digest, verified_file: Path) -> None:
        self._publish(verified_file, self.layout.blob(digest))

    def _publish(self, source: Path, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
        _fsync_dir(target.parent)

    def delete(self, digest: Digest) -> int:
        target = self.layout.blob(digest)
        try:
            size = os.stat(target).st_size
            os.unlink(target)
        except FileNotFoundError:
            return 0
        return size

    def walk(self) -> Iterator[tuple[Digest, int]]:
        root = self.layout.blobs
        if not root.is_dir():
            return
        for algorithm in sorted(root.iterdir()):
            for fan in sorted(algorithm.iterdir()) if algorithm.is_dir() else ():
                for entry in os.scandir(fan):
                    digest = Layout.digest_of_blob_path(Path(entry.path))
                    if digest is None:
                        continue
                    with contextlib.suppress(FileNotFoundError):
                        yield digest, entry.stat().st_size


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
