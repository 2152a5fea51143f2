"""Read the cache's own access log (one ``registry_cache.access`` line per request).

Contract:
- ``CacheRequest.parse(line)`` reads a line such as
  ``... registry_cache.access: 127.0.0.1 "GET /v2/library/test/manifests/1.0?ns=docker.io"
  200 upstream=docker.io repo=library/test ref=1.0 cache=MISS bytes=702 duration=3.1ms``
  (None for any other line). The ``key=value`` fields after the status are read
  generically, so a field added later does not break the parser; ``-`` means unset.
- ``cache_requests(cache)`` parses everything a ``CacheServer`` logged so far.
- ``CacheRequest.ns`` is containerd's ``?ns=`` parameter (None without one);
  ``kind`` is ``manifests``/``blobs``/``tags``/``""`` from the /v2 path.
- A server writes its access-log line around the time the last body bytes leave,
  so right after a client exits a line can still be missing: ``settled_requests``
  polls until blob requests for every expected digest are logged (5 s at most),
  and ``settled_blob_gets`` does the same for an upstream's blob GETs.
"""

from __future__ import annotations

import re
import time
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field

from .cache import CacheServer
from .registry import UpstreamRegistry

_LINE = re.compile(
    r"registry_cache\.access: (?P<remote>\S+) "
    r'"(?P<method>[A-Z]+) (?P<path>\S+)" (?P<status>\d{3})(?P<rest>.*)$'
)
_FIELD = re.compile(r"(\w+)=(\S+)")
_KIND = re.compile(r"^/v2/.+/(manifests|blobs|tags)/")


@dataclass(frozen=True)
class CacheRequest:
    """One request the cache answered, as its access log tells it."""

    method: str
    path: str  # path and query string, as the client sent them
    status: int
    fields: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, line: str) -> CacheRequest | None:
        match = _LINE.search(line)
        if match is None:
            return None
        fields = dict(_FIELD.findall(match["rest"]))
        return cls(match["method"], match["path"], int(match["status"]), fields)

    def get(self, name: str) -> str | None:
        value = self.fields.get(name)
        return None if value in (None, "-") else value

    @property
    def upstream(self) -> str | None:
        return self.get("upstream")

    @property
    def repo(self) -> str | None:
        return self.get("repo")

    @property
    def cache(self) -> str | None:
        return self.get("cache")

    @property
    def error(self) -> str | None:
        return self.get("error")

    @property
    def duration_ms(self) -> float | None:
        value = self.get("duration")
        return float(value.removesuffix("ms")) if value else None

    @property
    def bare_path(self) -> str:
        return urllib.parse.urlsplit(self.path).path

    @property
    def query(self) -> dict[str, list[str]]:
        return urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)

    @property
    def ns(self) -> str | None:
        values = self.query.get("ns")
        return values[0] if values else None

    @property
    def kind(self) -> str:
        match = _KIND.match(self.bare_path)
        return match.group(1) if match else ""

    @property
    def digest(self) -> str | None:
        """The ``sha256:...`` a blob or by-digest manifest request names."""
        last = self.bare_path.rsplit("/", 1)[-1]
        return last if last.startswith("sha256:") else None


def cache_requests(cache: CacheServer) -> list[CacheRequest]:
    """Every request in the cache's log so far (oldest first)."""
    parsed = (CacheRequest.parse(line) for line in cache.log_text().splitlines())
    return [r for r in parsed if r is not None]


def settled_requests(
    cache: CacheServer, blobs: Iterable[str], *, since: int = 0, timeout: float = 5.0
) -> list[CacheRequest]:
    """``cache_requests()[since:]`` once every digest in ``blobs`` has a blob request there."""
    wanted = set(blobs)
    deadline = time.monotonic() + timeout
    while True:
        requests = cache_requests(cache)[since:]
        seen = {r.digest for r in requests if r.kind == "blobs"}
        if wanted <= seen or time.monotonic() >= deadline:
            return requests
        time.sleep(0.05)


def settled_blob_gets(
    upstream: UpstreamRegistry, digests: Iterable[str], timeout: float = 5.0
) -> dict[str, int]:
    """Digest → successful blob GETs upstream, once each digest has at least one."""
    wanted = sorted(set(digests))
    deadline = time.monotonic() + timeout
    while True:
        counts = {d: upstream.blob_gets(d) for d in wanted}
        if all(counts.values()) or time.monotonic() >= deadline:
            return counts
        time.sleep(0.05)


def describe(requests: list[CacheRequest]) -> str:
    """A compact listing for assertion messages."""
    return "\n".join(
        f"  {r.method} {r.path} -> {r.status} upstream={r.upstream} cache={r.cache}"
        f"{' error=' + r.error if r.error else ''}"
        for r in requests
    )
