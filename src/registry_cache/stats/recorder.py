"""Per-worker, in-memory aggregation of what the registry API answered.

The hot path (``Recorder.answered``, called once per ``/v2`` request by
``web.middleware.access_log``, next to the Prometheus counter) adds one to the number
of answers alike in this minute (a hit, most of the time) and reads no clock of its
own (the access log's ``perf_counter`` dates it); nothing is written, locked or
formatted there. The columns (hits, bytes, pulls, top repositories, recent pulls) are
worked out from those numbers when the minute ends or with the flush: every few
seconds, with the access-time batch, ``take()`` swaps the pending deltas out (on the
loop thread, so no lock is needed) and ``stats.history`` adds them to the shared file
off the loop.

Definitions (the README's "Dashboard" section repeats them):

- a *content request* is a GET or HEAD of a manifest or blob;
- a *hit* is a content request answered from the cache: ``HIT``, ``STALE``,
  ``REVALIDATED`` (a HEAD upstream, no body) or ``COALESCED`` (joined a fill
  another request started: upstream sent those bytes once);
- a *miss* needed upstream for its body: ``MISS``, ``UPSTREAM``;
- an *upstream request saved* is a ``HIT`` or ``COALESCED`` (no upstream request at all);
- *bytes from cache* are the body bytes of hits, *bytes from upstream* what the
  upstream client read (``metrics``: retries and resumes included);
- an *error* is an answer >= 400 other than the bare 401 challenge a client
  gets before it sends credentials;
- a *pull* is a GET of a manifest by tag (each ``pull repo:tag`` makes exactly one).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

HITS = frozenset({"HIT", "STALE", "REVALIDATED", "COALESCED"})
MISSES = frozenset({"MISS", "UPSTREAM"})
OK_UPSTREAM = frozenset({"MISS", "REVALIDATED", "UPSTREAM"})  # upstream answered this one
SAVED = frozenset({"HIT", "COALESCED"})
# Statuses that say the upstream itself failed (only counted for requests that
# were routed to an upstream: a policy 403 or a client-login 401 happens before).
UPSTREAM_FAILURES = frozenset({401, 403, 429, 502, 503, 504})
RECENT = 50  # kept in memory between flushes, per kind

# Columns of a history bucket, in this order everywhere (stats.history's tables).
COUNTERS = (
    "requests",
    "hits",
    "misses",
    "saved",
    "errors",
    "stale",
    "pulls",
    "bytes_served",
    "bytes_cache",
    "bytes_upstream",
    "upstream_errors",
    "evictions",
    "evicted_bytes",
)
_IDX = {name: i for i, name in enumerate(COUNTERS)}
REQUESTS, HITS_I, MISSES_I, SAVED_I, ERRORS, STALE_I, PULLS = range(7)
BYTES_SERVED, BYTES_CACHE = _IDX["bytes_served"], _IDX["bytes_cache"]


def new_counts() -> list[int]:
    return [0] * len(COUNTERS)


@dataclass
class UpstreamEvents:
    """The latest thing seen of one upstream, with wall-clock times."""

    ok_at: float | None = None
    error_at: float | None = None
    error: str | None = None
    error_kind: str | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """One line of "recent pulls" or "recent errors" (never a client address or user)."""

    kind: str  # "pull" or "error"
    at: float
    method: str
    upstream: str
    repository: str
    reference: str
    status: int
    cache: str
    bytes: int
    duration_ms: float
    error: str  # OCI code or exception name; "" for pulls
    message: str


@dataclass(frozen=True, slots=True)
class FillOrigin:
    upstream: str
    repository: str
    started_at: float


# What the hot path keeps of a recent pull or error; an ``Event`` is made at flush time.
# Only strings and numbers: holding the request's own dictionary past its end would
# get it promoted by the garbage collector, which measurably slowed every request.
RawEvent = tuple[str, float, str, int, float, str, str, str, str, int, str, str]
# What a quiet answer (see ``QUIET``) is counted by: method, path, upstream, cache mark,
# bytes. Alike answers share one key and one ``Tally``. The repository and reference
# follow from the path and upstream (the router made them of those), so they are kept
# from the first answer of a key and not hashed again for every request.
Key = tuple[str, str, Any, Any, Any]
# A quiet manifest GET, kept for "recent pulls": (ticks at its end, duration s, status, its tally).
QuietPull = tuple[float, float, int, list[Any]]
# The answers most requests get: nothing about them depends on when they happened
# beyond their minute, so the hot path only adds one to their number in this minute's
# tally, and they are counted into the columns at flush time (``fold``). Misses,
# revalidations, stale serves and errors also tell something about their upstream at
# that moment: counted as they happen (rarer, and slower).
# The hot path allocates nothing that outlives the call (the key of an answer seen
# before is dropped at once; a kept pull replaces the oldest): whatever it kept would
# be counted by the garbage collector, and measurably so (more frequent collections).
QUIET = frozenset({"HIT", "COALESCED", None})
KEYS_AT = 10_000  # alike keys folded early past this many (bounds memory between flushes)


# This minute's number of one key's answers, with what the fold needs of them:
# [number, is a manifest GET, key, repository, reference]. A plain list, not a class:
# the hot path adds one to its first item (one specialised subscript, no attribute
# lookup, no second hashing of the key to store the sum).
Tally = list[Any]


@dataclass
class Pending:
    """Deltas since the last flush. Keys of ``minutes``: (minute start, upstream)."""

    minutes: dict[tuple[int, str], list[int]] = field(default_factory=dict)
    repos: dict[tuple[int, str, str], list[int]] = field(default_factory=dict)  # hour: pulls,bytes
    upstreams: dict[str, UpstreamEvents] = field(default_factory=dict)
    # Bounded: a burst of pulls between two flushes keeps only the latest (errors apart).
    pulls: deque[RawEvent] = field(default_factory=lambda: deque(maxlen=RECENT))
    errors: deque[RawEvent] = field(default_factory=lambda: deque(maxlen=RECENT))

    @property
    def events(self) -> list[Event]:
        return sorted((_event(*raw) for raw in (*self.pulls, *self.errors)), key=lambda e: e.at)

    def counts(self, minute: int, upstream: str) -> list[int]:
        key = (minute, upstream)
        counts = self.minutes.get(key)
        if counts is None:
            counts = self.minutes[key] = new_counts()
        return counts

    def repo(self, hour: int, upstream: str, repo: str) -> list[int]:
        key = (hour, upstream, repo)
        counts = self.repos.get(key)
        if counts is None:
            counts = self.repos[key] = [0, 0]  # pulls, bytes
        return counts

    def upstream(self, name: str) -> UpstreamEvents:
        events = self.upstreams.get(name)
        if events is None:
            events = self.upstreams[name] = UpstreamEvents()
        return events

    def add_pulls(self, pulls: list[RawEvent]) -> None:
        """Recent pulls counted later than others (``fold``): the newest are kept."""
        if pulls:
            merged = sorted((*self.pulls, *pulls), key=_AT)
            self.pulls = deque(merged[-RECENT:], maxlen=RECENT)


_AT = itemgetter(1)


class Recorder:
    """One per worker process; every method runs on the event loop thread.

    ``clock`` gives wall-clock time; ``ticks`` the clock of the ``at`` that
    ``answered`` is given (``time.perf_counter``, which the access log reads anyway);
    quiet answers get their wall-clock time from the two clocks' offset when their
    minute is counted. Tests pass one fake clock as both.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        ticks: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._clock = clock
        self._ticks = ticks
        self._pending = Pending()
        self._tally: dict[Key, Tally] = {}  # this minute's quiet answers
        self._quiet_pulls: deque[QuietPull] = deque(maxlen=RECENT)
        # This minute in ticks: [start, end); the tally is counted when it ends.
        self._tally_start = 0.0
        self._tally_end = 0.0
        self.origins: dict[str, FillOrigin] = {}

    # ------------------------------------------------------------ hot path

    def answered(  # noqa: PLR0917 - called positionally: keywords cost on the hot path
        self,
        method: str,
        path: str,
        status: int,
        fields: dict[str, Any],
        duration: float,
        challenge: bool = False,
        at: float | None = None,
    ) -> None:
        """One registry API request finished (``challenge``: the bare 401 before login;
        ``at``: ``ticks()`` at its end, read now when not given).

        ``fields`` are the access log's (``web.handlers.note``): upstream, repo, ref,
        cache, bytes; for a failure also error (its OCI code) and message.
        """
        get = fields.get
        cache = get("cache")
        if status >= 400 or cache not in QUIET:
            self._eventful(method, path, status, fields, duration, challenge)
            return
        if at is None:
            at = self._ticks()
        if not self._tally_start <= at < self._tally_end:
            self._next_minute(at)
        key = (method, path, get("upstream", ""), cache, get("bytes", 0))
        tally = self._tally.get(key)
        if tally is None:
            tally = self._first(key, fields)
        tally[0] += 1
        if tally[1]:  # a manifest GET: one of the recent pulls (if a pull; see fold)
            self._quiet_pulls.append((at, duration, status, tally))

    def _first(self, key: Key, fields: dict[str, Any]) -> Tally:
        """The tally of a key not seen this minute (folding the minute's early when it
        has too many keys: bounded memory between flushes)."""
        if len(self._tally) >= KEYS_AT:
            self.fold()
        method, path = key[0], key[1]
        manifest_get = method == "GET" and "/manifests/" in path
        tally = [0, manifest_get, key, fields.get("repo", ""), fields.get("ref", "")]
        self._tally[key] = tally
        return tally

    def _next_minute(self, at: float) -> None:
        self.fold()
        offset = self._clock() - self._ticks()
        minute = (at + offset) // 60 * 60
        self._tally_start, self._tally_end = minute - offset, minute + 60 - offset

    def fold(self) -> None:
        """Count this minute's quiet answers: each key once, with its number."""
        tally, pulls = self._tally, self._quiet_pulls
        if not tally:
            return
        self._tally = {}
        offset = self._clock() - self._ticks()
        minute = int((self._tally_start + offset + 30) // 60 * 60)  # rounding: not drift
        pending = self._pending
        for (method, path, upstream, cache, sent), (n, _, _, repo, ref) in tally.items():
            self._count(pending, minute, method, path, upstream, cache, sent, repo, ref, n)
        if pulls:
            self._quiet_pulls = deque(maxlen=RECENT)
            pending.add_pulls(
                [
                    ("pull", at + offset, method, status, duration, upstream, repo, ref,
                     cache or "", _body(method, sent), "", "")
                    for at, duration, status, (_, _, (method, _, upstream, cache, sent), repo, ref)
                    in pulls
                    if _is_pull(method, upstream, ref)
                ]
            )  # fmt: skip

    @staticmethod
    def _count(  # noqa: PLR0917 - one answer's fields, as they are
        pending: Pending,
        minute: int,
        method: str,
        path: str,
        upstream: str,
        cache: str | None,
        sent: Any,
        repo: Any,
        ref: Any,
        n: int,
    ) -> bool:
        """Add ``n`` alike successful answers; whether they are pulls."""
        if upstream == "-":  # the catalog of every upstream
            upstream = ""
        counts = pending.counts(minute, upstream)
        counts[REQUESTS] += n
        sent = _body(method, sent) * n
        counts[BYTES_SERVED] += sent
        manifest = "/manifests/" in path
        if cache is not None and (manifest or "/blobs/" in path):
            if cache in HITS:
                counts[HITS_I] += n
                counts[BYTES_CACHE] += sent
                if cache in SAVED:
                    counts[SAVED_I] += n
                elif cache == "STALE":
                    counts[STALE_I] += n
            elif cache in MISSES:
                counts[MISSES_I] += n
        if not upstream:
            return False
        per_repo = pending.repo(minute - minute % 3600, upstream, repo)
        per_repo[1] += sent
        if manifest and _is_pull(method, upstream, ref):
            counts[PULLS] += n
            per_repo[0] += n
            return True
        return False

    def _eventful(  # noqa: PLR0917 - the hot path's arguments, handed over as they are
        self,
        method: str,
        path: str,
        status: int,
        fields: dict[str, Any],
        duration: float,
        challenge: bool,
    ) -> None:
        """An answer that also tells something about its upstream now: counted now."""
        now = self._clock()
        minute = int(now // 60) * 60
        get = fields.get
        upstream = get("upstream", "")
        if upstream == "-":
            upstream = ""
        pending = self._pending
        if status >= 400:
            pending.counts(minute, upstream)[REQUESTS] += 1
            self._failed(now, method, status, fields, duration, challenge, minute, upstream)
            return
        cache, sent, repo, ref = get("cache"), get("bytes", 0), get("repo", ""), get("ref", "")
        if self._count(pending, minute, method, path, upstream, cache, sent, repo, ref, 1):
            pending.pulls.append(
                ("pull", now, method, status, duration, upstream, repo, ref, cache or "",
                 _body(method, sent), "", "")
            )  # fmt: skip
        if cache == "STALE":
            self._upstream_error(upstream, now, "stale", "revalidation failed: served stale")
        if cache in OK_UPSTREAM:
            events = pending.upstream(upstream)
            events.ok_at = now if events.ok_at is None else max(events.ok_at, now)

    def _failed(  # noqa: PLR0917 - the hot path's locals, handed over as they are
        self,
        now: float,
        method: str,
        status: int,
        fields: dict[str, Any],
        duration: float,
        challenge: bool,
        minute: int,
        upstream: str,
    ) -> None:
        if challenge:
            return  # the 401 every client gets before it sends credentials
        self._pending.counts(minute, upstream)[ERRORS] += 1
        get = fields.get
        self._pending.errors.append(
            ("error", now, method, status, duration, upstream, str(get("repo", "")),
             str(get("ref", "")), str(get("cache", "") or ""), 0, str(get("error", "")),
             str(get("message", "")))
        )  # fmt: skip
        if not upstream:
            return
        if status in UPSTREAM_FAILURES:
            error, message = fields.get("error") or str(status), fields.get("message", "")
            self._upstream_error(upstream, now, error, message)
        elif status == 404:
            self._pending.upstream(upstream).ok_at = now  # upstream answered: it is not there

    def _upstream_error(self, name: str, now: float, kind: str, message: str) -> None:
        events = self._pending.upstream(name)
        events.error_at, events.error_kind, events.error = now, kind, message[:300]

    # ------------------------------------------------------------ fills

    def fill_started(self, digest: str, upstream: str, repository: str) -> None:
        """A request started the fill of ``digest`` (a MISS): remember who and when."""
        self.origins[digest] = FillOrigin(upstream, repository, self._clock())

    def forget_origins(self, live: set[str]) -> None:
        for digest in [d for d in self.origins if d not in live]:
            del self.origins[digest]

    # ------------------------------------------------------------ flush side

    def add_counts(self, upstream: str, deltas: dict[str, int]) -> None:
        """Counters measured elsewhere (``metrics`` deltas) for the current minute."""
        if not any(deltas.values()):
            return
        counts = self._pending.counts(int(self._clock() // 60) * 60, upstream)
        for name, value in deltas.items():
            counts[_IDX[name]] += value

    def heard_of(self, upstream: str) -> bool:
        """Whether a request since the last flush told anything about ``upstream``
        (quiet answers tell nothing about it: they need no fold first)."""
        return upstream in self._pending.upstreams

    def upstream_error(self, upstream: str, kind: str, message: str) -> None:
        self._upstream_error(upstream, self._clock(), kind, message)

    def take(self) -> Pending:
        """The deltas since the last call (the recorder starts over)."""
        self.fold()
        pending, self._pending = self._pending, Pending()
        return pending


def _body(method: str, sent: Any) -> int:
    """The body bytes an answer counts (a HEAD sends none; a non-number is none)."""
    return 0 if method == "HEAD" or type(sent) is not int else int(sent)


def _is_pull(method: str, upstream: Any, ref: Any) -> bool:
    """A manifest answer is a pull: a GET by tag (not digest) from an upstream."""
    return method == "GET" and upstream not in ("", "-") and type(ref) is str and ":" not in ref


def _event(  # noqa: PLR0917 - the fields of a RawEvent, in order
    kind: str,
    at: float,
    method: str,
    status: int,
    duration: float,
    upstream: str,
    repo: str,
    ref: str,
    cache: str,
    nbytes: int,
    error: str,
    message: str,
) -> Event:
    return Event(
        kind=kind,
        at=at,
        method=method,
        upstream=upstream,
        repository=str(repo)[:256],
        reference=str(ref)[:160],
        status=status,
        cache=cache,
        bytes=nbytes,
        duration_ms=round(duration * 1000, 1),
        error=error[:64],
        message=message[:300],
    )
