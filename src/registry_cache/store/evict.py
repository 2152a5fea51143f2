"""Bounded disk: least-recently-used eviction of whole objects (blobs and manifests).

Planning is pure (``bytes_over``, ``need_bytes``, ``plan``: numbers in, a list of
victims out) and unit-tested without I/O; ``remove_objects`` executes a plan and
``Evictor`` ties measuring, planning and executing together for the server.

Watermarks
    A limit (``max_size`` bytes, or ``max_disk_percent`` of the file system holding
    the data directory, measured with ``statvfs``) is enforced with hysteresis: when
    usage goes above the high watermark of it (``evict_at_percent``, 95%), objects
    are evicted until usage is at most the low one (``evict_to_percent``, 90%), so
    eviction runs in batches, not per fill.
    Usage counts the index's object sizes plus the sizes announced by fills in
    flight (their ``fills/*.size`` notes), so a fill makes room *before* its bytes
    arrive. ``max_age`` evicts every object not accessed for that long.

Pinning (never evicted)
    - a digest with anything under ``fills/`` (a fill in flight in any worker, or a
      partial waiting to be resumed): its file is being written or about to be.
      Checked by name, never by probing the lock: a probe could make a worker that
      is just starting that fill believe another worker owns it.
    - an object accessed (index ``last_access``) or written (file ``mtime``) less
      than ``grace`` seconds ago (``evict_grace``, 30 s). A hit is sent from a file
      descriptor opened right after its ``stat``, and Linux keeps an unlinked inode
      readable for whoever has it open, so only that instant needs protecting (a
      request that loses that microsecond race fails once, and its retry refetches).
      The evicting worker's batched access times are flushed before planning
      (``Evictor.prepare``); other workers' are up to their flush interval (5 s)
      late, so a blob another worker hit within that time may still be chosen: its
      response is unharmed, the LRU order is merely off for it.
      The ``mtime`` rule protects fills just committed: followers in other workers
      confirm the commit by inode, and only then stop needing the path.
    Because of pinning the limit can be exceeded by what arrived within ``grace``.

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

import fcntl
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from .. import metrics
from ..config import Settings
from ..digest import Digest
from ..errors import RegistryError
from .blobs import FileBlobStore
from .index import Index
from .inflight import incoming
from .layout import Layout

log = logging.getLogger("registry_cache.evict")

HIGH_WATERMARK = 0.95
LOW_WATERMARK = 0.90
DEFAULT_GRACE = 30.0
LOCK_WAIT = 2.0  # a fill waits this long for another process's eviction, then goes on
HEADROOM = 64 << 20  # kept free beside a blob being filled (manifests, the index, notes)
AGE_INTERVAL = 60.0  # max_age alone needs a full scan of the index at most this often


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
    grace: float = DEFAULT_GRACE,
    max_age: float | None = None,
) -> Plan:
    """Least recently used first until ``need`` bytes, plus everything older than ``max_age``.

    Pinned digests and objects accessed within ``grace`` are never chosen.
    """
    cutoff = now - max_age if max_age else None
    victims: list[Entry] = []
    freed = 0
    for entry in sorted(entries, key=lambda e: (e.last_access, e.digest)):
        expired = cutoff is not None and entry.last_access < cutoff
        if freed >= need and not expired:
            break  # sorted by access time: nothing later is expired either
        if entry.digest in pinned or entry.last_access > now - grace:
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


def measure(layout: Layout, index: Index, *, disk: bool = False) -> Usage:
    pending = incoming(layout)
    used = total = None
    if disk:
        st = os.statvfs(layout.root)
        used = (st.f_blocks - st.f_bfree) * st.f_frsize
        total = used + st.f_bavail * st.f_frsize
    return Usage(index.total_size(), pending.announced, pending.unwritten, used, total)


@contextmanager
def evict_lock(layout: Layout, wait: float = 0.0) -> Iterator[bool]:
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
                time.sleep(0.05)
        yield True
    finally:
        os.close(fd)  # releases the lock


def recently_written(layout: Layout, digest: Digest, now: float, grace: float) -> bool:
    try:
        return os.stat(layout.blob(digest)).st_mtime > now - grace
    except FileNotFoundError:
        return False


def remove_objects(
    layout: Layout,
    store: FileBlobStore,
    index: Index,
    victims: Sequence[Entry],
    *,
    now: float,
    grace: float,
) -> list[Entry]:
    """Delete victims' files, then their rows; returns those removed (call under evict_lock).

    The pinning rules are checked again per object right before its unlink, since the
    plan was made from a snapshot.
    """
    busy = in_flight(layout)
    removed: list[Entry] = []
    for entry in victims:
        try:
            digest = Digest.parse(entry.digest)
        except RegistryError:
            continue
        if entry.digest in busy or recently_written(layout, digest, now, grace):
            continue
        store.delete(digest)
        removed.append(entry)
    forget(index, store, [e.digest for e in removed])
    return removed


def forget(index: Index, store: FileBlobStore, digests: Sequence[str]) -> None:
    """Drop index rows (object, and tags naming it) of objects whose file is gone."""
    if not digests:
        return
    with index.transaction() as db:
        for text in digests:
            try:
                if store.stat(Digest.parse(text)) is not None:
                    continue  # filled again meanwhile: its row is current
            except RegistryError:
                pass
            db.execute("DELETE FROM objects WHERE digest = ?", (text,))
            db.execute("DELETE FROM tags WHERE digest = ?", (text,))
        Index.bump_generation(db)


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
    """Keeps one data directory within its limits; thread-safe, one per process.

    Uses its own index connection so its transactions never interleave with the
    event loop's statements.
    """

    def __init__(
        self, layout: Layout, store: FileBlobStore, limits: Limits, grace: float = DEFAULT_GRACE
    ) -> None:
        self.layout = layout
        self.store = store
        self.limits = limits
        self.grace = grace
        self._index: Index | None = None
        # One eviction at a time in this process, and one thread at a time on the
        # connection (fill threads measure, the executor evicts).
        self._lock = threading.RLock()
        self._aged_at = 0.0  # last full scan for max_age
        # Called (on the evicting thread, under the lock) right before victims are
        # picked: the server flushes this worker's batched access times there.
        self.prepare: Callable[[], None] | None = None
        # Told (on whichever thread evicted) what went, e.g. to forget memoised manifests.
        self.on_removed: Callable[[Sequence[Entry]], None] | None = None

    @property
    def index(self) -> Index:
        if self._index is None:
            self._index = Index(self.layout.index)
        return self._index

    def close(self) -> None:
        with self._lock:  # not under a running eviction
            if self._index is not None:
                self._index.close()
                self._index = None

    def need(self) -> int:
        if not self.limits.bounded:
            return 0
        with self._lock:
            usage = measure(self.layout, self.index, disk=bool(self.limits.max_disk_percent))
        return need_bytes(usage, self.limits)

    def run(self, *, wait: float = 0.0, at_least: int = 0) -> Report:
        """Evict what the limits (and ``at_least`` extra bytes, if bounded) call for."""
        acquired = self._lock.acquire(timeout=wait) if wait > 0 else self._lock.acquire(False)
        if not acquired:
            return Report(ran=False)
        try:
            with evict_lock(self.layout, wait) as held:
                if not held:
                    return Report(ran=False)
                return self._run_locked(at_least)
        finally:
            self._lock.release()

    def _run_locked(self, at_least: int) -> Report:
        need = self.need()
        if self.limits.bounded:
            need = max(need, at_least)
        now = time.time()
        if not need and (not self.limits.max_age or now - self._aged_at < AGE_INTERVAL):
            return Report(ran=False)
        self._aged_at = now
        if self.prepare is not None:
            self.prepare()
        entries = [Entry(r.digest, r.size, r.last_access) for r in self.index.objects_by_age()]
        pinned = in_flight(self.layout)
        removed: list[Entry] = []
        shortfall = need
        for _ in range(3):  # again if some victims turned out pinned at unlink time
            chosen = plan(
                entries,
                shortfall,
                now=now,
                pinned=pinned,
                grace=self.grace,
                max_age=self.limits.max_age,
            )
            if not chosen.victims:
                break
            done = remove_objects(
                self.layout, self.store, self.index, chosen.victims, now=now, grace=self.grace
            )
            removed += done
            shortfall = max(0, need - sum(e.size for e in removed))
            pinned = pinned | {e.digest for e in chosen.victims}
            if len(done) == len(chosen.victims) or not shortfall:
                break
        report = Report(True, need, tuple(removed), shortfall)
        if removed and self.on_removed is not None:
            self.on_removed(removed)
        if removed:
            _count(removed, now - self.limits.max_age if self.limits.max_age else None)
            log.info("evicted %d object(s), %d bytes (wanted %d)", len(removed), report.freed, need)
        if shortfall:
            log.warning("cannot free %d more bytes: the rest is in use or too recent", shortfall)
        return report

    def before_fill(self, digest: Digest, size: int) -> None:
        """FillManager hook (fill thread): make room for ``size`` bytes first. Never raises.

        Beyond the watermarks, frees what the file system lacks for this blob (a cap
        larger than the disk, or other data on it): the fill checks for room next and
        answers 507 if there is none.
        """
        try:
            short = disk_shortfall(self.layout, size, besides=digest)
            if short or self.need():
                self.run(wait=LOCK_WAIT, at_least=short)
        except Exception:
            log.exception("eviction before filling %s failed", digest)


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
