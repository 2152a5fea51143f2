"""Abandoned multipart uploads: removed at start, every ``SWEEP_INTERVAL``, and by ``cache gc``.

An interrupted upload never leaves an object (nothing is visible before Complete),
but its parts stay in the bucket, and are billed, until aborted. Two kinds:

- this machine's own: a note under ``DATA/uploads/`` that no process holds (the
  uploader crashed, was killed, or could not abort while the bucket was down):
  aborted at once, whatever its age;
- anyone's: every incomplete upload under ``PREFIX/blobs/`` begun more than
  ``older_than`` ago (a replica that died and never came back); younger ones may be
  another replica's upload in progress, so they are left alone.

Aborting an upload that is gone already counts as done.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass

from ..digest import Digest
from ..errors import StorageUnavailable
from .store import S3BlobStore
from .upload import Journal

log = logging.getLogger("registry_cache.bucket")

UPLOAD_MAX_AGE = 3600.0  # an upload begun longer ago than this is nobody's
SWEEP_INTERVAL = 600.0
SWEEP_RETRY = 30.0  # after a sweep the bucket was not there for


@dataclass(frozen=True, slots=True)
class SweepReport:
    own: int  # this machine's abandoned uploads aborted
    old: int  # anyone's uploads older than the limit aborted
    interrupted: tuple[Digest, ...] = ()  # what this machine's were uploading

    @property
    def total(self) -> int:
        return self.own + self.old


async def sweep(
    bucket: S3BlobStore,
    journal: Journal | None,
    *,
    older_than: float = UPLOAD_MAX_AGE,
    dry_run: bool = False,
    now: float | None = None,
) -> SweepReport:
    """Abort abandoned uploads (see the module docstring); StorageUnavailable when the
    bucket cannot be asked (notes are kept for the next sweep)."""
    own = 0
    aborted: set[str] = set()
    interrupted: list[Digest] = []
    for note in journal.abandoned() if journal is not None else []:
        if not dry_run:
            await bucket.abort(note.key, note.upload_id)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(note.path)
        aborted.add(note.upload_id)
        own += 1
        digest = bucket.location.digest_of(note.key)
        if digest is not None:
            interrupted.append(digest)
    cutoff = (time.time() if now is None else now) - older_than
    old = 0
    for upload in await bucket.pending_uploads():
        if upload.upload_id in aborted or upload.initiated > cutoff:
            continue
        if not dry_run:
            await bucket.abort(upload.key, upload.upload_id)
        old += 1
    report = SweepReport(own, old, tuple(interrupted))
    if report.total and not dry_run:
        log.info("aborted %d abandoned upload(s) in %s", report.total, bucket.describe())
    return report


async def sweep_quietly(bucket: S3BlobStore, journal: Journal) -> SweepReport | None:
    """The server's sweep: a bucket that is down now is swept next time."""
    try:
        return await sweep(bucket, journal)
    except StorageUnavailable as exc:
        log.info("sweep of abandoned uploads postponed: %s", exc.message)
        return None
