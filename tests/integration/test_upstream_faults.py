"""Upstream down, wrong bytes, a crash mid-fill: cached content keeps flowing, nothing
corrupt is ever served or stored."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import urllib3

from tests.harness.cache import CacheServer
from tests.harness.clients import pulled_blobs, skopeo_available, skopeo_copy
from tests.harness.faults import FaultProxy, Rule
from tests.harness.images import build_image, push
from tests.harness.registry import UpstreamRegistry
from tests.harness.require import needs
from tests.harness.wait import wait_for_log, wait_tag_expired, wait_until

http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=30))


def get(url: str, **headers: str) -> urllib3.BaseHTTPResponse:
    return http.request("GET", url, headers=headers)


@needs(skopeo_available(), "skopeo missing")
def test_upstream_stopped_cached_pulls_still_work(
    upstream: UpstreamRegistry, make_cache: Callable[..., CacheServer], tmp_path: Path
) -> None:
    pushed = push(upstream.url, "library/test", "1.0", build_image("down"))
    push(upstream.url, "library/other", "1.0", build_image("never-pulled"))
    cache = make_cache("--upstream", f"docker.io={upstream.url}", "--tag-ttl", "1s")
    src = f"docker://127.0.0.1:{cache.port}/library/test"
    skopeo_copy(f"{src}:1.0", tmp_path / "warm")
    upstream.stop()
    # The tag's TTL is over: revalidation fails, the stale digest is served.
    wait_tag_expired(cache.data_dir, "docker.io", "library/test", "1.0", 1.0)
    by_tag = tmp_path / "tag"
    skopeo_copy(f"{src}:1.0", by_tag)
    assert set(pushed.layer_digests) <= pulled_blobs(by_tag)
    skopeo_copy(f"{src}@{pushed.digest}", tmp_path / "digest")
    wait_for_log(cache, "cache=STALE")
    tags = get(f"{cache.url}/v2/library/test/tags/list")  # from what the cache holds
    assert tags.status == 200 and json.loads(tags.data)["tags"] == ["1.0"]
    started = time.monotonic()
    response = get(f"{cache.url}/v2/library/other/manifests/1.0")
    assert time.monotonic() - started < 5
    assert response.status in (502, 503)
    assert json.loads(response.data)["errors"][0]["code"] == "UNAVAILABLE"
    blob = get(f"{cache.url}/v2/library/other/blobs/sha256:{'1' * 64}")
    assert blob.status in (502, 503)


def test_tampered_upstream_blob_is_never_stored_or_completed(
    upstream: UpstreamRegistry, make_cache: Callable[..., CacheServer]
) -> None:
    image = build_image("tamper", layers=1, layer_size=4 << 20)
    pushed = push(upstream.url, "library/tamper", "1", image)
    layer = pushed.layer_digests[0]
    size = image.layers[0].size
    data_file = upstream.blob_path(layer)
    original = data_file.read_bytes()
    corrupt = bytearray(original)
    corrupt[len(corrupt) // 2] ^= 0xFF
    data_file.write_bytes(bytes(corrupt))
    cache = make_cache("--upstream", f"docker.io={upstream.url}")
    url = f"{cache.url}/v2/library/tamper/blobs/{layer}"
    response = http.request("GET", url, preload_content=False)
    assert response.status == 200  # headers go out before the last byte is known
    received = bytearray()
    with pytest.raises(urllib3.exceptions.ProtocolError):
        for chunk in response.stream(1 << 16):
            received += chunk
    assert len(received) < size  # the client never saw a complete (corrupt) body
    response.release_conn()
    # The failed fill removes its partial as it ends, a moment after the client's abort.
    wait_until(lambda: not list((cache.data_dir / "fills").glob("*.partial")))
    wait_for_log(cache, "digest mismatch")
    assert not cache.blob_path(layer).exists()
    # The next request tries upstream again (and succeeds once upstream is repaired).
    data_file.write_bytes(original)
    gets_before = upstream.blob_gets(layer)
    again = get(url)
    assert again.status == 200
    assert "sha256:" + hashlib.sha256(again.data).hexdigest() == layer
    assert upstream.blob_gets(layer) == gets_before + 1
    assert cache.wait_for_blob(layer, 3.0).exists()


def test_kill9_mid_fill_then_restart_serves_only_correct_bytes(
    upstream: UpstreamRegistry,
    proxy: FaultProxy,
    make_cache: Callable[..., CacheServer],
    tmp_path: Path,
) -> None:
    image = build_image("kill9", layers=1, layer_size=24 << 20, workdir=tmp_path)
    pushed = push(upstream.url, "library/kill9", "1", image)
    layer = pushed.layer_digests[0]
    proxy.add(Rule(path=f"/blobs/{layer}", method="GET", rate=8 << 20, times=1))
    cache = make_cache("--upstream", f"docker.io={proxy.url}")
    url = f"{cache.url}/v2/library/kill9/blobs/{layer}"
    response = http.request("GET", url, preload_content=False)
    assert response.status == 200
    partial = cache.data_dir / "fills" / f"sha256-{layer.split(':', 1)[1]}.partial"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (
        not partial.exists() or partial.stat().st_size < 4 << 20
    ):
        time.sleep(0.05)
    cache.kill9()
    response.release_conn()
    written = partial.stat().st_size
    assert 0 < written < image.layers[0].size
    assert not cache.blob_path(layer).exists()  # a partial never became visible
    cache.restart()
    again = get(url)
    assert again.status == 200
    assert "sha256:" + hashlib.sha256(again.data).hexdigest() == layer
    # The restart resumed the partial with a Range request instead of starting over.
    ranges = [s.range for s in proxy.log if s.method == "GET" and layer in s.path]
    assert ranges[0] is None and ranges[-1] is not None and ranges[-1].startswith("bytes=")
    assert int(ranges[-1].split("=")[1].split("-")[0]) > 0
    assert cache.wait_for_blob(layer, 3.0).stat().st_size == image.layers[0].size
    assert os.listdir(cache.data_dir / "fills") == []
