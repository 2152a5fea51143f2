"""Fault: upstream serves bytes that do not match the digest they were asked for.

Nothing is stored (no blob, no partial, no index entry), the client gets an
error (a JSON 502 for a manifest; for a blob whose headers already went out, a
connection cut one byte short, so no client ever completes a corrupt download),
and every mismatch is counted in ``registry_cache_digest_mismatches_total``.
The next request goes to upstream again.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import urllib3

from tests.harness.cache import CacheServer
from tests.harness.faults import FaultProxy, Rule
from tests.harness.images import build_image, push
from tests.harness.metrics import scrape
from tests.harness.registry import UpstreamRegistry
from tests.harness.wait import wait_until

http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=30))
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MISMATCHES = "registry_cache_digest_mismatches_total"


def mismatches_are(url: str, count: int) -> bool:
    return scrape(url).value(MISMATCHES, kind="blob") == count


def test_corrupt_blob_is_not_stored_client_cut_short_and_counted(
    upstream: UpstreamRegistry,
    proxy: FaultProxy,
    make_cache: Callable[..., CacheServer],
    tmp_path: Path,
) -> None:
    image = build_image("corrupt", layers=1, layer_size=3 << 20, workdir=tmp_path)
    layer = push(upstream.url, "library/corrupt", "1", image).layer_digests[0]
    size = image.layers[0].size
    proxy.add(Rule(path=f"/blobs/{layer}", method="GET", corrupt=True, times=2))
    cache = make_cache("--upstream", f"docker.io={proxy.url}")
    url = f"{cache.url}/v2/library/corrupt/blobs/{layer}"

    for attempt in (1, 2):
        response = http.request("GET", url, preload_content=False)
        assert response.status == 200  # headers leave before the last byte is known
        received = 0
        with pytest.raises(urllib3.exceptions.ProtocolError):
            for chunk in response.stream(1 << 16):
                received += len(chunk)
        response.release_conn()
        # The last byte is held back until the digest checks out, and the abort may
        # drop more still in flight: the download can never complete.
        assert received < size
        # The failed fill ends (partial removed, mismatch counted) just after the abort.
        wait_until(lambda: not list((cache.data_dir / "fills").iterdir()))
        counted = functools.partial(mismatches_are, cache.url, attempt)
        wait_until(counted)
        assert not cache.blob_path(layer).exists()
    head = http.request("HEAD", url)  # not held: answered from upstream's metadata
    assert head.status == 200 and head.headers["Content-Length"] == str(size)

    good = http.request("GET", url)  # upstream fixed: fetched again, stored
    assert good.status == 200 and "sha256:" + hashlib.sha256(good.data).hexdigest() == layer
    assert cache.wait_for_blob(layer, 2.0).exists()
    assert proxy.count("GET", f"/blobs/{layer}") == 3


# With two workers the requests land on either; /metrics (from either) counts both.
@pytest.mark.parametrize("workers", [1, 2])
def test_corrupt_manifest_by_digest_and_by_tag_is_a_502_and_not_stored(
    workers: int,
    upstream: UpstreamRegistry,
    proxy: FaultProxy,
    make_cache: Callable[..., CacheServer],
) -> None:
    pushed = push(upstream.url, "library/corrupt", "1", build_image("corrupt-manifest"))
    proxy.add(Rule(path="/manifests/", method="GET", corrupt=True, times=2))
    cache = make_cache("--upstream", f"docker.io={proxy.url}", "--workers", str(workers))
    headers = {"Accept": OCI_MANIFEST}

    for ref in (pushed.digest, "1"):
        response = http.request(
            "GET",
            f"{cache.url}/v2/library/corrupt/manifests/{ref}",
            headers={**headers, "Connection": "close"},  # a new connection: any worker
        )
        assert response.status == 502, response.data
        assert json.loads(response.data)["errors"][0]["code"] == "UNAVAILABLE"
    assert not cache.blob_path(pushed.digest).exists()
    assert scrape(cache.url).value(MISMATCHES, kind="manifest") == 2

    good = http.request("GET", f"{cache.url}/v2/library/corrupt/manifests/1", headers=headers)
    assert good.status == 200 and good.headers["Docker-Content-Digest"] == pushed.digest
    assert cache.blob_path(pushed.digest).exists()
    assert proxy.count("GET", "/manifests/") == 3
    for _ in range(4):  # whichever worker answers (scrape opens a new connection each time)
        snapshot = scrape(cache.url, fresh=True)
        assert snapshot.value(MISMATCHES) == 2
        assert snapshot.value("registry_cache_requests_total", kind="manifest") == 3
