"""Faults: 429 with ``Retry-After``, and bursts of 5xx.

- A short ``Retry-After`` is waited out and the request retried; a long one is
  passed to the client as ``429 TOOMANYREQUESTS`` with ``Retry-After``, at once.
- A 5xx burst shorter than the retry budget is retried with backoff; a longer
  one becomes a JSON ``UNAVAILABLE`` after exactly the budgeted attempts.
- While upstream throttles or fails, cached tags are served stale (one quick
  HEAD each, never a GET) and digests straight from the cache (no request at all).
- Docker Hub's ``ratelimit-remaining`` shows up as a gauge.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator

import pytest
import urllib3

from tests.harness.cache import CacheServer
from tests.harness.faults import FaultProxy, Rule
from tests.harness.images import build_image, push
from tests.harness.metrics import scrape
from tests.harness.push import PushResult
from tests.harness.registry import UpstreamRegistry
from tests.harness.wait import wait_tag_expired

http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=30))
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class Setup:
    def __init__(self, proxy: FaultProxy, cache: CacheServer, image: PushResult) -> None:
        self.proxy, self.cache, self.image = proxy, cache, image

    def get(self, path: str, method: str = "GET") -> tuple[urllib3.BaseHTTPResponse, float]:
        started = time.monotonic()
        response = http.request(method, self.cache.url + path, headers={"Accept": OCI_MANIFEST})
        return response, time.monotonic() - started

    def upstream_errors(self, kind: str) -> float:
        return scrape(self.cache.url).value(
            "registry_cache_upstream_errors_total", upstream="docker.io", kind=kind
        )


@pytest.fixture
def setup(upstream: UpstreamRegistry, make_cache: Callable[..., CacheServer]) -> Iterator[Setup]:
    image = push(upstream.url, "library/app", "1.0", build_image("throttle", layers=2))
    proxy = FaultProxy(upstream.url).start()
    cache = make_cache("--upstream", f"docker.io={proxy.url}", "--tag-ttl", "1s")
    yield Setup(proxy, cache, image)
    proxy.stop()


def error_code(response: urllib3.BaseHTTPResponse) -> str:
    return str(json.loads(response.data)["errors"][0]["code"])


def test_short_retry_after_is_waited_out_and_retried(setup: Setup) -> None:
    layer = setup.image.layer_digests[0]
    for path in ("/manifests/1.0", f"/blobs/{layer}"):
        setup.proxy.add(
            Rule(path=path, method="GET", status=429, headers={"Retry-After": "1"}, times=1)
        )
    response, took = setup.get("/v2/library/app/manifests/1.0")
    assert response.status == 200 and response.headers["Docker-Content-Digest"] == (
        setup.image.digest
    )
    assert 1.0 <= took < 3.0, took
    blob, took = setup.get(f"/v2/library/app/blobs/{layer}")
    assert blob.status == 200 and "sha256:" + hashlib.sha256(blob.data).hexdigest() == layer
    assert 1.0 <= took < 3.0, took
    assert setup.proxy.count("GET", "/manifests/1.0", status=429) == 1
    assert setup.proxy.count("GET", "/manifests/1.0", status=200) == 1
    assert setup.proxy.count("GET", f"/blobs/{layer}") == 2
    assert setup.upstream_errors("ratelimited") == 2


def test_long_retry_after_is_passed_to_the_client_at_once(setup: Setup) -> None:
    setup.proxy.add(Rule(path="/v2/library/app/", status=429, headers={"Retry-After": "30"}))
    for path in ("/manifests/1.0", f"/blobs/{setup.image.layer_digests[0]}"):
        response, took = setup.get("/v2/library/app" + path)
        assert response.status == 429 and error_code(response) == "TOOMANYREQUESTS"
        assert response.headers["Retry-After"] == "30"
        assert took < 1.0, took
    assert setup.proxy.count("GET") == 2  # no retry: the wait is the client's to make
    assert setup.upstream_errors("ratelimited") == 2


def test_5xx_burst_is_retried_with_backoff_a_longer_one_fails_cleanly(setup: Setup) -> None:
    setup.proxy.add(Rule(path="/manifests/1.0", method="GET", status=503, times=2))
    response, took = setup.get("/v2/library/app/manifests/1.0")
    assert response.status == 200
    assert took >= 0.3, took  # backoff 0.25 s then 0.5 s, with ±50 % jitter
    assert setup.proxy.count("GET", "/manifests/1.0") == 3
    assert setup.upstream_errors("server_error") == 2

    setup.proxy.add(Rule(path="/blobs/", method="GET", status=502))
    layer = setup.image.layer_digests[1]
    blob, took = setup.get(f"/v2/library/app/blobs/{layer}")
    assert blob.status in (502, 503) and error_code(blob) == "UNAVAILABLE"
    assert took < 5.0, took
    assert setup.proxy.count("GET", f"/blobs/{layer}") == 3  # the retry budget, no more
    assert setup.upstream_errors("server_error") == 5


def test_throttled_upstream_tags_served_stale_digests_from_cache(setup: Setup) -> None:
    image = setup.image
    setup.proxy.add(
        Rule(path="/manifests/", method="HEAD", headers={"ratelimit-remaining": "42;w=21600"})
    )
    warm = [
        "/v2/library/app/manifests/1.0",
        *(f"/v2/library/app/blobs/{d}" for d in image.layer_digests),
        f"/v2/library/app/blobs/{image.artifact.config.digest}",  # type: ignore[union-attr]
    ]
    for path in warm:
        assert setup.get(path)[0].status == 200
    tag = (setup.cache.data_dir, "docker.io", "library/app", "1.0", 1.0)
    wait_tag_expired(*tag)  # the tag's TTL is over: the next pull revalidates
    assert setup.get("/v2/library/app/manifests/1.0")[0].status == 200  # REVALIDATED (HEAD)
    assert (
        scrape(setup.cache.url).value(
            "registry_cache_upstream_ratelimit_remaining", upstream="docker.io"
        )
        == 42
    )
    wait_tag_expired(*tag)  # renewed by that revalidation: wait for it again

    setup.proxy.clear()
    for status, headers in ((429, {"Retry-After": "60"}), (503, {})):
        rule = setup.proxy.add(Rule(path="/v2/", status=status, headers=headers))
        setup.proxy.log.clear()
        response, took = setup.get("/v2/library/app/manifests/1.0")
        assert response.status == 200, response.data
        assert response.headers["Docker-Content-Digest"] == image.digest
        assert took < 1.0, took  # one attempt, no waiting for Retry-After
        for path in (f"/v2/library/app/manifests/{image.digest}", *warm[1:]):
            response, took = setup.get(path)
            assert response.status == 200 and took < 0.5, (path, response.status, took)
        assert [(s.method, s.status) for s in setup.proxy.log] == [("HEAD", status)]
        setup.proxy.rules.remove(rule)
        wait_tag_expired(*tag)  # stale answers do not renew the TTL: over already
    log = setup.cache.log_text()
    assert log.count("cache=STALE") == 2
    snapshot = scrape(setup.cache.url)
    assert snapshot.value("registry_cache_stale_serves_total", upstream="docker.io") == 2
    assert snapshot.value("registry_cache_requests_total", kind="manifest", cache="STALE") == 2
