"""What the serving path uses: an ``Index`` behind memos and batched access times.

- Tags this process saw confirmed less than a TTL ago, and repository links
  (only ever added while serving), are answered from memory: a hit runs no query.
- Access times are batched (``touch``) and written by ``flush`` on the server's
  5 s beat, so a hit never waits for a write.
- Rows deleted anywhere (eviction in another worker or replica, ``cache
  prune/gc/verify``) make ``watch`` drop the memos: polled for SQLite, told at once
  by PostgreSQL's NOTIFY.
- The index unreachable (PostgreSQL down): reads fall back to the memos or to
  "not known" (the proxy then asks upstream), writes are dropped with a warning,
  and ``health()`` says degraded; the first query that works again clears it.
- A request waits at most ``write_wait`` for its writes (a tag confirmed, a manifest
  stored): SQLite's writer waits up to 30 s for another process's lock (a
  maintenance command's), and the answer does not depend on the write, which goes
  on in the background (in order: SQLite has one writer thread) and is awaited by
  ``drain``. Behind a write already given up on, the next ones do not wait at all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from ..errors import IndexBusy
from ..lru import Lru
from .base import Index, IndexUnavailable, ManifestRefs, ObjectRow, RepoKey, TagKey, TagRow

log = logging.getLogger("registry_cache.index")

MAX_PENDING_TOUCHES = 1 << 16  # access times kept while the index is unreachable
# How long a request waits for its index writes (the server's; a command waits for all).
# Writes take milliseconds unless another process holds the lock.
REQUEST_WRITE_WAIT = 1.0
MAX_LATE_WRITES = 10_000  # writes no request waits for any more, kept until the lock goes


@dataclass(frozen=True, slots=True)
class IndexHealth:
    ok: bool
    error: str | None = None
    since: float | None = None  # wall time the index became unreachable


class IndexFront:
    def __init__(
        self,
        index: Index,
        *,
        clock: Callable[[], float] = time.time,
        write_wait: float | None = None,
    ) -> None:
        self.index = index
        self._clock = clock
        self._write_wait = write_wait  # None: every write is awaited to its end
        self._writes: set[asyncio.Task[None]] = set()
        self._late: set[asyncio.Task[None]] = set()  # writes their requests gave up on
        self._linked: Lru[tuple[str, str, str], bool] = Lru(1 << 16)
        self._tags: Lru[TagKey, TagRow] = Lru(1 << 14)
        self._touched: dict[str, float] = {}
        self._pulled: dict[TagKey, float] = {}
        self._down_since: float | None = None
        self._last_error: str | None = None

    # ---------------------------------------------------------------- health

    def health(self) -> IndexHealth:
        if self._down_since is None:
            return IndexHealth(True)
        return IndexHealth(False, self._last_error, self._down_since)

    def _failed(self, exc: IndexUnavailable) -> None:
        if isinstance(exc, IndexBusy):
            # A write waited too long for another transaction's lock (a maintenance
            # command's): the index answers, so it is not degraded; the write is lost
            # (access times: kept for the next beat).
            log.info("index write skipped: %s", exc)
            return
        if self._down_since is None:
            self._down_since = self._clock()
            log.warning("index unavailable, serving without it: %s", exc)
        self._last_error = str(exc)

    def _worked(self) -> None:
        if self._down_since is not None:
            log.info("index reachable again")
            self._down_since = None
            self._last_error = None

    async def ping(self) -> None:
        try:
            await self.index.ping()
        except IndexUnavailable as exc:
            self._failed(exc)
            raise
        self._worked()

    # ------------------------------------------------------------------ tags

    async def get_tag(
        self, upstream: str, repo: str, tag: str, *, max_age: float = 0.0
    ) -> TagRow | None:
        """The tag's row; one this process saw checked less than ``max_age`` ago
        comes from memory (another process can only have made it fresher)."""
        key = (upstream, repo, tag)
        remembered = self._tags.get(key)
        if (
            max_age > 0
            and remembered is not None
            and 0 <= self._clock() - remembered.checked_at < max_age
        ):
            return remembered
        try:
            row = await self.index.get_tag(upstream, repo, tag)
        except IndexUnavailable as exc:
            self._failed(exc)
            return remembered  # stale at worst: the proxy revalidates it upstream
        self._worked()
        if row is None:
            self._tags.pop(key)
        else:
            self._tags.put(key, row)
        return row

    async def set_tag(self, upstream: str, repo: str, tag: str, digest: str) -> None:
        now = self._clock()
        self._tags.put((upstream, repo, tag), TagRow(digest, now, now))
        await self._best_effort(self.index.set_tag(upstream, repo, tag, digest, now))

    async def delete_tag(self, upstream: str, repo: str, tag: str) -> None:
        self._tags.pop((upstream, repo, tag))
        await self._best_effort(self.index.delete_tag(upstream, repo, tag))

    def forget_tag_memo(self, upstream: str, repo: str, tag: str) -> None:
        self._tags.pop((upstream, repo, tag))

    async def list_tags(self, upstream: str, repo: str) -> list[str]:
        try:
            tags = await self.index.list_tags(upstream, repo)
        except IndexUnavailable as exc:
            self._failed(exc)
            return []
        self._worked()
        return tags

    async def repositories(self, upstream: str | None = None) -> list[RepoKey]:
        """Raises IndexUnavailable: a catalog cannot be made up from memory."""
        try:
            repos = await self.index.repositories(upstream)
        except IndexUnavailable as exc:
            self._failed(exc)
            raise
        self._worked()
        return repos

    # --------------------------------------------------------------- objects

    async def get_object(self, digest: str) -> ObjectRow | None:
        try:
            row = await self.index.get_object(digest)
        except IndexUnavailable as exc:
            self._failed(exc)
            return None
        self._worked()
        return row

    async def add_object(self, digest: str, size: int, media_type: str | None = None) -> None:
        await self._best_effort(self.index.add_object(digest, size, media_type, self._clock()))

    async def record_refs(
        self, manifest: str, blobs: Sequence[str], children: Sequence[str]
    ) -> None:
        """What a manifest just stored lists (``cache ls/du/gc`` then parse no file)."""
        refs = ManifestRefs(tuple(dict.fromkeys(blobs)), tuple(dict.fromkeys(children)))
        await self._best_effort(self.index.record_refs({manifest: refs}))

    # ----------------------------------------------------------------- links

    async def is_linked(self, upstream: str, repo: str, digest: str) -> bool:
        key = (upstream, repo, digest)
        if self._linked.get(key):
            return True
        try:
            linked = await self.index.is_linked(upstream, repo, digest)
        except IndexUnavailable as exc:
            self._failed(exc)
            return False  # the proxy confirms with upstream instead
        self._worked()
        if linked:
            self._linked.put(key, True)
        return linked

    def linked_in_memory(self, upstream: str, repo: str, digest: str) -> bool:
        return bool(self._linked.get((upstream, repo, digest)))

    async def link(self, upstream: str, repo: str, digests: Sequence[str]) -> None:
        for digest in digests:
            self._linked.put((upstream, repo, digest), True)
        await self._best_effort(self.index.link(upstream, repo, digests))

    # ---------------------------------------------------------- access times

    def touch(self, digest: str, when: float | None = None) -> None:
        """Record an access; written by ``flush`` (batched)."""
        self._touched[digest] = self._clock() if when is None else when

    def touch_tag(self, upstream: str, repo: str, tag: str) -> None:
        self._pulled[(upstream, repo, tag)] = self._clock()

    async def flush(self) -> None:
        touched, self._touched = self._touched, {}
        pulled, self._pulled = self._pulled, {}
        if not touched and not pulled:
            return
        try:
            await self.index.record_access(touched, pulled)
        except IndexUnavailable as exc:
            self._failed(exc)
            # Keep them for the next beat (bounded: a long outage loses the oldest).
            if len(self._touched) + len(touched) <= MAX_PENDING_TOUCHES:
                for digest, when in touched.items():
                    self._touched[digest] = max(when, self._touched.get(digest, 0.0))
                for key, when in pulled.items():
                    self._pulled[key] = max(when, self._pulled.get(key, 0.0))
            return
        self._worked()

    # ------------------------------------------------------------ invalidation

    def drop_memos(self) -> None:
        self._linked.clear()
        self._tags.clear()

    async def watch(self, interval: float) -> None:
        """Forever: drop the memos whenever rows were deleted anywhere."""
        while True:
            try:
                changed = await self.index.wait_changed(interval)
            except IndexUnavailable as exc:
                self._failed(exc)
                await asyncio.sleep(interval)
                continue
            if changed:
                self.drop_memos()
                log.info("index rows were removed elsewhere: remembered tags and links dropped")

    async def _best_effort(self, write: Awaitable[None]) -> None:
        """Await a write (up to ``write_wait``); an unreachable index loses it (with a
        warning), never the request."""
        if self._write_wait is None:
            await self._settle(write)
            return
        if len(self._late) >= MAX_LATE_WRITES:
            # The lock has been held for minutes: lose this write rather than memory.
            if asyncio.iscoroutine(write):
                write.close()
            log.warning("index write dropped: %d others still wait on a lock", len(self._late))
            return
        task = asyncio.ensure_future(self._settle(write))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        # Behind a write already given up on, this one cannot end sooner (one writer,
        # in order): no request waits twice for the same lock.
        done: set[asyncio.Task[None]] = set()
        if not self._late:
            done, _ = await asyncio.wait({task}, timeout=self._write_wait)
        if done:
            task.result()  # anything but IndexUnavailable reaches the caller, as before
            return
        if not self._late:
            log.info("an index write waits on a lock: answering without it (it goes on)")
        self._late.add(task)
        task.add_done_callback(self._late_ended)

    async def _settle(self, write: Awaitable[None]) -> None:
        try:
            await write
        except IndexUnavailable as exc:
            self._failed(exc)
            return
        self._worked()

    async def drain(self) -> None:
        """Until every write a request stopped waiting for has ended (before close)."""
        while self._writes:
            await asyncio.wait(set(self._writes))

    def _late_ended(self, task: asyncio.Task[None]) -> None:
        self._late.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("an index write failed after its request was answered: %r", exc)
