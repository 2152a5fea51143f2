"""Where everything lives in the data directory. The one place that knows paths.

::

    DATA/
      blobs/sha256/ab/abcdef…            verified content (layers, configs AND manifests);
                                          immutable, named by digest
      fills/sha256-abcdef….partial        an in-flight fill; an exclusive flock on it is the
                                          single-flight key shared by every worker process
      fills/sha256-abcdef….size           the blob's size, written once upstream answered, so
                                          followers in other workers know Content-Length
      quarantine/sha256-abcdef…           objects `cache verify` found corrupt (kept for study)
      tmp/                                small writes (manifests) before their atomic rename
      evict.lock                          flock held by whoever evicts or collects garbage
      uploads/sha256-abcdef….upload       an upload to the bucket in flight (its key and
                                          upload id; flocked by the uploader), so one a
                                          crash abandoned is aborted at the next start
      shared-evict.lock                   flock of whoever evicts from the bucket (one machine)
      metrics/                            Prometheus values shared by --workers N (emptied at start)
      index.sqlite3 (+ -wal, -shm)        tags, repository links, sizes, last access (WAL mode)

A file under ``blobs/`` exists only after its digest and size were verified, so
presence on disk *is* the commit point; the index only adds metadata to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..digest import Digest


@dataclass(frozen=True, slots=True)
class Layout:
    root: Path

    @property
    def blobs(self) -> Path:
        return self.root / "blobs"

    @property
    def fills(self) -> Path:
        return self.root / "fills"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def index(self) -> Path:
        return self.root / "index.sqlite3"

    @property
    def evict_lock(self) -> Path:
        return self.root / "evict.lock"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics"

    @property
    def uploads(self) -> Path:
        return self.root / "uploads"

    @property
    def shared_evict_lock(self) -> Path:
        return self.root / "shared-evict.lock"

    def upload_note(self, digest: Digest) -> Path:
        return self.uploads / f"{digest.algorithm}-{digest.hex}.upload"

    def blob(self, digest: Digest) -> Path:
        return Path(self.blob_str(digest))

    def blob_str(self, digest: Digest) -> str:
        """``blob()`` as a plain string: a hit calls it on every request, and three
        ``Path`` joins cost more than the ``stat`` they are for."""
        return f"{self.root}/blobs/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}"

    def partial(self, digest: Digest) -> Path:
        return self.fills / f"{digest.algorithm}-{digest.hex}.partial"

    def size_note(self, digest: Digest) -> Path:
        return self.fills / f"{digest.algorithm}-{digest.hex}.size"

    def quarantined(self, digest: Digest) -> Path:
        return self.quarantine / f"{digest.algorithm}-{digest.hex}"

    def create(self) -> None:
        for path in (self.blobs, self.fills, self.quarantine, self.tmp):
            path.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def digest_of_blob_path(path: Path) -> Digest | None:
        """Inverse of ``blob()``, for walking the tree (gc, verify)."""
        try:
            return Digest.parse(f"{path.parent.parent.name}:{path.name}")
        except Exception:
            return None

    @staticmethod
    def digest_of_fill_path(path: Path) -> Digest | None:
        stem = path.name.split(".", 1)[0]
        algorithm, _, hex_ = stem.partition("-")
        try:
            return Digest.parse(f"{algorithm}:{hex_}")
        except Exception:
            return None
