"""The bucket's health as every caller sees it: a short circuit breaker.

A request that fails for a reason no retry at once can fix (connection refused or
reset, a timeout, a 5xx) opens the breaker: for ``RETRY_AFTER`` seconds nothing
asks the bucket (misses go to upstream, uploads are skipped), then the next
request tries again and its outcome decides. So no request waits on a dead
bucket more than once per ``RETRY_AFTER``, and recovery needs no restart. An
outage is logged once, when it starts, and once when it ends.

Called from the event loop and from fill threads alike (a lock guards the state).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .. import metrics

log = logging.getLogger("registry_cache.bucket")

RETRY_AFTER = 2.0


@dataclass(frozen=True, slots=True)
class BucketHealth:
    ok: bool
    error: str | None = None
    since: float | None = None  # wall time the outage started


class Breaker:
    def __init__(
        self,
        name: str,
        *,
        retry_after: float = RETRY_AFTER,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.retry_after = retry_after
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._down_since: float | None = None  # wall time
        self._retry_at = 0.0  # monotonic
        self._error: str | None = None

    def allow(self) -> bool:
        """Whether to ask the bucket now (closed, or the pause after a failure is over)."""
        with self._lock:
            return self._down_since is None or self._clock() >= self._retry_at

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def health(self) -> BucketHealth:
        with self._lock:
            if self._down_since is None:
                return BucketHealth(True)
            return BucketHealth(False, self._error, self._down_since)

    def failed(self, op: str, reason: str) -> None:
        metrics.bucket_error(op)
        with self._lock:
            started = self._down_since is None
            if started:
                self._down_since = self._wall()
            self._error = reason
            self._retry_at = self._clock() + self.retry_after
        if started:
            log.warning(
                "bucket %s unavailable, serving without it (misses go to upstream,"
                " nothing is stored in it): %s",
                self.name,
                reason,
            )

    def worked(self) -> None:
        if self._down_since is None:  # the common case: no lock on the hot path
            return
        with self._lock:
            since, self._down_since, self._error = self._down_since, None, None
        if since is not None:
            log.info("bucket %s reachable again after %.1fs", self.name, self._wall() - since)
