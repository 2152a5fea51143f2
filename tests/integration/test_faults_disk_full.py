"""Fault: the data directory's file system fills up.

The cache runs in its own mount namespace (``unshare -m``) with its data
directory on a small tmpfs, so a full disk is a real ``ENOSPC`` from the kernel
and nothing outside the test is affected (the mount disappears with the
process). The test sees that file system through ``/proc/<pid>/root`` and eats
its free space with a filler file to make the disk full on cue.

- No partial file ever becomes visible under ``blobs/``; ``fills/`` and ``tmp/``
  are left empty after a failure.
- Without a size cap: a blob that cannot fit (beside what other fills in flight
  still write) is a clean ``507`` (JSON) before
  any byte is sent; a disk that fills up during a fill cuts that download short;
  a manifest that cannot be written is a ``507``; hits keep being served; once
  space is back, the same pulls succeed.
- With a cap (``--max-size``), eviction makes room: pulling more than the disk
  holds succeeds; and when the cap is larger than the disk, the first fill that
  does not fit fails with ``507`` and eviction frees room for the retry.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import urllib3

from tests.harness.cache import CacheServer
from tests.harness.faults import FaultProxy, Rule
from tests.harness.images import build_image, push
from tests.harness.push import PushResult
from tests.harness.registry import UpstreamRegistry
from tests.harness.tmpfs import data_view

MiB = 1 << 20
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"

http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=30))


def free_bytes(cache: CacheServer) -> int:
    st = os.statvfs(data_view(cache))
    return st.f_bavail * st.f_frsize


class Filler:
    """A file outside the cache's layout that takes the tmpfs's free space."""

    def __init__(self, cache: CacheServer) -> None:
        self.path = data_view(cache) / "filler"

    def leave(self, free: int, cache: CacheServer) -> None:
        """Grow (never shrink) until about ``free`` bytes remain (0: until ENOSPC)."""
        with self.path.open("ab") as handle:
            block = b"\0" * MiB
            while (room := free_bytes(cache) - free) > 0:
                try:
                    handle.write(block[: min(room, MiB)] if free else block)
                    handle.flush()
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break

    def remove(self) -> None:
        self.path.unlink()


def blob_path(cache: CacheServer, digest: str) -> Path:
    return data_view(cache) / "blobs" / "sha256" / digest[7:9] / digest[7:]


def assert_store_clean(cache: CacheServer) -> None:
    """No leftovers of failed writes; every visible blob hashes to its name."""
    data = data_view(cache)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and any((data / "fills").iterdir()):
        time.sleep(0.05)  # a failed fill removes its partial as it ends
    assert not list((data / "fills").iterdir())
    assert not list((data / "tmp").iterdir())
    for path in (data / "blobs").rglob("*"):
        if path.is_file():
            assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name, path


def get(cache: CacheServer, path: str, **kw: object) -> urllib3.BaseHTTPResponse:
    return http.request(
        "GET",
        cache.url + path,
        headers={"Accept": OCI_MANIFEST},
        **kw,  # type: ignore[arg-type]
    )


def error_code(response: urllib3.BaseHTTPResponse) -> str:
    return str(json.loads(response.data)["errors"][0]["code"])


def one_layer_images(
    upstream: UpstreamRegistry, prefix: str, count: int, size: int, workdir: Path
) -> list[PushResult]:
    """``library/<prefix><i>:1`` for i < count, each one layer of ``size`` random bytes."""
    return [
        push(
            upstream.url,
            f"library/{prefix}{i}",
            "1",
            build_image(f"{prefix}-{i}", layers=1, layer_size=size, workdir=workdir),
        )
        for i in range(count)
    ]


def pull_ok(cache: CacheServer, repo: str, image: PushResult) -> None:
    """Manifest by tag and every blob, each 200 with the right bytes."""
    manifest = get(cache, f"/v2/{repo}/manifests/1")
    assert manifest.status == 200, manifest.data
    assert manifest.headers["Docker-Content-Digest"] == image.digest
    for digest in [*image.layer_digests, image.artifact.config.digest]:  # type: ignore[union-attr]
        blob = get(cache, f"/v2/{repo}/blobs/{digest}")
        assert blob.status == 200, (digest, blob.status)
        assert "sha256:" + hashlib.sha256(blob.data).hexdigest() == digest


def test_disk_full_without_cap_clean_errors_hits_still_served(
    upstream: UpstreamRegistry,
    proxy: FaultProxy,
    tmpfs_cache: Callable[..., CacheServer],
    tmp_path: Path,
) -> None:
    small = push(upstream.url, "library/small", "1", build_image("small", layers=2))
    big_image = build_image("big", layers=1, layer_size=6 * MiB, workdir=tmp_path)
    big = push(upstream.url, "library/big", "1", big_image)
    other = push(upstream.url, "library/other", "1", build_image("other", layers=1))
    layer = big.layer_digests[0]
    proxy.add(Rule(path=f"/blobs/{layer}", method="GET", rate=2 * MiB))
    cache = tmpfs_cache("--upstream", f"docker.io={proxy.url}")
    pull_ok(cache, "library/small", small)
    filler = Filler(cache)

    # 1. Not enough room for the blob: a clean 507 before any byte is sent.
    filler.leave(2 * MiB, cache)
    started = time.monotonic()
    response = get(cache, f"/v2/library/big/blobs/{layer}")
    assert response.status == 507 and error_code(response) == "UNAVAILABLE"
    assert time.monotonic() - started < 2.0
    assert not blob_path(cache, layer).exists()
    assert_store_clean(cache)
    # ...while a small manifest still fits and is cached.
    assert get(cache, "/v2/library/big/manifests/1").status == 200

    # 2. The disk fills up during the fill: the download is cut short, nothing kept.
    filler.remove()
    filler.leave(12 * MiB, cache)
    response = get(cache, f"/v2/library/big/blobs/{layer}", preload_content=False)
    assert response.status == 200
    received = 0
    with pytest.raises(urllib3.exceptions.ProtocolError):
        for chunk in response.stream(1 << 16):
            if received == 0:
                filler.leave(0, cache)  # the first bytes arrived: now the disk is full
            received += len(chunk)
    response.release_conn()
    assert received < big_image.layers[0].size
    assert not blob_path(cache, layer).exists()
    assert_store_clean(cache)

    # 3. Completely full: uncached manifests and blobs are 507s, hits keep flowing.
    filler.leave(0, cache)
    for path in ("/v2/library/other/manifests/1", f"/v2/library/big/blobs/{layer}"):
        response = get(cache, path)
        assert response.status == 507 and error_code(response) == "UNAVAILABLE", path
    assert_store_clean(cache)
    pull_ok(cache, "library/small", small)
    by_digest = get(cache, f"/v2/library/small/manifests/{small.digest}")
    assert by_digest.status == 200

    # 4. Space is back: everything that failed now works.
    filler.remove()
    proxy.clear()
    pull_ok(cache, "library/big", big)
    pull_ok(cache, "library/other", other)
    assert_store_clean(cache)
    assert cache.running


def test_concurrent_fills_reserve_room_for_each_other(
    upstream: UpstreamRegistry,
    proxy: FaultProxy,
    tmpfs_cache: Callable[..., CacheServer],
    tmp_path: Path,
) -> None:
    """Two blobs that each fit, but not together: the second is a clean 507 up front,
    and the first is not cut short by it."""
    first, second = one_layer_images(upstream, "big", 2, 6 * MiB, tmp_path)
    for image in (first, second):
        proxy.add(Rule(path=f"/blobs/{image.layer_digests[0]}", method="GET", rate=4 * MiB))
    cache = tmpfs_cache("--upstream", f"docker.io={proxy.url}")
    Filler(cache).leave(10 * MiB, cache)

    layer = first.layer_digests[0]
    streaming = get(cache, f"/v2/library/big0/blobs/{layer}", preload_content=False)
    assert streaming.status == 200
    body = bytearray(streaming.read(64 << 10))  # its fill has announced its 6 MiB
    other = get(cache, f"/v2/library/big1/blobs/{second.layer_digests[0]}")
    assert other.status == 507 and error_code(other) == "UNAVAILABLE"
    assert "promised to other downloads" in json.loads(other.data)["errors"][0]["message"]
    body += streaming.read()
    assert "sha256:" + hashlib.sha256(body).hexdigest() == layer
    assert blob_path(cache, layer).exists()
    assert_store_clean(cache)


@pytest.mark.parametrize("cap", ["16m", "1g"], ids=["cap-under-disk", "cap-over-disk"])
def test_disk_full_with_cap_eviction_makes_room(
    cap: str,
    upstream: UpstreamRegistry,
    tmpfs_cache: Callable[..., CacheServer],
    tmp_path: Path,
) -> None:
    # Five 8 MiB images (40 MiB of layers) through a 32 MiB disk. A cap over the
    # disk's size cannot keep it from filling: eviction must still make room.
    images = one_layer_images(upstream, "img", 5, 8 * MiB, tmp_path)
    config = tmp_path / "evict.yaml"
    config.write_text("evict_grace: 0s\n")  # test time: everything is "recent"
    cache = tmpfs_cache(
        "--upstream", f"docker.io={upstream.url}", "--config", str(config), "--max-size", cap
    )
    for i, image in enumerate(images):
        pull_ok(cache, f"library/img{i}", image)
        assert_store_clean(cache)
    if cap == "16m":
        blobs = data_view(cache) / "blobs"
        used = sum(p.stat().st_size for p in blobs.rglob("*") if p.is_file())
        assert used <= 16_000_000 + 9 * MiB, used  # the cap, plus the fill in flight
    pull_ok(cache, "library/img0", images[0])  # evicted or not: served correctly
    assert_store_clean(cache)
    assert '" 507 ' not in cache.log_text()  # no pull ever failed for want of room
