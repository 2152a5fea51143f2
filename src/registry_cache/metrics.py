"""Prometheus metrics: what the cache served, and what upstreams did to it.

``GET /metrics`` answers in the Prometheus text format. Every metric has labels
from closed sets only (cache status, configured upstream names, error kinds):
never a URL, a repository, a client address or a credential.

- ``registry_cache_requests_total{kind,cache,status}``: requests answered, by kind
  (manifest, blob, tags, referrers, catalog, other), cache status (HIT, MISS, STALE,
  COALESCED, REVALIDATED, UPSTREAM, NONE) and status class (2xx, 4xx, 5xx...).
- ``registry_cache_upstream_bytes_total{upstream}``: body bytes read from each upstream.
- ``registry_cache_upstream_errors_total{upstream,kind}``: failed upstream attempts
  (each retry counts): timeout, unreachable, ratelimited (429), server_error (5xx),
  bad_answer, denied (401/403).
- ``registry_cache_digest_mismatches_total{kind}``: upstream content that did not match
  its digest (blob, manifest); never stored.
- ``registry_cache_fill_resumes_total{reason}``: fills continued with a Range request:
  broken (connection error), short (closed early), partial (a partial file left by an
  earlier fill or a crash).
- ``registry_cache_stale_serves_total{upstream}``: tags served stale (revalidation failed).
- ``registry_cache_evictions_total{reason}`` and ``registry_cache_evicted_bytes_total{reason}``:
  objects removed by the server's eviction, and their bytes: space (a size or disk
  limit), age (``--max-age``).
- ``registry_cache_fill_sources_total{source}``: where fills read their bytes: upstream,
  bucket (the shared tier), peer (another replica).
- ``registry_cache_bucket_errors_total{op}``: failed bucket requests (head, get, put,
  upload, delete, list, probe).
- ``registry_cache_bucket_bypasses_total{kind}``: while the bucket was unavailable, a miss
  that went upstream without asking it (read) or content not stored in it (upload).
- ``registry_cache_bucket_bytes_total{direction}``: bytes read from and written to it.
- ``registry_cache_bucket_evictions_total{reason}``, ``..._evicted_bytes_total{reason}``:
  objects and bytes removed from it for ``--shared-max-size`` (space).
- ``registry_cache_upstream_ratelimit_remaining{upstream}`` (gauge): the last
  ``ratelimit-remaining`` header (Docker Hub: pulls left in the window).

Several workers (``--workers N``): ``serve`` calls ``enable_multiprocess`` before
forking, which points prometheus_client's multiprocess mode at ``DATA/metrics/``
(emptied at every start). Each worker writes its values to memory-mapped files
there and whichever worker answers ``/metrics`` sums the counters of all of them
(the gauge reports the most recent value any worker saw). Process metrics
(memory, CPU) are only exported by a single-process server.

Every metric is labelled, so no value object exists before the first increment:
that is what lets ``enable_multiprocess`` switch the value class after import.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

REQUESTS = Counter(
    "registry_cache_requests",
    "Requests answered, by kind, cache status and status class.",
    ["kind", "cache", "status"],
)
UPSTREAM_BYTES = Counter(
    "registry_cache_upstream_bytes",
    "Body bytes read from upstream registries.",
    ["upstream"],
)
UPSTREAM_ERRORS = Counter(
    "registry_cache_upstream_errors",
    "Failed upstream request attempts, by kind.",
    ["upstream", "kind"],
)
DIGEST_MISMATCHES = Counter(
    "registry_cache_digest_mismatches",
    "Upstream content that did not match its digest (never stored).",
    ["kind"],
)
FILL_RESUMES = Counter(
    "registry_cache_fill_resumes",
    "Blob fills resumed with a Range request, by reason.",
    ["reason"],
)
STALE_SERVES = Counter(
    "registry_cache_stale_serves",
    "Tags served from the cache because revalidation failed.",
    ["upstream"],
)
EVICTIONS = Counter(
    "registry_cache_evictions",
    "Objects removed by eviction, by reason (space, age).",
    ["reason"],
)
EVICTED_BYTES = Counter(
    "registry_cache_evicted_bytes",
    "Bytes freed by eviction, by reason (space, age).",
    ["reason"],
)
FILL_SOURCES = Counter(
    "registry_cache_fill_sources",
    "Sources blob fills opened, by kind (upstream, bucket, peer).",
    ["source"],
)
BUCKET_ERRORS = Counter(
    "registry_cache_bucket_errors",
    "Failed requests to the shared tier's bucket, by operation.",
    ["op"],
)
BUCKET_BYPASSES = Counter(
    "registry_cache_bucket_bypasses",
    "Work done without the bucket while it was unavailable: read (a miss that went"
    " upstream without asking it), upload (content not stored in it).",
    ["kind"],
)
BUCKET_BYTES = Counter(
    "registry_cache_bucket_bytes",
    "Body bytes moved to and from the bucket, by direction (read, written).",
    ["direction"],
)
BUCKET_EVICTIONS = Counter(
    "registry_cache_bucket_evictions",
    "Objects removed from the bucket by --shared-max-size, by reason (space).",
    ["reason"],
)
BUCKET_EVICTED_BYTES = Counter(
    "registry_cache_bucket_evicted_bytes",
    "Bytes removed from the bucket by --shared-max-size, by reason (space).",
    ["reason"],
)
RATELIMIT_REMAINING = Gauge(
    "registry_cache_upstream_ratelimit_remaining",
    "The upstream's last ratelimit-remaining header (Docker Hub pulls left in the window).",
    ["upstream"],
    multiprocess_mode="mostrecent",
)

_KINDS = re.compile(r"/(manifests|blobs|tags|referrers)/")
_KIND_NAMES = {"manifests": "manifest", "blobs": "blob", "tags": "tags", "referrers": "referrers"}


def request_kind(path: str) -> str:
    if path == "/v2/_catalog":
        return "catalog"
    match = _KINDS.search(path)
    return _KIND_NAMES[match.group(1)] if match else "other"


# The request counter's children, by (kind, cache mark, status // 100): ``labels()``
# validates and formats its arguments on every call (1.6 µs, a few % of a warm hit's
# CPU) to return the same child object each time; a child counts across a fork as
# prometheus_client's own cache of them does (its value notices the new PID).
_REQUEST_CHILDREN: dict[tuple[str, str | None, int], Counter] = {}


def observe_request(path: str, cache: str | None, status: int) -> None:
    kind = request_kind(path)
    key = (kind, cache, status // 100)
    child = _REQUEST_CHILDREN.get(key)
    if child is None:
        child = REQUESTS.labels(kind, cache or "NONE", f"{status // 100}xx")
        _REQUEST_CHILDREN[key] = child
    child.inc()


def upstream_bytes(upstream: str, count: int) -> None:
    UPSTREAM_BYTES.labels(upstream).inc(count)


def upstream_error(upstream: str, kind: str) -> None:
    UPSTREAM_ERRORS.labels(upstream, kind).inc()


def digest_mismatch(kind: str) -> None:
    DIGEST_MISMATCHES.labels(kind).inc()


def fill_resume(reason: str) -> None:
    FILL_RESUMES.labels(reason).inc()


def stale_serve(upstream: str) -> None:
    STALE_SERVES.labels(upstream).inc()


def evicted(reason: str, count: int, size: int) -> None:
    EVICTIONS.labels(reason).inc(count)
    EVICTED_BYTES.labels(reason).inc(size)


def fill_source(source: str) -> None:
    FILL_SOURCES.labels(source).inc()


def bucket_error(op: str) -> None:
    BUCKET_ERRORS.labels(op).inc()


def bucket_bypass(kind: str) -> None:
    BUCKET_BYPASSES.labels(kind).inc()


def bucket_bytes(direction: str, count: int) -> None:
    BUCKET_BYTES.labels(direction).inc(count)


def bucket_evicted(count: int, size: int) -> None:
    BUCKET_EVICTIONS.labels("space").inc(count)
    BUCKET_EVICTED_BYTES.labels("space").inc(size)


def ratelimit(upstream: str, remaining: str) -> None:
    """``on_ratelimit`` hook of the upstream client: ``"76;w=21600"`` → 76."""
    match = re.match(r"\s*(\d+)", remaining)
    if match is not None:
        RATELIMIT_REMAINING.labels(upstream).set(int(match.group(1)))


def enable_multiprocess(directory: Path) -> None:
    """Share values between forked workers through files in ``directory`` (call before fork).

    Files left by an earlier run are removed: counters start at zero with the server.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)
    os.environ[MULTIPROC_ENV] = str(directory)
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


def render() -> bytes:
    """The text exposition of every metric (all workers' in multiprocess mode)."""
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)
