"""Per-worker, in-memory aggregation of what the registry API answered.

The hot path (``Recorder.answered``, called once per ``/v2`` request by
``web.middleware.access_log``, next to the Prometheus counter) only adds to a few
dictionaries; nothing is written, locked or formatted there. Every few seconds
``take()`` swaps the pending deltas out (on the loop thread, so no lock is needed)
and ``stats.history`` adds them to the shared file off the loop.

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
from dataclasses import dataclass, field
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


class Recorder:
    """One per worker process; every method runs on the event loop thread."""

    def __init__(self, clock: Any = time.time) -> None:
        self._clock = clock
        self._pending = Pending()
        self.origins: dict[str, FillOrigin] = {}
        # The current minute's rows and the current hour's repositories, by upstream,
        # so a request builds no key: two dictionary lookups find its counters.
        self._minute_end = 0.0
        self._minute = 0
        self._hour = 0
        self._current: dict[str, list[int]] = {}
        self._repos: dict[str, dict[str, list[int]]] = {}

    def _roll(self, now: float) -> None:
        minute = int(now // 60) * 60
        hour = minute - minute % 3600
        if hour != self._hour:
            self._repos = {}
        self._minute, self._hour, self._minute_end = minute, hour, minute + 60.0
        self._current = {}

    def _counts(self, upstream: str) -> list[int]:
        key = (self._minute, upstream)
        counts = self._pending.minutes.get(key)
        if counts is None:
            counts = self._pending.minutes[key] = new_counts()
        self._current[upstream] = counts
        return counts

    def _repo(self, upstream: str, repo: str) -> list[int]:
        per_upstream = self._repos.get(upstream)
        if per_upstream is None:
            per_upstream = self._repos[upstream] = {}
        counts = per_upstream[repo] = [0, 0]  # pulls, bytes
        self._pending.repos[(self._hour, upstream, repo)] = counts
        return counts

    # ------------------------------------------------------------ hot path

    def answered(  # noqa: PLR0917 - called positionally: keywords cost on the hot path
        self,
        method: str,
        path: str,
        status: int,
        fields: dict[str, Any],
        duration: float,
        challenge: bool = False,
    ) -> None:
        """One registry API request finished (``challenge``: the bare 401 before login).

        ``fields`` are the access log's (``web.handlers.note``): upstream, repo, ref,
        cache, bytes; for a failure also error (its OCI code) and message.
        """
        now = self._clock()
        if now >= self._minute_end or now < self._minute:
            self._roll(now)
        get = fields.get
        upstream = get("upstream", "")
        counts = self._current.get(upstream)
        if counts is None:
            if upstream == "-":  # the catalog of every upstream
                upstream = ""
            counts = self._counts(upstream)
        counts[REQUESTS] += 1
        if status >= 400:
            self._failed(now, method, status, fields, duration, challenge, counts, upstream)
            return
        sent = get("bytes", 0)
        if method == "HEAD" or type(sent) is not int:
            sent = 0
        counts[BYTES_SERVED] += sent
        cache = get("cache")
        manifest = "/manifests/" in path
        if cache is not None and (manifest or "/blobs/" in path):
            if cache in HITS:
                counts[HITS_I] += 1
                counts[BYTES_CACHE] += sent
                if cache in SAVED:
                    counts[SAVED_I] += 1
                elif cache == "STALE":
                    counts[STALE_I] += 1
                    self._upstream_error(
                        upstream, now, "stale", "revalidation failed: served stale"
                    )
            elif cache in MISSES:
                counts[MISSES_I] += 1
            if cache in OK_UPSTREAM:
                self._upstream(upstream).ok_at = now
        if not upstream:
            return
        repo = get("repo", "")
        per_upstream = self._repos.get(upstream)
        per_repo = per_upstream.get(repo) if per_upstream is not None else None
        if per_repo is None:
            per_repo = self._repo(upstream, repo)
        per_repo[1] += sent
        if manifest and method == "GET" and ":" not in get("ref", ":"):
            counts[PULLS] += 1
            per_repo[0] += 1
            self._pending.pulls.append(
                ("pull", now, method, status, duration, upstream, repo, get("ref", ""),
                 cache or "", sent, "", "")
            )  # fmt: skip

    def _failed(  # noqa: PLR0917 - the hot path's locals, handed over as they are
        self,
        now: float,
        method: str,
        status: int,
        fields: dict[str, Any],
        duration: float,
        challenge: bool,
        counts: list[int],
        upstream: str,
    ) -> None:
        if challenge:
            return  # the 401 every client gets before it sends credentials
        counts[ERRORS] += 1
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
            self._upstream(upstream).ok_at = now  # upstream answered: it is not there

    def _upstream(self, name: str) -> UpstreamEvents:
        events = self._pending.upstreams.get(name)
        if events is None:
            events = self._pending.upstreams[name] = UpstreamEvents()
        return events

    def _upstream_error(self, name: str, now: float, kind: str, message: str) -> None:
        events = self._upstream(name)
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
        key = (int(self._clock() // 60) * 60, upstream)
        counts = self._pending.minutes.get(key)
        if counts is None:
            counts = self._pending.minutes[key] = new_counts()
        for name, value in deltas.items():
            counts[_IDX[name]] += value

    def heard_of(self, upstream: str) -> bool:
        """Whether a request since the last flush told anything about ``upstream``."""
        return upstream in self._pending.upstreams

    def upstream_error(self, upstream: str, kind: str, message: str) -> None:
        self._upstream_error(upstream, self._clock(), kind, message)

    def take(self) -> Pending:
        """The deltas since the last call (the recorder starts over)."""
        pending, self._pending = self._pending, Pending()
        self._current, self._repos = {}, {}
        return pending


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
