"""The cap is a bound (issue: hardening, item 10), and repository scoping holds
across worker processes (item 2). Real docker-registry, real cache processes."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import urllib3

from tests.harness.cache import CacheServer
from tests.harness.faults import FaultProxy, Rule
from tests.harness.images import build_image, push
from tests.harness.registry import UpstreamRegistry

MiB = 1 << 20
HTTP = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=60))


def get_blob(cache: CacheServer, repo: str, digest: str) -> tuple[int, str]:
    response = HTTP.request("GET", f"{cache.url}/v2/{repo}/blobs/{digest}", preload_content=False)
    hasher = hashlib.sha256()
    for chunk in response.stream(MiB):
        hasher.update(chunk)
    response.release_conn()
    return response.status, "sha256:" + hasher.hexdigest()


def data_bytes(cache: CacheServer) -> int:
    return sum(p.stat().st_size for p in (cache.data_dir / "blobs").rglob("*") if p.is_file())


def test_max_size_holds_even_when_everything_was_used_seconds_ago(
    upstream: UpstreamRegistry, make_cache: Callable[..., CacheServer], tmp_path: Path
) -> None:
    """3 x 150 MiB pulled two seconds apart, --max-size 300MiB: within 5 s of the last
    pull the data directory holds at most 330 MiB, and every blob is fetched again right."""
    layers = []
    for i in range(3):
        image = build_image(f"cap{i}", layers=1, layer_size=150 * MiB, workdir=tmp_path)
        layers.append(push(upstream.url, f"library/cap{i}", "1", image).layer_digests[0])
    cache = make_cache("--upstream", f"docker.io={upstream.url}", "--max-size", "300MiB")
    for i, layer in enumerate(layers):
        started = time.monotonic()
        assert get_blob(cache, f"library/cap{i}", layer) == (200, layer)
        if i < len(layers) - 1:
            time.sleep(max(0.0, started + 2.0 - time.monotonic()))
    last = time.monotonic()
    while data_bytes(cache) > 330 * MiB and time.monotonic() < last + 5:
        time.sleep(0.1)
    assert data_bytes(cache) <= 330 * MiB, data_bytes(cache)
    for i, layer in enumerate(layers):
        assert get_blob(cache, f"library/cap{i}", layer) == (200, layer)
    assert upstream.blob_gets(layers[0]) == 2  # evicted though used seconds before


def test_joining_a_fill_another_worker_runs_for_another_repository_asks_upstream_first(
    upstream: UpstreamRegistry, make_cache: Callable[..., CacheServer], tmp_path: Path
) -> None:
    image = build_image("scoped", layers=1, layer_size=16 * MiB, workdir=tmp_path)
    layer = push(upstream.url, "team/private", "1", image).layer_digests[0]
    push(upstream.url, "team/other", "1", build_image("other", layers=1, workdir=tmp_path))
    proxy = FaultProxy(upstream.url).start()
    try:
        proxy.rules.append(Rule(path=f"/blobs/{layer}", method="GET", rate=4 * MiB))
        cache = make_cache("--upstream", f"docker.io={proxy.url}", "--workers", "2")
        filling = HTTP.request(
            "GET", f"{cache.url}/v2/team/private/blobs/{layer}", preload_content=False
        )
        assert filling.status == 200
        first = filling.read(MiB)  # the fill runs (in one worker) for team/private

        # Separate connections land on both workers (SO_REUSEPORT): each must ask
        # upstream whether team/other may see the blob; upstream says no.
        def other(_: int) -> int:
            pool = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=30))
            return pool.request("GET", f"{cache.url}/v2/team/other/blobs/{layer}").status

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(other, range(8)))
        assert statuses == [404] * 8
        heads = [s for s in proxy.log if s.method == "HEAD" and "/v2/team/other/blobs/" in s.path]
        assert len(heads) == 8
        rest = filling.read()
        assert "sha256:" + hashlib.sha256(first + rest).hexdigest() == layer
    finally:
        proxy.stop()
