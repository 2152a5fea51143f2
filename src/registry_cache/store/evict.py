"""Bounded disk: least-recently-used eviction of whole objects (blobs and manifests).

Planning is pure (``bytes_over``, ``need_bytes``, ``plan``: numbers in, a list of
victims out) and unit-tested without I/O; ``Evictor`` measures, walks the index in
LRU order one page at a time (memory stays flat however many objects there are),
deletes files, then their rows in short batches.

Watermarks
    A limit (``max_size`` bytes, or ``max_disk_percent`` of the file system holding
    the data directory, measured with ``statvfs``) is enforced with hysteresis: when
    usage goes above the high watermark of it (``evict_at_percent``, 95%), objects
    are evicted until usage is at most the low one (``evict_to_percent``, 90%), so
    eviction runs in batches, not per fill.
    Usage counts the index's object sizes plus the sizes announced by fills in
    flight (their ``fills/*.size`` notes), so a fill makes room *before* its bytes
    arrive. ``max_age`` evicts every object not accessed for that long.

The cap is a bound
    Victims are taken least recently used first, recently used ones included when
    nothing older is left: the data directory stays within the cap apart from what
    fills in flight still have to write. Never evicted:

    - a digest with anything under ``fills/`` (a fill in flight in any worker, or a
      partial waiting to be resumed). Checked by name, never by probing the lock:
      a probe could make a worker that is just starting that fill believe another
      worker owns it;
    - a blob being served: every open ``FileBody`` holds a shared ``flock`` on its
      file and eviction's non-blocking exclusive ``flock`` fails on it, in any worker.
      (Followers of a fill read their own descriptor of the inode, so unlinking it
      under them is harmless: they tell a commit by the file's read-only mode.)

Consistency
    Files are deleted first, then their index rows (and tags naming an evicted
    manifest, so the tag is resolved again upstream on its next pull). A crash in
    between leaves rows without files, which the proxy treats as absent (it refetches)
    and ``cache gc`` / ``cache verify`` remove. Repository links are kept: they record
    what upstream let a repository see, which eviction does not change.

Cross-worker
    Whoever evicts (any worker, ``cache gc``/``prune``/``verify``) holds an exclusive
    ``flock`` on ``DATA/evict.lock``; a periodic run that finds it taken skips.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from .. import metrics
from ..config import Settings
from ..digest import Digest
from ..errors import RegistryError
from ..index.front import IndexFront
from .blobs import FileBlobStore
from .inflight import incoming
from .layout import Layout

log = logging.getLogger("registry_cache.evict")

HIGH_WATERMARK = 0.95
LOW_WATERMARK = 0.90
LOCK_WAIT = 2.0  # a fill waits this long for another process's eviction, then goes on
HEADROOM = 64 << 20  # kept free beside a blob being filled (manifests, the index, notes)
AGE_INTERVAL = 60.0  # max_age alone needs a walk of the index at most this often
PAGE = 1000  # index rows per LRU page


@dataclass(frozen=True, slots=True)
class Entry:
    """An object as the planner sees it."""

    digest: str
    size: int
    last_access: float


@dataclass(frozen=True, slots=True)
class Plan:
    victims: tuple[Entry, ...]
    freed: int
    shortfall: int  # bytes still wanted after every evictable object was taken


@dataclass(frozen=True, slots=True)
class Limits:
    max_size: int | None = None
    max_disk_percent: float | None = None
    max_age: float | None = None
    high: float = HIGH_WATERMARK  # fractions of a limit
    low: float = LOW_WATERMARK

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            settings.max_size,
            settings.max_disk_percent,
            settings.max_age,
            high=settings.evict_at_percent / 100,
            low=settings.evict_to_percent / 100,
        )

    @property
    def bounded(self) -> bool:
        return bool(self.max_size) or bool(self.max_disk_percent)

    @property
    def active(self) -> bool:
        return self.bounded or bool(self.max_age)


@dataclass(frozen=True, slots=True)
class Usage:
    stored: int  # sizes of indexed objects
    incoming: int  # sizes announced by fills in flight
    incoming_unwritten: int  # of those, bytes not yet on disk
    disk_used: int | None = None  # statvfs of the data directory's file system
    disk_size: int | None = None  # used + available to us (what df's Use% divides by)


def bytes_over(
    usage: int, capacity: int, high: float = HIGH_WATERMARK, low: float = LOW_WATERMARK
) -> int:
    """0 while ``usage`` <= ``high`` x capacity; else the bytes to free to reach ``low``."""
    if usage <= high * capacity:
        return 0
    return max(0, usage - math.floor(low * capacity))


def need_bytes(usage: Usage, limits: Limits) -> int:
    """Bytes to free so every configured limit is back under its low watermark."""
    need = 0
    if limits.max_size:
        need = bytes_over(usage.stored + usage.incoming, limits.max_size, limits.high, limits.low)
    if limits.max_disk_percent and usage.disk_size and usage.disk_used is not None:
        capacity = math.floor(usage.disk_size * limits.max_disk_percent / 100)
        used = usage.disk_used + usage.incoming_unwritten
        need = max(need, bytes_over(used, capacity, limits.high, limits.low))
    return need


def plan(
    entries: Iterable[Entry],
    need: int,
    *,
    now: float,
    pinned: Collection[str] = frozenset(),
    max_age: float | None = None,
) -> Plan:
    """Least recently used first until ``need`` bytes, plus everything older than ``max_age``.

    Pinned digests are never chosen; recently used ones are, when nothing older is left.
    """
    cutoff = now - max_age if max_age else None
    victims: list[Entry] = []
    freed = 0
    for entry in sorted(entries, key=lambda e: (e.last_access, e.digest)):
        expired = cutoff is not None and entry.last_access < cutoff
        if freed >= need and not expired:
            break  # sorted by access time: nothing later is expired either
        if entry.digest in pinned:
            continue
        victims.append(entry)
        freed += entry.size
    return Plan(tuple(victims), freed, max(0, need - freed))


# ---------------------------------------------------------------------- I/O


def in_flight(layout: Layout) -> set[str]:
    """Digests with a partial or size note under ``fills/`` (see Pinning)."""
    digests: set[str] = set()
    try:
        names = os.listdir(layout.fills)
    except FileNotFoundError:
        return digests
    for name in names:
        digest = Layout.digest_of_fill_path(layout.fills / name)
        if digest is not None:
            digests.add(str(digest))
    return digests


async def measure(layout: Layout, index: IndexFront, *, disk: bool = False) -> Usage:
    # The index first, the fills second. A fill removes its size note before it
    # commits and gets its row after, so one committing between the two reads is
    # missed by both here (the pass it triggers when its row lands counts it). The
    # other order counted it twice, and a worker then evicted the objects a client had
    # just pulled, the fill's own blob included (its note gone, nothing pinned it).
    stored = await index.index.total_size()
    pending = await asyncio.to_thread(incoming, layout)
    used = total = None
    if disk:
        st = os.statvfs(layout.root)
        used = (st.f_blocks - st.f_bfree) * st.f_frsize
        total = used + st.f_bavail * st.f_frsize
    return Usage(stored, pending.announced, pending.unwritten, used, total)


@asynccontextmanager
async def evict_lock(layout: Layout, wait: float = 0.0) -> AsyncIterator[bool]:
    """Hold ``DATA/evict.lock``; yields False when another process kept it for ``wait`` s."""
    fd = os.open(layout.evict_lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                await asyncio.sleep(0.05)
        yield True
    finally:
        os.close(fd)  # releases the lock


def unlink_unless_busy(layout: Layout, digest: Digest) -> int | None:
    """Delete a blob file unless it is being served.

    Returns the bytes freed (0: already gone), or None when it must stay. Holding
    the exclusive lock while unlinking means no reader could take its shared lock
    on this file in between; one that opens it right after the unlink fails to
    find it and fetches again.
    """
    path = layout.blob_str(digest)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None  # a response is reading it (FileBody holds LOCK_SH)
        st = os.fstat(fd)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return 0
        return st.st_size
    finally:
        os.close(fd)


def unlink_batch(layout: Layout, entries: Sequence[Entry]) -> list[Entry]:
    """``unlink_unless_busy`` over a batch (one thread hop for many files)."""
    busy = in_flight(layout)
    removed: list[Entry] = []
    for entry in entries:
        try:
            digest = Digest.parse(entry.digest)
        except RegistryError:
            continue
        if entry.digest in busy:
            continue
        if unlink_unless_busy(layout, digest) is not None:
            removed.append(entry)
    return removed


async def remove_objects(
    store: FileBlobStore, index: IndexFront, victims: Sequence[Entry]
) -> list[Entry]:
    """Delete victims' files, then their rows; returns those removed (call under evict_lock)."""
    removed = await asyncio.to_thread(unlink_batch, store.layout, victims)
    await forget(index, store, [e.digest for e in removed])
    return removed


async def forget(index: IndexFront, store: FileBlobStore, digests: Sequence[str]) -> None:
    """Drop index rows (object, and tags naming it) of objects whose file is gone."""
    gone = []
    for text in digests:
        try:
            if store.stat_now(Digest.parse(text)) is not None:
                continue  # filled again meanwhile: its row is current
        except RegistryError:
            pass
        gone.append(text)
    if gone:
        await index.index.forget(gone)


@dataclass(frozen=True, slots=True)
class Report:
    ran: bool  # False: another process held the lock, or nothing was needed
    need: int = 0
    removed: tuple[Entry, ...] = ()
    shortfall: int = 0

    @property
    def freed(self) -> int:
        return sum(e.size for e in self.removed)


class Evictor:
    """Keeps one data directory within its limits; one per process, on its event loop."""

    def __init__(
        self,
        store: FileBlobStore,
        index: IndexFront,
        limits: Limits,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.layout = store.layout
        self.index = index
        self.limits = limits
        self._clock = clock
        self._running = asyncio.Lock()
        self._aged_at = 0.0  # last walk for max_age

    async def need(self) -> int:
        if not self.limits.bounded:
            return 0
        usage = await measure(self.layout, self.index, disk=bool(self.limits.max_disk_percent))
        return need_bytes(usage, self.limits)

    async def run(self, *, wait: float = 0.0, at_least: int = 0) -> Report:
        """Evict what the limits (and ``at_least`` extra bytes, if bounded) call for."""
        if self._running.locked() and wait <= 0:
            return Report(ran=False)
        try:
            await asyncio.wait_for(self._running.acquire(), wait if wait > 0 else None)
        except TimeoutError:
            return Report(ran=False)
        try:
            async with evict_lock(self.layout, wait) as held:
                if not held:
                    return Report(ran=False)
                return await self._run_locked(at_least)
        finally:
            self._running.release()

    async def _run_locked(self, at_least: int) -> Report:
        need = await self.need()
        if self.limits.bounded:
            need = max(need, at_least)
        now = self._clock()
        age_due = bool(self.limits.max_age) and now - self._aged_at >= AGE_INTERVAL
        if not need and not age_due:
            return Report(ran=False)
        if age_due:
            self._aged_at = now
        log.log(
            logging.INFO if need else logging.DEBUG,  # an age-only walk every minute: quiet
            "eviction pass: %d bytes to free%s",
            need,
            " and what was not used for max_age" if age_due else "",
        )
        # This worker's recent hits must count before victims are picked; other
        # workers' are at most their flush interval (5 s) late.
        await self.index.flush()
        began = time.monotonic()
        removed = await self._walk(need, now)
        shortfall = max(0, need - sum(e.size for e in removed))
        report = Report(True, need, tuple(removed), shortfall)
        if removed:
            _count(removed, now - self.limits.max_age if self.limits.max_age else None)
            log.info(
                "evicted %d object(s), %d bytes (wanted %d) in %.1fs",
                len(removed),
                report.freed,
                need,
                time.monotonic() - began,
            )
        if shortfall:
            log.warning("cannot free %d more bytes: the rest is being filled or served", shortfall)
        return report

    async def _walk(self, need: int, now: float) -> list[Entry]:
        """Pages of the index in LRU order until enough is freed and nothing has expired."""
        cutoff = now - self.limits.max_age if self.limits.max_age else None
        pinned = await asyncio.to_thread(in_flight, self.layout)
        removed: list[Entry] = []
        freed = 0
        cursor = None
        # A page's rows are dropped while the next page's files are unlinked (the
        # index and the file system work at once; at most one page's rows pending).
        # Cancelled (SIGTERM) mid-page, the page is finished first: the thread unlinks
        # its batch anyway, and its rows must go with the files (a second or less).
        forgetting: asyncio.Task[None] | None = None
        unlinking: asyncio.Future[list[Entry]] | None = None
        try:
            while True:
                rows = await self.index.index.objects_page(cursor, PAGE)
                if not rows:
                    return removed
                cursor = (rows[-1].last_access, rows[-1].digest)
                entries = [Entry(r.digest, r.size, r.last_access) for r in rows]
                chosen = plan(
                    entries,
                    max(0, need - freed),
                    now=now,
                    pinned=pinned,
                    max_age=self.limits.max_age,
                )
                if chosen.victims:
                    unlinking = asyncio.ensure_future(
                        asyncio.to_thread(unlink_batch, self.layout, chosen.victims)
                    )
                    done = await asyncio.shield(unlinking)
                    unlinking = None
                    forgetting = await self._forget_next(forgetting, done)
                    removed += done
                    freed += sum(e.size for e in done)
                satisfied = freed >= need
                expired_left = cutoff is not None and rows[-1].last_access < cutoff
                if satisfied and not expired_left:
                    return removed
        finally:
            if unlinking is not None:
                forgetting = await self._forget_next(forgetting, await unlinking)
            if forgetting is not None:
                await forgetting

    async def _forget_next(
        self, previous: asyncio.Task[None] | None, done: Sequence[Entry]
    ) -> asyncio.Task[None]:
        """Wait for the previous page's rows to be dropped, then start on ``done``'s."""
        if previous is not None:
            await previous
        return asyncio.create_task(forget(self.index, self.store, [e.digest for e in done]))

    async def make_room(self, digest: Digest, size: int) -> Report:
        """Before a fill of ``size`` bytes: within the limits, and beyond them whatever
        the file system lacks for this blob (a cap larger than the disk, or other data
        on it); the fill checks for room next and answers 507 if there is none."""
        short = await asyncio.to_thread(disk_shortfall, self.layout, size, besides=digest)
        if short or await self.need():
            return await self.run(wait=LOCK_WAIT, at_least=short)
        return Report(ran=False)


def _count(removed: Sequence[Entry], age_cutoff: float | None) -> None:
    """Metrics: an object past ``--max-age`` went for its age, any other for space."""
    aged = [e for e in removed if age_cutoff is not None and e.last_access < age_cutoff]
    spaced = [e for e in removed if age_cutoff is None or e.last_access >= age_cutoff]
    for reason, entries in (("age", aged), ("space", spaced)):
        if entries:
            metrics.evicted(reason, len(entries), sum(e.size for e in entries))


def disk_shortfall(
    layout: Layout, size: int, headroom: int = HEADROOM, *, besides: Digest | None = None
) -> int:
    """Bytes to free so ``size`` more (plus ``headroom``) fit on the data directory's
    disk beside what the other fills in flight (all but ``besides``) still write."""
    try:
        st = os.statvfs(layout.root)
    except OSError:
        return 0
    promised = incoming(layout, besides=besides).unwritten
    return max(0, size + promised + headroom - st.f_bavail * st.f_frsize)
