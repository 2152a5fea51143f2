"""Fault: a slow (bandwidth-limited) upstream.

A cold blob must not make the client wait for the whole fill: headers go out as
soon as upstream announced the size, and body bytes follow as they arrive
(containerd gives up on a response whose headers take 30 s).
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
from tests.harness.images import build_image, push
from tests.harness.metrics import scrape, settled_value
from tests.harness.registry import UpstreamRegistry

RATE = 1 << 20  # upstream bytes per second
LAYER = 4 << 20  # ~4 s at RATE

http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=30))


def test_slow_upstream_headers_at_once_then_bytes_as_they_arrive(
    upstream: UpstreamRegistry,
    proxy: FaultProxy,
    make_cache: Callable[..., CacheServer],
    tmp_path: Path,
) -> None:
    image = build_image("slow", layers=1, layer_size=LAYER, workdir=tmp_path)
    layer = push(upstream.url, "library/slow", "1", image).layer_digests[0]
    size = image.layers[0].size
    proxy.add(Rule(path=f"/blobs/{layer}", method="GET", rate=RATE))
    cache = make_cache("--upstream", f"docker.io={proxy.url}")

    started = time.monotonic()
    response = http.request(
        "GET", f"{cache.url}/v2/library/slow/blobs/{layer}", preload_content=False
    )
    headers_at = time.monotonic() - started
    assert response.status == 200
    assert int(response.headers["Content-Length"]) == size
    timeline: list[tuple[float, int]] = []  # (seconds since the request, bytes so far)
    hasher, received = hashlib.sha256(), 0
    for chunk in response.stream(1 << 16):
        hasher.update(chunk)
        received += len(chunk)
        timeline.append((time.monotonic() - started, received))
    response.release_conn()
    total = time.monotonic() - started

    assert headers_at < 1.0, f"headers after {headers_at:.2f}s"
    assert "sha256:" + hasher.hexdigest() == layer and received == size
    first_at = timeline[0][0]
    assert first_at < 1.0, f"first body bytes after {first_at:.2f}s"
    expected = size / RATE
    assert 0.8 * expected <= total <= expected + 3.0, f"{total:.1f}s for {size} bytes"
    # Progressive: half-way through the transfer the client holds about half the
    # bytes (not a burst at the end), and it got news at least every ~half second.
    halfway = total / 2
    at_half = max((n for t, n in timeline if t <= halfway), default=0)
    assert 0.2 * size <= at_half <= 0.8 * size, f"{at_half} of {size} bytes at {halfway:.1f}s"
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(timeline)]
    assert max(gaps) < 0.6, f"longest silence {max(gaps):.2f}s"
    snapshot = scrape(cache.url)
    assert snapshot.value("registry_cache_upstream_bytes_total", upstream="docker.io") >= size
    requests = "registry_cache_requests_total"
    assert settled_value(cache.url, requests, 1, kind="blob", cache="MISS", status="2xx") == 1
