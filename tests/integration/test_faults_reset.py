"""Fault: upstream resets the connection in the middle of a blob.

The fill resumes with ``Range: bytes=<received>-`` (never starting over), the
client that is streaming it gets one correct, complete body, and the resumes
are counted. When upstream keeps breaking, the client's download is cut short
(never completed with wrong bytes) and the partial is kept, so the next request
resumes it.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Callable
from pathlib import Path

import urllib3

from tests.harness.cache import CacheServer
from tests.harness.faults import FaultProxy, Rule
from tests.harness.images import Image, build_image, push
from tests.harness.metrics import scrape
from tests.harness.registry import UpstreamRegistry

http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=30))


def fetch(url: str) -> tuple[int, str, int, bool]:
    """(status, sha256 of what arrived, bytes, whether the body ended cleanly)."""
    response = http.request("GET", url, preload_content=False)
    hasher, size, clean = hashlib.sha256(), 0, True
    try:
        for chunk in response.stream(1 << 16):
            hasher.update(chunk)
            size += len(chunk)
    except urllib3.exceptions.ProtocolError:
        clean = False
    response.release_conn()
    return response.status, "sha256:" + hasher.hexdigest(), size, clean


def range_starts(proxy: FaultProxy, digest: str) -> list[int]:
    """Offsets of the cache's blob GETs upstream (0 for a request without Range)."""
    starts = []
    for seen in proxy.log:
        if seen.method == "GET" and f"/blobs/{digest}" in seen.path:
            value = seen.range or "bytes=0-"
            assert value.startswith("bytes=") and value.endswith("-"), value
            starts.append(int(value[6:-1]))
    return starts


def setup(upstream: UpstreamRegistry, tmp_path: Path, name: str) -> tuple[Image, str]:
    image = build_image(name, layers=1, layer_size=8 << 20, workdir=tmp_path)
    return image, push(upstream.url, f"library/{name}", "1", image).layer_digests[0]


def test_reset_mid_blob_resumes_with_range_and_client_gets_correct_body(
    upstream: UpstreamRegistry,
    proxy: FaultProxy,
    make_cache: Callable[..., CacheServer],
    tmp_path: Path,
) -> None:
    image, layer = setup(upstream, tmp_path, "reset")
    size = image.layers[0].size
    # Three connections in a row die (RST) after 2 MiB each.
    proxy.add(Rule(path=f"/blobs/{layer}", method="GET", reset_after=2 << 20, times=3))
    cache = make_cache("--upstream", f"docker.io={proxy.url}")

    status, digest, received, clean = fetch(f"{cache.url}/v2/library/reset/blobs/{layer}")

    assert (status, digest, received, clean) == (200, layer, size, True)
    starts = range_starts(proxy, layer)
    assert starts[0] == 0 and len(starts) == 4, starts
    # Each resume starts where the previous connection's bytes ended: strictly later.
    assert all(b > a for a, b in itertools.pairwise(starts)), starts
    assert starts[-1] <= 3 * (2 << 20)
    snapshot = scrape(cache.url)
    assert snapshot.value("registry_cache_fill_resumes_total", reason="broken") == 3
    # Resuming, not refetching: upstream sent the blob about once.
    fetched = snapshot.value("registry_cache_upstream_bytes_total", upstream="docker.io")
    assert size <= fetched < size + (1 << 20)
    # The last byte is released once the digest verified, a moment before the rename.
    blob = cache.blob_path(layer)
    deadline = time.monotonic() + 3
    while any((cache.data_dir / "fills").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert blob.stat().st_size == size
    assert not list((cache.data_dir / "fills").iterdir())


def test_upstream_that_keeps_resetting_cuts_the_client_then_the_next_request_resumes(
    upstream: UpstreamRegistry,
    proxy: FaultProxy,
    make_cache: Callable[..., CacheServer],
    tmp_path: Path,
) -> None:
    image, layer = setup(upstream, tmp_path, "flaky")
    size = image.layers[0].size
    rule = proxy.add(Rule(path=f"/blobs/{layer}", method="GET", reset_after=1 << 20))
    cache = make_cache("--upstream", f"docker.io={proxy.url}")
    url = f"{cache.url}/v2/library/flaky/blobs/{layer}"

    started = time.monotonic()
    status, _, received, clean = fetch(url)
    assert status == 200 and not clean and received < size  # cut short, never "complete"
    assert time.monotonic() - started < 10
    partial = cache.data_dir / "fills" / f"sha256-{layer[7:]}.partial"
    assert partial.exists() and 0 < partial.stat().st_size < size  # kept for a resume
    assert not cache.blob_path(layer).exists()

    proxy.rules.remove(rule)  # upstream healthy again
    before = len(range_starts(proxy, layer))
    assert fetch(url) == (200, layer, size, True)
    resumed_at = range_starts(proxy, layer)[before:]
    assert len(resumed_at) == 1 and resumed_at[0] > 0, resumed_at
    snapshot = scrape(cache.url)
    assert snapshot.value("registry_cache_fill_resumes_total", reason="partial") == 1
    assert snapshot.value("registry_cache_fill_resumes_total", reason="broken") >= 5
