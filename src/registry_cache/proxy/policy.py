"""Freshness policy: small pure decisions, unit-tested without I/O.

- A tag is served from the index while younger than its upstream's TTL (FRESH),
  then revalidated with a HEAD (REVALIDATE), or fetched when never seen (FETCH).
- When revalidation fails the cached digest is served (stale-if-error), except
  when upstream positively says the tag no longer exists.
- Digests are immutable: never revalidated.
"""

from __future__ import annotations

import enum

from ..errors import ManifestUnknown, RegistryError
from ..index.base import TagRow


class CacheStatus(enum.StrEnum):
    HIT = "HIT"
    MISS = "MISS"
    STALE = "STALE"
    COALESCED = "COALESCED"
    REVALIDATED = "REVALIDATED"
    UPSTREAM = "UPSTREAM"  # answered from upstream without storing (HEAD of an uncached blob)


class TagDecision(enum.Enum):
    FRESH = "fresh"
    REVALIDATE = "revalidate"
    FETCH = "fetch"


def tag_decision(row: TagRow | None, now: float, ttl: float) -> TagDecision:
    if row is None:
        return TagDecision.FETCH
    age = now - row.checked_at
    # A clock that went backwards makes age negative: treat as expired, not as fresh forever.
    if 0 <= age < ttl:
        return TagDecision.FRESH
    return TagDecision.REVALIDATE


def serve_stale_on(error: BaseException) -> bool:
    """May a cached tag be served when revalidation failed with ``error``?

    Yes for every failure to *learn* the answer (unreachable, timeout, 429, 5xx,
    auth trouble); no when upstream answered that the manifest is gone.
    """
    if isinstance(error, ManifestUnknown):
        return False
    return isinstance(error, (RegistryError, OSError, TimeoutError))
