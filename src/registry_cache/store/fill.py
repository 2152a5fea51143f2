"""Single-flight blob fills that any number of clients tail while they grow.

``FillCoordinator`` is the contract: who fills a digest and where followers read
it. ``LocalFills`` is the one-machine implementation: the first request for a
missing blob takes an exclusive ``flock`` on ``fills/<digest>.partial`` and queues
one upstream fetch on the fill thread pool (a thread only once a slot is free:
N distinct cold digests never mean N threads). Everyone
else streams the same growing file: requests in this process through a ``Fill``
(woken by the fill thread as bytes land), requests in other worker processes
through a ``RemoteFill`` (which polls the file's size and the lock). The fill
does not belong to any client, so it goes on when the first one disconnects,
for at most ``fill_timeout`` without clients.

Readers never get the final byte before the digest has been verified: on a
mismatch they are cut off one byte short, so no client ever completes a download
of corrupt content. A fill that breaks mid-way resumes with a Range request; a
partial left by a crash is re-hashed and resumed by the next fill.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import fcntl
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from urllib3.exceptions import HTTPError as Urllib3Error

from .. import metrics
from ..digest import Digest
from ..errors import BadGateway, DigestMismatch, InsufficientStorage, RegistryError, Unavailable
from ..index.front import IndexFront
from ..units import format_size
from .blobs import FileBlobStore
from .inflight import incoming
from .layout import Layout
from .pipes import CHUNK, HashPipe, ReadSizer, WritePipe, rehash_existing
from .progress import FillClock, FillProgress

log = logging.getLogger("registry_cache.fill")

# Readers are woken every 4 MiB (and at the first and last byte), not every chunk:
# each wake-up costs a loop turn and a sendfile call; measured -25% CPU per GiB.
NOTIFY_EVERY = 4 << 20
# ...or when this long has passed since the last wake-up: a slow upstream's bytes
# must reach clients as they arrive, not in 4 MiB bursts seconds apart.
NOTIFY_INTERVAL = 0.05
HOLDBACK = 1  # bytes kept from readers until the digest checks out
MAX_RESUMES = 5
COMMIT_WAIT = 2.0  # at shutdown, for verified fills to commit
REMOTE_POLL = 0.005


class BlobSource(Protocol):
    """An upstream blob body (upstream.client.BlobStream satisfies it)."""

    @property
    def start(self) -> int: ...

    @property
    def size(self) -> int | None: ...

    def readinto(self, buffer: memoryview) -> int: ...

    def close(self) -> None: ...


# open(offset) -> a source positioned at ``start`` (== offset after a Range request).
Opener = Callable[[int], BlobSource]


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a fill's bytes come from: the repository it was fetched for gets a link."""

    upstream: str
    repository: str


class FillListener(Protocol):
    """Told about fills (the evictor): explicit, passed to the coordinator's constructor."""

    def before_fill(self, digest: Digest, size: int) -> None:
        """On the fill thread once upstream told the size: make room. Must not raise."""

    def after_fill(self, fill: Fill) -> None:
        """On the loop thread once a fill ended: failed, or committed and its object
        recorded in the index (or the attempt to record it over)."""


class FillFailed(Exception):
    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class FillReader(Protocol):
    """What the web layer needs to stream a blob that is still arriving.

    ``FillCoordinator.join_or_start`` hands out readers already attached; whoever
    holds one calls ``detach()`` exactly once when done with it.
    """

    digest: Digest

    @property
    def origin(self) -> Origin | None:
        """The repository the fill fetches for (known once upstream answered)."""

    async def wait_size(self) -> int:
        """Total size, once upstream told us; raises FillFailed."""

    async def readable(self, pos: int) -> int:
        """Wait until bytes beyond ``pos`` may be sent; return the readable end."""

    def open(self) -> BinaryIO:
        """A file object on the growing file (same inode after commit)."""

    def attach(self) -> None: ...

    def detach(self) -> None: ...


class Fill:
    """One upstream fetch of one blob in this process."""

    def __init__(
        self,
        digest: Digest,
        partial: Path,
        lock_fd: int,
        loop: asyncio.AbstractEventLoop,
        *,
        fill_timeout: float,
        origin: Origin,
        listener: FillListener | None = None,
    ) -> None:
        self.digest = digest
        self.origin = origin
        self.partial = partial
        self.started_at = time.time()
        self.clock = FillClock(time.monotonic())
        self._fd = lock_fd  # read/write, holds the exclusive flock until the fill ends
        # Readers dup this one: it outlives the fill for clients still streaming.
        self._read_fd: int | None = os.open(partial, os.O_RDONLY)
        self._loop = loop
        self._fill_timeout = fill_timeout
        self.size: int | None = None
        self.received = 0  # bytes read from upstream (resume offset)
        self.written = 0  # bytes in the file, readable by clients
        self.verified = False
        self.done = False
        self.error: BaseException | None = None
        self.upstream_bytes = 0
        self.resumes = 0
        self._listener = listener
        self._clients = 0
        self._idle_since: float | None = time.monotonic()
        self._changed: asyncio.Future[None] = loop.create_future()
        self._notify_pending = False
        self._late_pending = False  # a timer will wake readers for bytes not yet announced
        self._woken_at = 0.0  # monotonic time of the write thread's last wake-up call
        self.finished: asyncio.Future[None] = loop.create_future()

    # ---------------------------------------------------------- reader side

    def attach(self) -> None:
        self._clients += 1
        self._idle_since = None

    def detach(self) -> None:
        self._clients -= 1
        if self._clients <= 0:
            self._idle_since = time.monotonic()
            self.release_reader()

    def release_reader(self) -> None:
        """Close the readers' fd once the fill is over and nobody streams it (loop thread)."""
        if self._clients <= 0 and self.finished.done() and self._read_fd is not None:
            os.close(self._read_fd)
            self._read_fd = None

    def open(self) -> BinaryIO:
        if self._read_fd is None:
            raise FillFailed(RuntimeError("fill reader opened after release"))
        # sendfile passes explicit offsets, so sharing the file position is harmless.
        return os.fdopen(os.dup(self._read_fd), "rb", buffering=0)

    async def wait_size(self) -> int:
        while self.size is None:
            self._raise_if_failed()
            await asyncio.shield(self._changed)
        self._raise_if_failed()
        return self.size

    async def readable(self, pos: int) -> int:
        while True:
            self._raise_if_failed()
            end = self._readable_end()
            if end > pos:
                return end
            await asyncio.shield(self._changed)

    def _readable_end(self) -> int:
        if self.verified or self.size is None:
            return self.written if self.verified else max(0, self.written - HOLDBACK)
        return min(self.written, self.size - HOLDBACK)

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            raise FillFailed(self.error)

    # ---------------------------------------------------------- thread side

    def _notify(self) -> None:
        """Called from the fill thread; coalesces wake-ups to one per loop turn."""
        if self._notify_pending:
            return
        self._notify_pending = True
        self._call_soon(self._wake)

    def _call_soon(self, callback: Callable[..., None], *args: object) -> None:
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop closed under us (shutdown): nobody is listening
            pass

    def _wake(self) -> None:
        self._notify_pending = False
        changed, self._changed = self._changed, self._loop.create_future()
        changed.set_result(None)

    @property
    def followers(self) -> int:
        return max(0, self._clients)

    def abandoned(self) -> bool:
        idle = self._idle_since
        return idle is not None and time.monotonic() - idle > self._fill_timeout

    def run(self, opener: Opener, store: FileBlobStore, layout: Layout) -> None:
        """The fill thread: fetch, write, hash, verify, publish. Never raises."""
        try:
            self._fetch(opener, layout)
            os.fsync(self._fd)
            # The note goes first: once the blob is visible, fills/ holds nothing of it.
            _unlink(layout.size_note(self.digest))
            store.commit(self.digest, self.partial)
            self.done = True
            self.clock.committed = self._since_start()
            log.info(
                "filled %s from %s (%s, %d resumes): %s",
                self.digest,
                self.origin.upstream,
                format_size(self.written),
                self.resumes,
                self.clock.text(),
            )
        except BaseException as exc:  # the error is handed to readers, not lost
            error = exc if isinstance(exc, Exception) else RuntimeError(str(exc))
            self.error = _storage_error(error)
            if not isinstance(exc, Unavailable):
                # Bad bytes or a full disk: nothing worth keeping. An interrupted
                # transfer keeps its partial, which the next fill re-hashes and resumes.
                _unlink(self.partial)
            if not isinstance(exc, Exception):
                raise
        finally:
            _unlink(layout.size_note(self.digest))
            os.close(self._fd)  # releases the flock: other workers may now look
            self._notify()
            self._call_soon(_resolve, self.finished, self.error)

    def _fetch(self, opener: Opener, layout: Layout) -> None:
        hasher = HashPipe(self.digest.hasher())
        sink = WritePipe(self._fd, self._written)
        try:
            self.received = self.written = rehash_existing(self._fd, hasher)
            if self.written:
                log.info("resuming partial %s at %d bytes", self.digest, self.written)
                metrics.fill_resume("partial")
            self._download(opener, hasher, sink, layout)
        finally:
            sink.finish()
            actual = hasher.finish()
        if self.size is not None and self.written != self.size:
            raise BadGateway(f"blob {self.digest}: got {self.written} of {self.size} bytes")
        if actual != self.digest.hex:
            actual_digest = f"{self.digest.algorithm}:{actual}"
            metrics.digest_mismatch("blob")
            raise DigestMismatch(str(self.digest), actual_digest, self.written)
        if self.size is None:
            self.size = self.written
        self.verified = True
        self.clock.verified = self._since_start()
        self._notify()

    def _since_start(self) -> float:
        return self.clock.since_start(time.monotonic())

    def _download(self, opener: Opener, hasher: HashPipe, sink: WritePipe, layout: Layout) -> None:
        failures = 0
        while self.size is None or self.received < self.size:
            if self.abandoned():
                raise Unavailable(f"fill of {self.digest} abandoned: no client for a while")
            try:
                source = opener(self.received)
            except Unavailable:
                failures += 1
                if failures > MAX_RESUMES or not self.received:
                    raise
                time.sleep(min(2.0, 0.2 * failures))
                continue
            if self.clock.answered is None:
                self.clock.answered = self._since_start()
            try:
                self._accept_source(source, layout)
                finished = self._copy(source, hasher, sink)
                if finished:
                    self.clock.last_byte = self._since_start()
            except (Urllib3Error, ConnectionError, TimeoutError) as exc:
                failures += 1
                self.resumes += 1
                metrics.fill_resume("broken")
                log.warning(
                    "fill %s broke at %d bytes (%s); resuming with Range",
                    self.digest,
                    self.received,
                    type(exc).__name__,
                )
                if failures > MAX_RESUMES:
                    raise Unavailable(
                        f"upstream kept breaking while sending {self.digest}"
                    ) from None
                time.sleep(min(2.0, 0.1 * failures))
                continue
            finally:
                source.close()
            if finished:
                return
            failures += 1
            self.resumes += 1
            metrics.fill_resume("short")
            if failures > MAX_RESUMES:
                raise Unavailable(f"upstream kept closing early while sending {self.digest}")

    def _accept_source(self, source: BlobSource, layout: Layout) -> None:
        if source.start not in (self.received, 0):
            raise BadGateway(f"upstream resumed {self.digest} at the wrong offset")
        if source.size is not None:
            if self.size is None:
                self.size = source.size  # readers learn it below (or with the failure)
                _write_size_note(layout, self.digest, source.size, self.origin)
                if self._listener is not None:
                    self._listener.before_fill(self.digest, source.size)
                # After eviction had its chance and before any client gets its 200:
                # a blob that cannot fit is a clean 507, not an aborted download.
                _check_room(layout, source.size - self.received, self.digest)
                self._notify()
            elif source.size != self.size:
                raise BadGateway(f"upstream changed the size of {self.digest}")
        if source.start == 0 and self.received:
            # Upstream ignored our Range: skip what we already have (already hashed).
            _skip(source, self.received)

    def _copy(self, source: BlobSource, hasher: HashPipe, sink: WritePipe) -> bool:
        """Copy until EOF; True when the source ended where the blob ends.

        Three stages overlap: this thread reads the socket, ``hasher`` hashes and
        ``sink`` writes the file, each on its own thread (all release the GIL).
        """
        sizer = ReadSizer()
        while True:
            sink.check()
            if self.size is not None and self.received >= self.size:
                return True
            view = memoryview(bytearray(sizer.size))
            started = time.monotonic()
            count = source.readinto(view)
            sizer.took(time.monotonic() - started, full=count == len(view))
            if count == 0:
                return self.size is None or self.received >= self.size
            if self.size is not None and self.received + count > self.size:
                raise BadGateway(f"upstream sent more than {self.size} bytes for {self.digest}")
            if self.clock.first_byte is None:
                self.clock.first_byte = self._since_start()
            chunk = view[:count]
            hasher.update(chunk)
            sink.write(self.received, chunk)
            self.received += count
            self.upstream_bytes += count
            if self.abandoned():
                raise Unavailable(f"fill of {self.digest} abandoned: no client for a while")

    def _written(self, end: int) -> None:
        """Called by the write thread once bytes up to ``end`` are in the file."""
        previous, self.written = self.written, end
        now = time.monotonic()
        if (
            previous == 0
            or end // NOTIFY_EVERY != previous // NOTIFY_EVERY
            or end == self.size
            or now - self._woken_at >= NOTIFY_INTERVAL
        ):
            self._woken_at = now
            self._notify()
        elif not self._late_pending:
            # Not announced now: if upstream stalls after these bytes, a timer still
            # hands them to readers within NOTIFY_INTERVAL.
            self._late_pending = True
            self._call_soon(self._arm_late_wake)

    def _arm_late_wake(self) -> None:
        self._loop.call_later(NOTIFY_INTERVAL, self._late_wake)

    def _late_wake(self) -> None:
        self._late_pending = False
        if not self._notify_pending:
            self._wake()


class RemoteFill:
    """A fill running in another worker process, followed through the file system."""

    def __init__(self, digest: Digest, layout: Layout, fd: int) -> None:
        self.digest = digest
        self._layout = layout
        self._fd = fd
        self.size: int | None = None
        self.origin: Origin | None = None
        self._seen_commit = False

    def attach(self) -> None:
        pass

    def detach(self) -> None:
        os.close(self._fd)

    def open(self) -> BinaryIO:
        return os.fdopen(os.dup(self._fd), "rb", buffering=0)

    def _filler_alive(self) -> bool:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        return False

    def _committed(self) -> bool:
        """The filler published this inode (FileBlobStore.commit makes it read-only);
        still true after eviction unlinked it: we stream our descriptor, not the path."""
        if not self._seen_commit:
            self._seen_commit = os.fstat(self._fd).st_mode & 0o222 == 0
        return self._seen_commit

    async def wait_size(self) -> int:
        while self.size is None:
            note = _read_size_note(self._layout, self.digest)
            if note is not None:
                self.size, self.origin = note
                break
            if self._committed():
                self.size = os.fstat(self._fd).st_size
                break
            if not self._filler_alive() and not self._committed():
                raise FillFailed(Unavailable(f"fill of {self.digest} failed in another worker"))
            await asyncio.sleep(REMOTE_POLL)
        return self.size

    async def readable(self, pos: int) -> int:
        size = await self.wait_size()
        while True:
            if self._committed():
                return size
            written = os.fstat(self._fd).st_size
            end = min(written, size - HOLDBACK)
            if end > pos:
                return end
            if not self._filler_alive() and not self._committed():
                raise FillFailed(Unavailable(f"fill of {self.digest} failed in another worker"))
            await asyncio.sleep(REMOTE_POLL)


class FillCoordinator(Protocol):
    """Who fills a digest, and where followers read it (one machine or a cluster)."""

    def in_process(self, digest: Digest) -> Fill | None:
        """The fill of ``digest`` running in this process, if any."""

    async def join_or_start(
        self, digest: Digest, origin: Origin, opener: Opener
    ) -> tuple[FillReader, bool] | None:
        """(reader, started_here) already attached, or None when the blob was
        committed meanwhile (serve it as a hit)."""

    def progress(self) -> list[FillProgress]: ...

    def partial_size(self, digest: Digest) -> int | None:
        """Bytes written so far by a fill of ``digest`` on this machine (any worker),
        None when there is none."""

    async def close(self) -> None: ...


class LocalFills:
    """Single flight on one machine: an flock per digest, followers tail the file."""

    def __init__(
        self,
        store: FileBlobStore,
        index: IndexFront,
        *,
        listener: FillListener | None = None,
        fill_timeout: float = 900.0,
        max_fills: int = 64,
    ) -> None:
        self.store = store
        self.layout = store.layout
        self.index = index
        self.listener = listener
        self.fill_timeout = fill_timeout
        self.fills: dict[Digest, Fill] = {}
        self._pool = ThreadPoolExecutor(max_fills, thread_name_prefix="fill")
        self._records: dict[Digest, asyncio.Task[None]] = {}

    def in_process(self, digest: Digest) -> Fill | None:
        return self.fills.get(digest)

    def progress(self) -> list[FillProgress]:
        """A snapshot of this process's fills in flight (read-only, for the dashboard)."""
        return [
            FillProgress(
                str(digest),
                fill.size,
                fill.written,
                fill.followers,
                fill.origin.upstream,
                fill.origin.repository,
                fill.started_at,
            )
            for digest, fill in list(self.fills.items())
        ]

    def partial_size(self, digest: Digest) -> int | None:
        try:
            return os.stat(self.layout.partial(digest)).st_size
        except OSError:
            return None

    async def join_or_start(
        self, digest: Digest, origin: Origin, opener: Opener
    ) -> tuple[FillReader, bool] | None:
        fill = self.fills.get(digest)
        if fill is not None:
            fill.attach()
            return fill, False
        path = self.layout.partial(digest)
        self.layout.fills.mkdir(parents=True, exist_ok=True)
        for _ in range(10):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                remote = RemoteFill(digest, self.layout, fd)
                remote.attach()
                return remote, False
            if not _same_file(fd, path):
                # Committed (renamed) between our open and our lock: look again.
                os.close(fd)
                if self.store.stat_now(digest) is not None:
                    return None
                continue
            if self.store.stat_now(digest) is not None:
                os.close(fd)
                _unlink(path)
                return None
            os.fchmod(fd, 0o644)  # writable until committed, whatever the umask (see RemoteFill)
            started = self._start(digest, origin, path, fd, opener)
            started.attach()
            return started, True
        raise Unavailable(f"could not start a fill for {digest}")

    def follow(self, digest: Digest) -> FillReader | None:
        """An attached reader on a fill already running on this machine (in this
        process or another worker), None when there is none. Never starts one."""
        fill = self.fills.get(digest)
        if fill is not None:
            fill.attach()
            return fill
        path = self.layout.partial(digest)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # a filler holds it exclusively: follow it
            remote = RemoteFill(digest, self.layout, fd)
            remote.attach()
            return remote
        os.close(fd)  # nobody fills it (a leftover partial)
        return None

    def _start(self, digest: Digest, origin: Origin, path: Path, fd: int, opener: Opener) -> Fill:
        loop = asyncio.get_running_loop()
        fill = Fill(
            digest,
            path,
            fd,
            loop,
            fill_timeout=self.fill_timeout,
            origin=origin,
            listener=self.listener,
        )
        self.fills[digest] = fill

        def tell(*_: object) -> None:
            if self.listener is not None:
                self.listener.after_fill(fill)

        def done(_: asyncio.Future[None]) -> None:
            self.fills.pop(digest, None)
            fill.release_reader()
            if fill.done and fill.error is None:
                task = loop.create_task(self._record(fill))
                self._records[digest] = task
                task.add_done_callback(lambda _: self._records.pop(digest, None))
                # The evictor measures the index's totals: told before the object's row
                # lands, it would see the cache under its cap and wait a whole interval.
                task.add_done_callback(tell)
            else:
                tell()

        fill.finished.add_done_callback(done)
        # In the starting request's context: its id goes with the upstream requests.
        run = contextvars.copy_context().run
        self._pool.submit(run, fill.run, opener, self.store, self.layout)
        return fill

    async def _record(self, fill: Fill) -> None:
        """The index learns of a committed fill (best effort: the file is the truth)."""
        digest = str(fill.digest)
        await self.index.link(fill.origin.upstream, fill.origin.repository, [digest])
        await self.index.add_object(digest, fill.written)

    async def recorded(self, digest: Digest) -> None:
        """Once a just-committed fill of ``digest`` is in the index (at once if none is
        pending): the cluster gives a fill's lease back only then (cluster/fills.py)."""
        task = self._records.get(digest)
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    async def close(self) -> None:
        # A fill whose last byte is verified is fsyncing and committing: let it record
        # its object before the index closes (bounded; an abandoned fill is not awaited).
        committing = [fill.finished for fill in list(self.fills.values()) if fill.verified]
        if committing:
            await asyncio.wait(committing, timeout=COMMIT_WAIT)
        if self._records:
            await asyncio.gather(*self._records.values(), return_exceptions=True)
        # Fill threads are left to end by themselves (their fill_timeout bounds them).
        self._pool.shutdown(wait=False, cancel_futures=True)


def _storage_error(error: Exception) -> Exception:
    """A full disk anywhere in a fill (size note, fsync) is a 507, like one in a write;
    an error nobody foresaw is still upstream's failure to the client: a 502."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientStorage("no space left in the cache's data directory")
    if not isinstance(error, RegistryError | DigestMismatch):
        log.error("fill failed unexpectedly", exc_info=error)
        return BadGateway(f"fetching the blob from upstream failed ({type(error).__name__})")
    return error


def _check_room(layout: Layout, needed: int, digest: Digest) -> None:
    """507 unless ``needed`` bytes fit beside what other fills in flight still write."""
    try:
        st = os.statvfs(layout.fills)
    except OSError:
        return
    free = st.f_bavail * st.f_frsize
    promised = incoming(layout, besides=digest).unwritten
    if needed + promised > free:
        others = f" ({promised} promised to other downloads)" if promised else ""
        raise InsufficientStorage(
            f"no room in the cache's data directory: the blob needs {needed} bytes, "
            f"{free} are free{others}"
        )


def _skip(source: BlobSource, count: int) -> None:
    buffer = memoryview(bytearray(CHUNK))
    while count > 0:
        got = source.readinto(buffer[: min(CHUNK, count)])
        if got == 0:
            raise BadGateway("upstream ended while skipping already-stored bytes")
        count -= got


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _write_size_note(layout: Layout, digest: Digest, size: int, origin: Origin) -> None:
    """``fills/<digest>.size``: the size, then the upstream and repository fetched for
    (one per line), so followers in other workers know both (see inflight.py)."""
    note = layout.size_note(digest)
    tmp = note.with_name(note.name + f".{os.getpid()}.tmp")
    try:
        tmp.write_text(f"{size}\n{origin.upstream}\n{origin.repository}\n")
        os.replace(tmp, note)
    except OSError:
        _unlink(tmp)  # a full disk must not leave litter behind
        raise


def _read_size_note(layout: Layout, digest: Digest) -> tuple[int, Origin | None] | None:
    try:
        lines = layout.size_note(digest).read_text().split("\n")
        size = int(lines[0])
    except (FileNotFoundError, ValueError):
        return None
    origin = Origin(lines[1], lines[2]) if len(lines) >= 3 and lines[1] else None
    return size, origin


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _resolve(future: asyncio.Future[None], error: BaseException | None) -> None:
    if not future.done():
        future.set_result(None)


__all__ = [
    "BlobSource",
    "Fill",
    "FillCoordinator",
    "FillFailed",
    "FillListener",
    "FillProgress",
    "FillReader",
    "LocalFills",
    "Origin",
    "RegistryError",
    "RemoteFill",
]
