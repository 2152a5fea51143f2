"""``SharedTier``: what the rest of the product knows of the bucket.

- a fill source (``open_blob``, on the fill thread): a presigned ranged GET read by
  that thread; the fill machinery tees it to the local tier and to every client
  following the fill, as for upstream bytes (``cluster/fills.py`` decides when);
- uploads offered once the local tier committed content from upstream (``offer``);
- manifests read on a local miss (``read``), verified before use;
- ``--redirect-hits``: a presigned URL for a blob the bucket holds (``redirect``);
- readiness (``check``) and health (the breaker), for ``/readyz``;
- the background work: the sweep of abandoned uploads (at start, then every
  ``SWEEP_INTERVAL``) and, with ``--shared-max-size``, eviction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from .. import metrics
from ..config import Settings
from ..digest import Digest
from ..errors import IndexUnavailable, StorageUnavailable
from ..index.front import IndexFront
from ..lru import Lru
from ..store.blobs import FileBlobStore
from ..store.body import RedirectBody
from .breaker import BucketHealth
from .evict import Mutex, SharedEvictionTask, SharedEvictor
from .store import S3BlobStore
from .sweep import SWEEP_INTERVAL, SWEEP_RETRY, sweep_quietly
from .transfer import BucketStream
from .upload import Journal, Uploader

log = logging.getLogger("registry_cache.bucket")

PRESIGN_WAIT = 5.0  # a fill thread waits this long for the loop to sign its GET
REDIRECT_TTL = 300  # a client follows a 307 at once; S3 checks the signature at the start
# "The bucket holds it" is remembered this long for redirects: less than evict_grace,
# and a redirect counts as an access, so nothing redirected to is evicted meanwhile.
HOLDS_MEMO = 10.0
# With --redirect-hits clients are sent to the bucket without this process asking it
# anything: a HeadBucket this often tells when it went away (then nobody is sent).
PROBE_INTERVAL = 3.0


class SharedTier:
    def __init__(
        self,
        bucket: S3BlobStore,
        uploader: Uploader,
        index: IndexFront,
        *,
        redirect_hits: bool = False,
        eviction: SharedEvictionTask | None = None,
    ) -> None:
        self.bucket = bucket
        self.uploader = uploader
        self.index = index
        self.redirect_hits = redirect_hits
        self.eviction = eviction
        self._holds: Lru[Digest, tuple[int, float]] = Lru(1 << 14)
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    async def open(
        cls,
        settings: Settings,
        local: FileBlobStore,
        index: IndexFront,
        mutex: Mutex,
    ) -> SharedTier:
        """Everything the tier needs, wired (a client is made; nothing is asked yet)."""
        bucket = await S3BlobStore.connect(settings)
        eviction = None
        if settings.shared_max_size:
            evictor = SharedEvictor(
                bucket,
                index,
                mutex,
                cap=settings.shared_max_size,
                high=settings.evict_at_percent / 100,
                low=settings.evict_to_percent / 100,
                grace=settings.evict_grace,
            )
            eviction = SharedEvictionTask(evictor)
        uploader = Uploader(bucket, local, index, Journal(local.layout), listener=eviction)
        return cls(bucket, uploader, index, redirect_hits=settings.redirect_hits, eviction=eviction)

    def describe(self) -> str:
        return self.bucket.describe()

    @property
    def name(self) -> str:
        return self.bucket.location.url

    # ------------------------------------------------------------- health

    def available(self) -> bool:
        """Whether to ask the bucket now (the breaker is closed or retrying)."""
        return self.bucket.breaker.allow()

    def health(self) -> BucketHealth:
        return self.bucket.breaker.health()

    async def check(self) -> None:
        await self.bucket.check()

    # -------------------------------------------------------------- fills

    def open_blob(
        self, digest: Digest, offset: int, loop: asyncio.AbstractEventLoop
    ) -> BucketStream:
        """Fill thread: the object from ``offset``. BlobUnknown when the bucket does not
        hold it, StorageUnavailable when it cannot be asked."""
        url = asyncio.run_coroutine_threadsafe(self.bucket.presign_get(digest), loop).result(
            PRESIGN_WAIT
        )
        return self.bucket.open_range_now(url, offset)

    def offer(self, digest: Digest, data: bytes | None = None) -> None:
        """Loop thread: store this in the bucket soon (see ``upload.py``)."""
        self.uploader.offer(digest, data)

    async def discard(self, digest: Digest) -> None:
        """The bucket's copy failed verification: remove it, so the next fill goes on."""
        log.error("%s in %s does not match its digest: removed", digest, self.describe())
        self._holds.pop(digest)
        with contextlib.suppress(StorageUnavailable):
            await self.bucket.delete(digest)
        with contextlib.suppress(IndexUnavailable):
            await self.index.index.forget_shared([str(digest)])

    # ---------------------------------------------------------- manifests

    async def read(self, digest: Digest) -> bytes | None:
        """A small object, verified; None when the bucket lacks it or cannot be asked."""
        if not self.available():
            metrics.bucket_bypass("read")
            return None
        try:
            data = await self.bucket.read(digest)
        except StorageUnavailable:
            metrics.bucket_bypass("read")
            return None
        if data is None:
            return None
        if not digest.matches(data):
            await self.discard(digest)
            return None
        return data

    # ----------------------------------------------------------- redirects

    async def redirect(self, digest: Digest) -> RedirectBody | None:
        """With ``--redirect-hits``: a presigned URL when the bucket holds ``digest``
        (the index says so) and is up; None otherwise (the blob is served here)."""
        if not self.redirect_hits or not self.available():
            return None
        size = await self._held_size(digest)
        if size is None:
            return None
        try:
            url = await self.bucket.presign_get(digest, REDIRECT_TTL)
        except StorageUnavailable:
            return None
        return RedirectBody(url, size)

    async def _held_size(self, digest: Digest) -> int | None:
        now = time.monotonic()
        memo = self._holds.get(digest)
        if memo is not None and memo[1] > now:
            return memo[0]
        try:
            if not await self.index.index.is_shared(str(digest)):
                return None
            row = await self.index.index.get_object(str(digest))
        except IndexUnavailable:
            return None
        if row is None:
            return None
        self._holds.put(digest, (row.size, now + HOLDS_MEMO))
        return row.size

    # ---------------------------------------------------------- lifecycle

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._sweep_forever(), name="bucket-sweep"))
        if self.redirect_hits:
            self._tasks.append(asyncio.create_task(self._probe_forever(), name="bucket-probe"))
        if self.eviction is not None:
            self.eviction.start()

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.sleep(PROBE_INTERVAL)
            with contextlib.suppress(StorageUnavailable):
                await self.bucket.check()

    async def _sweep_forever(self) -> None:
        ensured = False
        while True:
            if not ensured:
                try:
                    await self.bucket.ensure_bucket()
                    ensured = True
                except StorageUnavailable:
                    pass  # the breaker logged it; tried again with the next sweep
            report = await sweep_quietly(self.bucket, self.uploader.journal)
            # An upload a crash interrupted starts over (its content is still local).
            for digest in report.interrupted if report is not None else ():
                self.uploader.offer(digest)
            # A bucket that could not be swept (down at start) is tried again soon.
            await asyncio.sleep(SWEEP_INTERVAL if report is not None else SWEEP_RETRY)

    async def close(self) -> None:
        if self.eviction is not None:
            await self.eviction.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.uploader.close()
        await self.bucket.close()
