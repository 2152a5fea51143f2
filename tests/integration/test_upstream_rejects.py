"""An upstream that rejects a request the cache passed on (HTTP 400 with an OCI code).

The cache checks names, tags and digests itself before it asks; what an upstream still
rejects (a stricter registry's rules) is nothing the client can act on by asking the
cache again: a 502 with an OCI JSON body, never a 500. The codes that do mean something
to the client keep their status (404, 401/403, 429: test_api, test_upstream_credentials,
test_faults_throttle).

docker-registry 2.8 never answers 400 to what the cache forwards (it answers 500 UNKNOWN
to a name over its bound, which is retried, then a 502), so a fault proxy in front of
the real one gives the stricter registry's answer for one path; the rest is the real one.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import urllib3

from tests.harness.cache import CacheServer
from tests.harness.faults import FaultProxy, Rule
from tests.harness.images import build_image, push
from tests.harness.registry import UpstreamRegistry

http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=30))
REJECTED = b'{"errors":[{"code":"TAG_INVALID","message":"tag rejected by policy"}]}'


def test_upstream_400_is_a_bad_gateway_with_an_oci_body(
    upstream: UpstreamRegistry, proxy: FaultProxy, make_cache: Callable[..., CacheServer]
) -> None:
    image = push(upstream.url, "library/test", "1.0", build_image("rejects", layers=1))
    push(upstream.url, "library/test", "weird--tag", build_image("rejects-2", layers=1))
    proxy.rules.append(Rule(path="/manifests/weird--tag", status=400, body=REJECTED))
    cache = make_cache("--upstream", f"docker.io={proxy.url}")

    for method in ("GET", "HEAD"):
        response = http.request(method, f"{cache.url}/v2/library/test/manifests/weird--tag")
        assert response.status == 502, method
        assert response.headers["Content-Type"].startswith("application/json"), method
        if method == "GET":
            error = json.loads(response.data)["errors"][0]
            assert error["code"] == "UNAVAILABLE"
            assert error["message"] == (
                "upstream docker.io rejected the request for library/test:weird--tag (TAG_INVALID)"
            )
    # Only that answer was a rejection: the same upstream still serves the rest.
    ok = http.request("GET", f"{cache.url}/v2/library/test/manifests/1.0")
    assert ok.status == 200 and ok.headers["Docker-Content-Digest"] == image.digest
    # Not retried: a 400 would come again.
    rejected = [s for s in proxy.log if s.path.endswith("/manifests/weird--tag")]
    assert [s.status for s in rejected] == [400, 400]
