"""Cache lifecycle end to end: bounded disk, ``cache`` maintenance commands, ``warm``.

Real docker-registry upstreams and real cache servers, all on 127.0.0.1 and stopped
by their fixtures. Pulls use the project's verifying pull client, so a pull that
succeeds got every byte right. ``evict_grace`` is set to 1 s through a config file
so tests need not wait the default 30 s before older content may go.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import urllib3

from registry_cache.bench.pullclient import PullResult, pull
from tests.harness.cache import CacheServer, run_cli, safe_upstream_args
from tests.harness.images import Image, build_image, build_index, push
from tests.harness.metrics import scrape
from tests.harness.registry import UpstreamRegistry
from tests.harness.wait import wait_unused_for

pytestmark = pytest.mark.integration

MB = 1_000_000


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=cwd, timeout=180)


def cache_cmd(cache: CacheServer, *args: str) -> subprocess.CompletedProcess[str]:
    return cli("cache", *args, "--data-dir", str(cache.data_dir), cwd=cache.workdir)


def cache_json(cache: CacheServer, *args: str) -> Any:
    result = cache_cmd(cache, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def pulled(cache: CacheServer, ref: str, platform: str = "linux/amd64") -> PullResult:
    return asyncio.run(pull(ref, cache.url, platform=platform))


def listed(cache: CacheServer) -> dict[str, dict[str, Any]]:
    return {f"{i['repository']}:{i['tag']}": i for i in cache_json(cache, "ls")["images"]}


def complete(cache: CacheServer, name: str, timeout: float = 5.0) -> bool:
    """Whether ``ls`` shows ``name`` complete; waits a little, since a client has the last
    (verified) byte of a blob a moment before the filling worker commits and indexes it."""
    deadline = time.monotonic() + timeout
    while True:
        image = listed(cache).get(name)
        if (image is not None and image["complete"]) or time.monotonic() > deadline:
            return image is not None and bool(image["complete"])
        time.sleep(0.1)


@pytest.fixture
def grace_config(tmp_path: Path) -> Path:
    path = tmp_path / "lifecycle.yml"
    path.write_text("evict_grace: 1s\n")
    return path


def used(image: Image) -> list[str]:
    """The digests a pull of ``image`` touches: manifest, config, layers."""
    return [image.digest, image.config.digest, *image.layer_digests]


def _big(seed: str) -> Image:
    return build_image(seed, layers=2, layer_size=3 * MB)


@pytest.mark.parametrize("workers", [1, 2])
def test_max_size_evicts_least_recently_used_and_refetches(
    upstream: UpstreamRegistry,
    make_cache: Callable[..., CacheServer],
    grace_config: Path,
    workers: int,
) -> None:
    a, b = _big("evict-a"), _big("evict-b")
    push(upstream.url, "app/a", "1", a)
    push(upstream.url, "app/b", "1", b)
    cache = make_cache(
        "--upstream", f"reg.test={upstream.url}", "--max-size", "5MB",
        "--config", str(grace_config), "--workers", str(workers),
    )  # fmt: skip
    big_a = a.layer_digests[-1]
    assert pulled(cache, "reg.test/app/a:1").manifest_digest == a.digest
    assert complete(cache, "app/a:1")
    wait_unused_for(cache.data_dir, 1.0, used(a), [("reg.test", "app/a", "1")])  # past grace
    assert pulled(cache, "reg.test/app/b:1").manifest_digest == b.digest
    assert complete(cache, "app/b:1")
    # b's big layer announced its size before arriving: a went first, so the cap held.
    assert cache_json(cache, "du")["total"]["bytes"] <= 5 * MB
    assert "app/a:1" not in listed(cache)  # its manifest was evicted, so was the tag
    evictions = scrape(cache.url)
    assert evictions.value("registry_cache_evictions_total", reason="space") >= 1
    assert evictions.value("registry_cache_evicted_bytes_total", reason="space") >= 3 * MB
    assert cache_cmd(cache, "verify").returncode == 0
    assert upstream.blob_gets(big_a) == 1
    tag_gets = upstream.count("GET", "/v2/app/a/manifests/1")

    # b past the grace too: pulling a again must evict it to stay under the cap.
    wait_unused_for(cache.data_dir, 1.0, used(b), [("reg.test", "app/b", "1")])
    assert pulled(cache, "reg.test/app/a:1").manifest_digest == a.digest
    if workers == 1:
        assert upstream.blob_gets(big_a) == 2  # fetched again from upstream
    else:
        # Which of a's and b's objects went first depends on access times the other
        # worker flushes up to 5 s late (store/evict.py): a's big layer may have
        # outlived one of b's. Either way the pull above was served right.
        assert upstream.blob_gets(big_a) in (1, 2)
    assert upstream.count("GET", "/v2/app/a/manifests/1") == tag_gets + 1  # tag resolved again
    if workers == 1:
        assert complete(cache, "app/a:1")
    else:
        # A blob of a that was still cached may have been hit by one worker while the
        # other evicted by access times the first had not yet written (store/evict.py):
        # the pull was right, only the LRU order was off. The index is still consistent.
        assert "app/a:1" in listed(cache)
    assert cache_json(cache, "du")["total"]["bytes"] <= 5 * MB
    verify = cache_cmd(cache, "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "evicted" in cache.log_text()


def _flip(cache: CacheServer, digest: str) -> Path:
    path = cache.blob_path(digest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return path


def test_verify_quarantines_corrupt_objects_which_are_then_refetched(
    upstream: UpstreamRegistry, make_cache: Callable[..., CacheServer]
) -> None:
    index = build_index("verify")
    amd = index.for_platform("linux/amd64")
    push(upstream.url, "app/v", "1", index)
    cache = make_cache("--upstream", f"reg.test={upstream.url}")
    pulled(cache, "reg.test/app/v:1")
    assert complete(cache, "app/v:1")
    layer = amd.layer_digests[0]
    corrupted = [_flip(cache, layer), _flip(cache, amd.digest)]  # a layer and a manifest

    result = cache_cmd(cache, "verify")
    assert result.returncode == 1
    assert f"corrupt: {layer}" in result.stdout and f"corrupt: {amd.digest}" in result.stdout
    assert result.stderr.strip().splitlines() == [
        "registry-cache: verify found 2 corrupt object(s) (quarantined) and"
        " 0 index row(s) without a file (dropped)"
    ]
    for path in corrupted:
        assert (cache.data_dir / "quarantine" / f"sha256-{path.name}").exists()
        assert not path.exists()
    assert listed(cache)["app/v:1"]["platforms_cached"] == 0  # the index itself is fine
    assert upstream.blob_gets(layer) == 1
    by_digest = upstream.count("GET", f"/v2/app/v/manifests/{amd.digest}")
    cache.restart()  # a fresh process: no manifest memoised in memory
    assert pulled(cache, "reg.test/app/v:1").manifest_digest == amd.digest
    assert upstream.blob_gets(layer) == 2
    assert upstream.count("GET", f"/v2/app/v/manifests/{amd.digest}") == by_digest + 1
    assert cache_cmd(cache, "verify").returncode == 0
    assert complete(cache, "app/v:1")


def test_gc_removes_stale_partials_and_orphans_while_serving(
    upstream: UpstreamRegistry, make_cache: Callable[..., CacheServer]
) -> None:
    image = build_image("gc", layers=2)
    push(upstream.url, "app/g", "1", image)
    cache = make_cache("--upstream", f"reg.test={upstream.url}")
    pulled(cache, "reg.test/app/g:1")
    assert complete(cache, "app/g:1")
    data = cache.data_dir
    orphan_hex = "ab" * 32
    orphan = data / "blobs" / "sha256" / "ab" / orphan_hex
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"left behind by something")
    partial = data / "fills" / f"sha256-{'cd' * 32}.partial"
    partial.write_bytes(b"half a blob")
    leftover = data / "tmp" / "deadbeef.1.2"
    leftover.write_bytes(b"tmp")
    then = time.time() - 7200
    for path in (orphan, partial, leftover):
        os.utime(path, (then, then))

    report = cache_json(cache, "gc")
    assert report["orphans"] == [f"sha256:{orphan_hex}"]
    assert sorted(report["files"]) == sorted([f"fills/{partial.name}", "tmp/deadbeef.1.2"])
    assert not orphan.exists() and not partial.exists() and not leftover.exists()
    gets = upstream.blob_gets()
    pulled(cache, "reg.test/app/g:1")
    assert upstream.blob_gets() == gets  # everything that belongs to an image stayed
    assert cache_cmd(cache, "verify").returncode == 0


def test_prune_by_repository_then_by_age(
    upstream: UpstreamRegistry, make_cache: Callable[..., CacheServer]
) -> None:
    one, two = build_image("prune-1"), build_image("prune-2")
    push(upstream.url, "app/one", "1", one)
    push(upstream.url, "app/two", "1", two)
    cache = make_cache("--upstream", f"reg.test={upstream.url}")
    pulled(cache, "reg.test/app/one:1")
    pulled(cache, "reg.test/app/two:1")
    assert complete(cache, "app/one:1") and complete(cache, "app/two:1")

    report = cache_json(cache, "prune", "--repo", "reg.test/app/one", "--grace", "0s")
    assert report["tags"] == ["reg.test/app/one:1"]
    assert set(report["objects"]) == {one.digest, one.config.digest, *one.layer_digests}
    assert set(listed(cache)) == {"app/two:1"}

    wait_unused_for(cache.data_dir, 1.0, used(two), [("reg.test", "app/two", "1")])
    report = cache_json(cache, "prune", "--older-than", "1s", "--grace", "0s")
    assert report["tags"] == ["reg.test/app/two:1"]
    assert listed(cache) == {}
    assert cache_json(cache, "du")["total"]["objects"] == 0
    gets = upstream.blob_gets(two.layer_digests[0])
    assert pulled(cache, "reg.test/app/two:1").manifest_digest == two.digest
    assert upstream.blob_gets(two.layer_digests[0]) == gets + 1
    assert cache_cmd(cache, "verify").returncode == 0


def test_prune_reaches_a_running_server(
    upstream: UpstreamRegistry, make_cache: Callable[..., CacheServer]
) -> None:
    """After ``prune --repo`` the server forgets that repository's links within its
    flush interval: a blob still on disk (shared with another repository) is no longer
    handed out under the pruned name without asking upstream again."""
    image = build_image("prune-live")
    push(upstream.url, "app/a", "1", image)
    push(upstream.url, "app/b", "1", image)
    cache = make_cache("--upstream", f"reg.test={upstream.url}", "--workers", "2")
    pulled(cache, "reg.test/app/a:1")
    pulled(cache, "reg.test/app/b:1")
    layer = image.layer_digests[0]
    blob = f"{cache.url}/v2/reg.test/app/a/blobs/{layer}"
    http = urllib3.PoolManager(retries=False)
    assert http.request("GET", blob).status == 200

    report = cache_json(cache, "prune", "--repo", "reg.test/app/a", "--grace", "0s")
    assert report["tags"] == ["reg.test/app/a:1"] and report["objects"] == []  # b keeps them
    asked = upstream.count(None, f"/v2/app/a/blobs/{layer}")
    deadline = time.monotonic() + 15
    while upstream.count(None, f"/v2/app/a/blobs/{layer}") == asked:
        assert time.monotonic() < deadline, "the pruned link is still trusted"
        assert http.request("GET", blob).status == 200  # both workers: keep asking
        time.sleep(0.3)


def test_warm_through_a_cache_and_directly_then_serve_offline(
    upstream: UpstreamRegistry, make_cache: Callable[..., CacheServer], tmp_path: Path
) -> None:
    multi = build_index("warm-multi")
    single = build_image("warm-single")
    push(upstream.url, "app/multi", "1", multi)
    push(upstream.url, "app/single", "1", single)
    args = ["--upstream", f"reg.test={upstream.url}"]
    live = make_cache(*args)

    result = cli(
        "warm", "--cache", live.url, "reg.test/app/multi:1", "--all-platforms", "--json",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)["images"]
    assert summary[0]["ok"] and summary[0]["platforms"] == ["linux/amd64", "linux/arm64/v8"]
    for blob in multi.blobs:
        assert upstream.blob_gets(blob.digest) == 1

    offline = make_cache(*args, start=False)
    images = tmp_path / "images.txt"
    images.write_text("# seed before going offline\nreg.test/app/single:1\n\nreg.test/app/nope:1\n")
    result = cli(
        "warm", "-f", str(images), "--data-dir", str(offline.data_dir), "--json",
        *safe_upstream_args(args), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip() == "registry-cache: 1 of 2 image(s) failed to warm"
    by_name = {i["image"]: i for i in json.loads(result.stdout)["images"]}
    assert by_name["reg.test/app/single:1"]["ok"]
    assert "MANIFEST_UNKNOWN" in by_name["reg.test/app/nope:1"]["error"]

    # Directly into the live cache's data directory, while it serves.
    result = cli(
        "warm", "reg.test/app/single:1", "--data-dir", str(live.data_dir),
        *safe_upstream_args(args), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "1 of 1 image(s) warmed" in result.stdout

    upstream.stop()
    offline.start()
    for platform in ("linux/amd64", "linux/arm64"):
        assert pulled(live, "reg.test/app/multi:1", platform).digest == multi.digest
    assert pulled(live, "reg.test/app/single:1").manifest_digest == single.digest
    assert pulled(offline, "reg.test/app/single:1").manifest_digest == single.digest
    assert complete(offline, "app/single:1")
