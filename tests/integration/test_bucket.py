"""The shared tier on one machine: a single replica, the SQLite index, a real S3 engine.

Real engines throughout: docker-registry as the upstream, SeaweedFS and Ceph RGW
as the bucket (the test's own, on 127.0.0.1), the cache as a subprocess; the
bucket is checked with the tests' own S3 client (boto3), never the product's.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import urllib3

from tests.harness.bucket import BucketView, aws_env, storage_args
from tests.harness.cache import CacheServer
from tests.harness.clients import pulled_blobs, skopeo_copy
from tests.harness.images import build_image, push
from tests.harness.metrics import scrape
from tests.harness.netns import Hosts
from tests.harness.registry import UpstreamRegistry
from tests.harness.s3engine import S3Engine

HTTP = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=60))
MIB = 1 << 20


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, int]:
    response = HTTP.request("GET", url, headers=headers, preload_content=False)
    hasher, size = hashlib.sha256(), 0
    for chunk in response.stream(MIB):
        hasher.update(chunk)
        size += len(chunk)
    response.release_conn()
    return response.status, "sha256:" + hasher.hexdigest(), size


def bucket_cache(
    make_cache: Callable[..., CacheServer],
    upstream: UpstreamRegistry,
    engine: S3Engine,
    *extra: str,
    prefix: str = "cache",
) -> CacheServer:
    return make_cache(
        "--upstream",
        f"docker.io={upstream.url}",
        *storage_args(engine, prefix),
        *extra,
        env=aws_env(engine),
    )


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_a_fill_is_uploaded_and_a_fresh_cache_serves_it_from_the_bucket_not_upstream(
    s3_engine: S3Engine,
    upstream: UpstreamRegistry,
    make_cache: Callable[..., CacheServer],
    tmp_path: Path,
) -> None:
    image = build_image("tier", layers=2, layer_size=12 * MIB, workdir=tmp_path)
    pushed = push(upstream.url, "library/tier", "1", image)
    view = BucketView(s3_engine)
    first = bucket_cache(make_cache, upstream, s3_engine)
    assert HTTP.request("GET", f"{first.url}/v2/library/tier/manifests/1").status == 200
    for layer in pushed.layer_digests:
        assert fetch(f"{first.url}/v2/library/tier/blobs/{layer}")[:2] == (200, layer)
    for digest in (*pushed.layer_digests, pushed.digest):
        assert view.wait_holds(digest), digest  # verified: its bytes hash to the key
    assert view.uploads() == []
    first.stop()

    # Another cache, empty data directory, same bucket: layers come from the bucket.
    upstream.clear_request_log()
    second = bucket_cache(make_cache, upstream, s3_engine)
    for layer, built in zip(pushed.layer_digests, image.layers, strict=True):
        assert fetch(f"{second.url}/v2/library/tier/blobs/{layer}") == (200, layer, built.size)
        assert second.wait_for_blob(layer, 5).exists()  # copied into its local tier
    assert upstream.blob_gets() == 0
    assert scrape(second.url).value("registry_cache_fill_sources_total", source="bucket") == 2
    assert "Traceback" not in first.log_text() + second.log_text()
