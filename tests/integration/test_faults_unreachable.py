"""Fault: upstream unreachable, refusing connections or accepting and never answering.

Cached content keeps being served (a tag past its TTL stale, after one quick
revalidation attempt; digests without asking upstream at all); uncached content
gets a JSON ``503 UNAVAILABLE`` promptly: well under containerd's 30 s
response-header timeout, which would otherwise make the client give up on us.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import urllib3

from tests.harness.cache import CacheServer
from tests.harness.faults import FaultProxy, Rule
from tests.harness.images import build_image, push
from tests.harness.metrics import scrape
from tests.harness.push import PushResult
from tests.harness.registry import UpstreamRegistry
from tests.harness.wait import wait_for_log, wait_tag_expired

http = urllib3.PoolManager(maxsize=4, retries=False, timeout=urllib3.Timeout(connect=5, read=40))
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ERRORS = "registry_cache_upstream_errors_total"


class Setup:
    def __init__(self, proxy: FaultProxy, cache: CacheServer, cached: PushResult) -> None:
        self.proxy, self.cache, self.cached = proxy, cache, cached
        self.uncached_layer = ""

    def get(self, path: str, method: str = "GET") -> tuple[urllib3.BaseHTTPResponse, float]:
        started = time.monotonic()
        response = http.request(method, self.cache.url + path, headers={"Accept": OCI_MANIFEST})
        return response, time.monotonic() - started

    def cached_paths(self) -> list[str]:
        image = self.cached
        return [
            f"/v2/library/app/manifests/{image.digest}",
            *(f"/v2/library/app/blobs/{d}" for d in image.layer_digests),
        ]

    def assert_cached_content_served(self) -> None:
        """The tag (past its TTL) comes back STALE; digests are hits, asking nobody."""
        response, took = self.get("/v2/library/app/manifests/1.0")
        assert response.status == 200 and took < 4.5, (response.status, took)
        assert response.headers["Docker-Content-Digest"] == self.cached.digest
        seen = len(self.proxy.log)
        for path in self.cached_paths():
            response, took = self.get(path)
            assert response.status == 200 and took < 0.5, (path, response.status, took)
        assert len(self.proxy.log) == seen  # digests never need upstream

    def assert_uncached_is_prompt_503(self, limit: float) -> None:
        paths = [
            ("GET", "/v2/library/other/manifests/1.0"),
            ("GET", f"/v2/library/other/blobs/{self.uncached_layer}"),
            ("HEAD", f"/v2/library/other/blobs/{self.uncached_layer}"),
        ]
        with ThreadPoolExecutor(len(paths)) as pool:
            answers = list(pool.map(lambda mp: self.get(mp[1], mp[0]), paths))
        for (method, path), (response, took) in zip(paths, answers, strict=True):
            assert response.status == 503, (method, path, response.status)
            assert took < limit, (method, path, took)
            if method == "GET":
                assert json.loads(response.data)["errors"][0]["code"] == "UNAVAILABLE"


@pytest.fixture
def setup(upstream: UpstreamRegistry, make_cache: Callable[..., CacheServer]) -> Iterator[Setup]:
    cached = push(upstream.url, "library/app", "1.0", build_image("reachable", layers=2))
    other = push(upstream.url, "library/other", "1.0", build_image("never-cached", layers=1))
    proxy = FaultProxy(upstream.url).start()
    cache = make_cache("--upstream", f"docker.io={proxy.url}", "--tag-ttl", "1s")
    setup = Setup(proxy, cache, cached)
    setup.uncached_layer = other.layer_digests[0]
    assert setup.get("/v2/library/app/manifests/1.0")[0].status == 200
    for path in setup.cached_paths():
        assert setup.get(path)[0].status == 200
    # The tag's TTL is over: the next pull must try upstream.
    wait_tag_expired(cache.data_dir, "docker.io", "library/app", "1.0", 1.0)
    yield setup
    proxy.stop()


def test_refused_cached_content_served_uncached_prompt_503(setup: Setup) -> None:
    setup.proxy.stop()  # nothing listens on the port any more: connection refused
    setup.assert_cached_content_served()
    setup.assert_uncached_is_prompt_503(limit=3.0)
    wait_for_log(setup.cache, "cache=STALE")
    snapshot = scrape(setup.cache.url)
    assert snapshot.value(ERRORS, upstream="docker.io", kind="unreachable") >= 3
    assert snapshot.value("registry_cache_stale_serves_total", upstream="docker.io") == 1


def test_hanging_upstream_stale_within_seconds_uncached_503_before_client_timeout(
    setup: Setup,
) -> None:
    setup.proxy.add(Rule(hang=True))  # accepts, reads the request, never answers
    started = time.monotonic()
    setup.assert_cached_content_served()  # the revalidation HEAD gives up after 3 s
    assert time.monotonic() - started >= 2.5  # it did wait for upstream, once
    # The default header timeout (10 s), well under containerd's 30 s.
    setup.assert_uncached_is_prompt_503(limit=15.0)
    snapshot = scrape(setup.cache.url)
    assert snapshot.value(ERRORS, upstream="docker.io", kind="timeout") == 4
    assert snapshot.value("registry_cache_stale_serves_total", upstream="docker.io") == 1
    assert [s.method for s in setup.proxy.log].count("HEAD") == 2  # tag + uncached blob
