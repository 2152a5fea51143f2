"""Concurrent cold requests for one blob make exactly one upstream fetch."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import urllib3

from tests.harness.cache import CacheServer
from tests.harness.images import build_image, push
from tests.harness.registry import UpstreamRegistry
from tests.harness.wait import wait_until

CLIENTS = 10


def fetch(url: str) -> tuple[int, str, int]:
    http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=60))
    response = http.request("GET", url, preload_content=False)
    hasher, size = hashlib.sha256(), 0
    for chunk in response.stream(1 << 20):
        hasher.update(chunk)
        size += len(chunk)
    response.release_conn()
    return response.status, "sha256:" + hasher.hexdigest(), size


@pytest.mark.parametrize("workers", [1, 2])
def test_concurrent_cold_gets_make_one_upstream_get(
    workers: int,
    upstream: UpstreamRegistry,
    make_cache: Callable[..., CacheServer],
    tmp_path: Path,
) -> None:
    image = build_image("herd", layers=1, layer_size=48 << 20, workdir=tmp_path)
    pushed = push(upstream.url, "library/herd", "1", image)
    layer = pushed.layer_digests[0]
    cache = make_cache("--upstream", f"docker.io={upstream.url}", "--workers", str(workers))
    url = f"{cache.url}/v2/library/herd/blobs/{layer}"
    upstream.clear_request_log()
    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(fetch, [url] * CLIENTS))
    assert all(status == 200 for status, _, _ in results)
    assert {digest for _, digest, _ in results} == {layer}
    assert {size for _, _, size in results} == {image.layers[0].size}
    assert upstream.blob_gets(layer) == 1
    # A client holds its last byte a moment before the worker writes the access line
    # (CI once read 8 of the 10): the count is taken once all ten are there.
    served = f'/blobs/{layer}" 200'
    wait_until(lambda: cache.log_text().count(served) >= CLIENTS)
    log = cache.log_text()
    assert log.count(served) == CLIENTS
    assert log.count("cache=MISS") == 1
    assert log.count("cache=COALESCED") + log.count("cache=HIT") == CLIENTS - 1
