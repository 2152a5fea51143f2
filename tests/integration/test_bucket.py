"""The shared tier on one machine: a single replica, the SQLite index, a real S3 engine.

Real engines throughout: docker-registry as the upstream, SeaweedFS and Ceph RGW
as the bucket (the test's own, on 127.0.0.1), the cache as a subprocess; the
bucket is checked with the tests' own S3 client (boto3), never the product's.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
import urllib3

from tests.harness.bucket import BucketView, aws_env, storage_args
from tests.harness.cache import CacheServer, cli_env, run_cli
from tests.harness.clients import pulled_blobs, skopeo_copy
from tests.harness.download import HTTP, MIB, fetch, fetch_status
from tests.harness.images import build_image, push
from tests.harness.metrics import scrape
from tests.harness.netns import Hosts
from tests.harness.registry import UpstreamRegistry
from tests.harness.s3engine import S3Engine
from tests.harness.tcpproxy import TcpProxy
from tests.harness.wait import eventually, wait_until


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

    # Another cache, empty data directory and index, same bucket: the tag costs upstream a
    # HEAD only; the manifest and the layers come from the bucket.
    upstream.clear_request_log()
    second = bucket_cache(make_cache, upstream, s3_engine)
    manifest = HTTP.request("GET", f"{second.url}/v2/library/tier/manifests/1")
    assert manifest.status == 200 and manifest.headers["Docker-Content-Digest"] == pushed.digest
    assert manifest.data == image.manifest.read()
    assert upstream.count("GET", "/manifests/") == 0 and upstream.count("HEAD", "/manifests/") == 1
    # Its references are recorded as those of a manifest from upstream are (cache ls/du/gc).
    index = f"file:{second.data_dir / 'index.sqlite3'}?mode=ro"
    with closing(sqlite3.connect(index, uri=True)) as db:
        known = db.execute("SELECT refs_known FROM objects WHERE digest = ?", (pushed.digest,))
        assert known.fetchone() == (1,)
        refs = db.execute("SELECT digest FROM refs WHERE manifest = ?", (pushed.digest,))
        assert {r[0] for r in refs} == {pushed.config_digest, *pushed.layer_digests}
    for layer, built in zip(pushed.layer_digests, image.layers, strict=True):
        assert fetch(f"{second.url}/v2/library/tier/blobs/{layer}") == (200, layer, built.size)
        assert second.wait_for_blob(layer, 5).exists()  # copied into its local tier
    assert upstream.blob_gets() == 0
    assert upstream.count("HEAD", "/blobs/") == 0  # the manifest linked its layers here
    assert scrape(second.url).value("registry_cache_fill_sources_total", source="bucket") == 2
    assert "Traceback" not in first.log_text() + second.log_text()


def test_kill9_during_an_upload_leaves_no_object_and_the_next_start_cleans_up(
    s3_engine: S3Engine,
    upstream: UpstreamRegistry,
    make_cache: Callable[..., CacheServer],
    tmp_path: Path,
) -> None:
    image = build_image("killup", layers=1, layer_size=24 * MIB, workdir=tmp_path)
    layer = push(upstream.url, "library/killup", "1", image).layer_digests[0]
    view = BucketView(s3_engine)
    with TcpProxy(s3_engine.port) as slow:
        slow.upload_rate = 3 * MIB  # the upload takes ~8 s: time to kill it mid-way
        cache = make_cache(
            "--upstream",
            f"docker.io={upstream.url}",
            *storage_args(s3_engine, endpoint=slow.url),
            env=aws_env(s3_engine),
        )
        # The client's download does not wait for the upload.
        assert fetch(f"{cache.url}/v2/library/killup/blobs/{layer}")[:2] == (200, layer)
        assert eventually(lambda: slow.sent_up > 10 * MIB)  # the second part is on its way
        assert len(view.uploads()) == 1
        cache.kill9()
        assert view.key(layer) not in view.listing()  # nothing under the digest
        assert len(view.uploads()) == 1  # only parts, waiting to be aborted
        assert list((cache.data_dir / "uploads").iterdir())  # the note that says which

        slow.upload_rate = None
        cache.start()
        # At start the note's upload is aborted at once, and the upload starts over.
        assert eventually(lambda: view.holds(layer)), cache.log_text()
        assert view.uploads() == []
        assert not list((cache.data_dir / "uploads").iterdir())
        assert fetch(f"{cache.url}/v2/library/killup/blobs/{layer}")[:2] == (200, layer)
    assert upstream.blob_gets(layer) == 1
    assert "aborted 1 abandoned upload(s)" in cache.log_text()


def test_bucket_down_hits_flow_misses_pass_through_unstored_and_it_recovers(
    s3_engine: S3Engine,
    upstream: UpstreamRegistry,
    make_cache: Callable[..., CacheServer],
    tmp_path: Path,
) -> None:
    layers = {}
    for name in ("a", "b", "c"):
        image = build_image(f"down-{name}", layers=1, layer_size=2 * MIB, workdir=tmp_path)
        layers[name] = push(upstream.url, f"library/{name}", "1", image).layer_digests[0]
    view = BucketView(s3_engine)
    cache = bucket_cache(make_cache, upstream, s3_engine)
    assert HTTP.request("GET", f"{cache.url}/v2/library/a/manifests/1").status == 200
    assert fetch(f"{cache.url}/v2/library/a/blobs/{layers['a']}")[:2] == (200, layers["a"])
    assert view.wait_holds(layers["a"])

    s3_engine.stop()
    started = time.monotonic()
    # Hits: from the local tier, untouched by the outage.
    assert HTTP.request("GET", f"{cache.url}/v2/library/a/manifests/1").status == 200
    assert fetch(f"{cache.url}/v2/library/a/blobs/{layers['a']}")[:2] == (200, layers["a"])
    assert time.monotonic() - started < 3.0
    # A miss goes to upstream, verified, and is not stored in the bucket.
    started = time.monotonic()
    assert HTTP.request("GET", f"{cache.url}/v2/library/b/manifests/1").status == 200
    assert fetch(f"{cache.url}/v2/library/b/blobs/{layers['b']}")[:2] == (200, layers["b"])
    assert time.monotonic() - started < 10.0
    ready = HTTP.request("GET", f"{cache.url}/readyz")
    body = json.loads(ready.data)
    assert ready.status == 200 and body["status"] == "degraded", body
    assert body["checks"]["bucket"] != "ok" and body["checks"]["data_dir"] == "ok"
    assert s3_engine.secret_key not in json.dumps(body)
    counted = scrape(cache.url)
    assert counted.value("registry_cache_bucket_bypasses_total", kind="read") >= 1
    assert counted.value("registry_cache_bucket_bypasses_total", kind="upload") >= 1

    s3_engine.start()
    assert eventually(
        lambda: json.loads(HTTP.request("GET", f"{cache.url}/readyz").data)["status"] == "ready",
        30,
    )
    assert fetch(f"{cache.url}/v2/library/c/blobs/{layers['c']}")[:2] == (200, layers["c"])
    assert view.wait_holds(layers["c"])
    assert view.key(layers["b"]) not in view.listing()
    log = cache.log_text()
    assert log.count("unavailable, serving without it") == 1, log  # once per outage
    assert "reachable again" in log and "Traceback" not in log
    assert s3_engine.secret_key not in log


def test_content_evicted_from_the_local_tier_comes_back_from_the_bucket(
    s3_engine: S3Engine,
    upstream: UpstreamRegistry,
    make_cache: Callable[..., CacheServer],
    tmp_path: Path,
) -> None:
    """--max-size evicts the local copy; the bucket keeps manifest, config and layer."""
    old = build_image("old", layers=1, layer_size=12 * MIB, workdir=tmp_path)
    new = build_image("new", layers=1, layer_size=12 * MIB, workdir=tmp_path)
    pushed_old = push(upstream.url, "library/old", "1", old)
    pushed_new = push(upstream.url, "library/new", "1", new)
    view = BucketView(s3_engine)
    cache = bucket_cache(make_cache, upstream, s3_engine, "--max-size", "20MiB")
    for pushed in (pushed_old, pushed_new):
        name = "old" if pushed is pushed_old else "new"
        assert HTTP.request("GET", f"{cache.url}/v2/library/{name}/manifests/1").status == 200
        for digest in (pushed.config_digest, *pushed.layer_digests):
            assert fetch(f"{cache.url}/v2/library/{name}/blobs/{digest}")[:2] == (200, digest)
            assert view.wait_holds(digest)
        assert view.wait_holds(pushed.digest)
    local_old = cache.blob_path(pushed_old.layer_digests[0])
    assert eventually(lambda: not local_old.exists())  # evicted here
    upstream.clear_request_log()
    manifest = HTTP.request("GET", f"{cache.url}/v2/library/old/manifests/1")
    assert manifest.status == 200 and manifest.headers["Docker-Content-Digest"] == pushed_old.digest
    layer = pushed_old.layer_digests[0]
    assert fetch(f"{cache.url}/v2/library/old/blobs/{layer}") == (200, layer, old.layers[0].size)
    assert upstream.request_log() == []


def test_redirect_hits_send_clients_to_the_bucket_and_skopeo_follows(
    seaweedfs: S3Engine,
    upstream: UpstreamRegistry,
    make_cache: Callable[..., CacheServer],
    hosts_file: Callable[[Hosts], Path],
    tmp_path: Path,
) -> None:
    image = build_image("redir", layers=2, layer_size=3 * MIB, workdir=tmp_path)
    pushed = push(upstream.url, "library/redir", "1", image)
    view = BucketView(seaweedfs)
    cache = bucket_cache(make_cache, upstream, seaweedfs, "--redirect-hits")
    layer = pushed.layer_digests[0]
    url = f"{cache.url}/v2/library/redir/blobs/{layer}"
    # Not in the bucket yet: served here (a fill), then uploaded.
    assert fetch(url)[:2] == (200, layer)
    assert view.wait_holds(layer)
    # Once the index says the bucket holds it (a moment after the upload completed):
    assert eventually(lambda: fetch_status(url) == 307)
    answer = HTTP.request("GET", url, redirect=False)
    assert answer.status == 307 and answer.data == b""
    assert answer.headers["Content-Length"] == "0"
    assert answer.headers["Docker-Content-Digest"] == layer
    location = answer.headers["Location"]
    assert location.startswith(seaweedfs.endpoint_url + "/")
    assert seaweedfs.secret_key not in location
    assert fetch(location)[:2] == (200, layer)
    ranged = HTTP.request("GET", location, headers={"Range": "bytes=10-19"})
    assert ranged.status == 206 and len(ranged.data) == 10
    head = HTTP.request("HEAD", url, redirect=False)  # sizes are answered here
    assert head.status == 200 and int(head.headers["Content-Length"]) == image.layers[0].size
    # A real client follows the redirects (after its first pull filled everything).
    out = tmp_path / "first"
    skopeo_copy(f"docker://{cache.host_port}/library/redir:1", out, hosts=hosts_file([]))
    for digest in (pushed.config_digest, *pushed.layer_digests):
        assert view.wait_holds(digest)
    again = tmp_path / "again"
    skopeo_copy(f"docker://{cache.host_port}/library/redir:1", again, hosts=hosts_file([]))
    assert pulled_blobs(again) == {pushed.config_digest, *pushed.layer_digests}
    assert "cache=REDIRECT" in cache.log_text()
    assert location not in cache.log_text()  # a presigned URL is a credential: never logged
    # The bucket down: within a few seconds nobody is sent there; the local tier serves.
    seaweedfs.stop()
    assert eventually(lambda: fetch(url)[:2] == (200, layer), 10)


def test_a_corrupt_object_in_the_bucket_is_never_served_whole_and_is_replaced(
    seaweedfs: S3Engine,
    upstream: UpstreamRegistry,
    make_cache: Callable[..., CacheServer],
    tmp_path: Path,
) -> None:
    image = build_image("rot", layers=1, layer_size=4 * MIB, workdir=tmp_path)
    layer = push(upstream.url, "library/rot", "1", image).layer_digests[0]
    size = image.layers[0].size
    view = BucketView(seaweedfs)
    view.put(layer, b"\0" * size)  # bit rot, or someone else's write
    cache = bucket_cache(make_cache, upstream, seaweedfs)
    with pytest.raises(urllib3.exceptions.ProtocolError):  # one byte short: never complete
        fetch(f"{cache.url}/v2/library/rot/blobs/{layer}")
    assert eventually(lambda: view.key(layer) not in view.listing())  # removed from the bucket
    assert fetch(f"{cache.url}/v2/library/rot/blobs/{layer}") == (200, layer, size)
    assert upstream.blob_gets(layer) == 1
    assert view.wait_holds(layer)  # the right bytes, uploaded
    assert "does not match its digest: removed" in cache.log_text()


def test_shared_max_size_keeps_the_bucket_under_its_cap_least_recently_used_first(
    seaweedfs: S3Engine,
    upstream: UpstreamRegistry,
    make_cache: Callable[..., CacheServer],
    tmp_path: Path,
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("evict_grace: 0s\n")
    view = BucketView(seaweedfs)
    cache = bucket_cache(
        make_cache, upstream, seaweedfs, "--config", str(config), "--shared-max-size", "30MiB"
    )
    layers = []
    for i in range(5):
        image = build_image(f"cap{i}", layers=1, layer_size=6 * MIB, workdir=tmp_path)
        layer = push(upstream.url, f"library/cap{i}", "1", image).layer_digests[0]
        assert fetch(f"{cache.url}/v2/library/cap{i}/blobs/{layer}")[:2] == (200, layer)
        assert view.wait_holds(layer), i
        layers.append(layer)
        if i == 3:  # the first one pulled again: now the least recently used is the second
            assert fetch(f"{cache.url}/v2/library/cap0/blobs/{layers[0]}")[:2] == (200, layers[0])
    # 5 x ~6 MiB is over 95% of 30 MiB: evicted down to 90%, least recently used first.
    assert eventually(lambda: view.total() <= 30 * MIB * 0.9), view.total()
    assert view.digests() == {layers[0], *layers[2:]}
    # Counted once the deletions are in the index too, a moment after the bucket shows them.
    evictions = "registry_cache_bucket_evictions_total"
    wait_until(lambda: scrape(cache.url).value(evictions) >= 1)
    assert scrape(cache.url).value(evictions) == 1
    # Still served (from the local tier) and not fetched again.
    assert fetch(f"{cache.url}/v2/library/cap1/blobs/{layers[1]}")[:2] == (200, layers[1])
    assert upstream.blob_gets(layers[1]) == 1
    # The dashboard's API describes the shared tier: what it holds against its cap.
    shared = json.loads(HTTP.request("GET", f"{cache.url}/api/v1/stats").data)["shared_tier"]
    assert shared["url"].startswith("s3://") and shared["cap"] == 30 * MIB
    assert shared["reachable"] is True and shared["objects"] == len(view.digests())
    assert shared["bytes"] == view.total()


def test_cache_commands_cover_the_bucket(
    seaweedfs: S3Engine,
    upstream: UpstreamRegistry,
    make_cache: Callable[..., CacheServer],
    tmp_path: Path,
) -> None:
    image = build_image("cmds", layers=2, layer_size=2 * MIB, workdir=tmp_path)
    pushed = push(upstream.url, "library/cmds", "1", image)
    view = BucketView(seaweedfs)
    cache = bucket_cache(make_cache, upstream, seaweedfs)
    assert HTTP.request("GET", f"{cache.url}/v2/library/cmds/manifests/1").status == 200
    everything = [pushed.digest, pushed.config_digest, *pushed.layer_digests]
    for digest in everything[1:]:
        assert fetch(f"{cache.url}/v2/library/cmds/blobs/{digest}")[:2] == (200, digest)
    for digest in everything:
        assert view.wait_holds(digest)
    env = cli_env()
    env.update(aws_env(seaweedfs))
    env.update(
        REGISTRY_CACHE_DATA_DIR=str(cache.data_dir),
        REGISTRY_CACHE_STORAGE=f"s3://{seaweedfs.bucket}/cache",
        REGISTRY_CACHE_S3_ENDPOINT=seaweedfs.endpoint_url,
    )

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli("cache", *args, cwd=cache.cwd, timeout=120, env=env)

    # Each upload's index row follows its object by a moment (safe while serving).
    assert eventually(lambda: json.loads(cli("du", "--json").stdout)["bucket"]["objects"] == 4)
    cache.stop()
    listed = cli("ls", "--json")
    assert listed.returncode == 0, listed.stderr
    (entry,) = json.loads(listed.stdout)["images"]
    assert entry["bucket"]["complete"] and entry["bucket"]["objects"] == 4

    used = json.loads(cli("du", "--json").stdout)["bucket"]
    assert used["objects"] == 4 and used["stored"]["objects"] == 4
    assert used["bytes"] == sum(
        view.client.head_object(Bucket=seaweedfs.bucket, Key=view.key(d))["ContentLength"]
        for d in everything
    )

    # verify: a corrupt object in the bucket is found, set aside and forgotten (exit 1).
    layer = pushed.layer_digests[0]
    view.put(layer, b"rotten")
    checked = cli("verify", "--json")
    assert checked.returncode == 1, checked.stderr
    doc = json.loads(checked.stdout)
    assert doc["bucket"]["corrupt"] == [layer] and doc["bucket"]["checked"] == 4
    assert view.key(layer) not in view.listing()
    assert f"cache/quarantine/sha256-{layer.split(':')[1]}" in view.listing()
    again = cli("verify", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["bucket"]["checked"] == 3

    # gc: an abandoned multipart upload and a stray object nothing refers to go.
    stray = b"nobody pulled this"
    stray_digest = "sha256:" + hashlib.sha256(stray).hexdigest()
    view.put(stray_digest, stray)
    view.client.create_multipart_upload(Bucket=seaweedfs.bucket, Key=view.key(stray_digest))
    collected = cli("gc", "--grace", "0s", "--json")
    assert collected.returncode == 0, collected.stderr
    swept = json.loads(collected.stdout)["bucket"]
    assert swept["orphans"] == [stray_digest] and swept["uploads"] == 1
    assert view.uploads() == [] and view.key(stray_digest) not in view.listing()

    # prune: what was not pulled since now goes from the bucket too.
    pruned = cli("prune", "--older-than", "0s", "--grace", "0s", "--json")
    assert pruned.returncode == 0, pruned.stderr
    assert set(json.loads(pruned.stdout)["bucket"]["objects"]) == set(everything) - {layer}
    assert view.digests() == set()
    assert "Traceback" not in listed.stderr + checked.stderr + collected.stderr + pruned.stderr
