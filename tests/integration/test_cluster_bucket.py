"""Cluster mode with the shared tier: replicas, PostgreSQL, a load balancer and a bucket.

Real engines throughout: docker-registry upstream, PostgreSQL 15 as the index,
SeaweedFS and Ceph RGW as the bucket, nginx in front, skopeo as the client, the
cache's own processes as replicas on 127.0.0.1. The bucket is checked with the
tests' own S3 client (boto3).
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.harness.bucket import BucketView, storage_env
from tests.harness.cache import CacheServer
from tests.harness.clients import pulled_blobs, skopeo_copy
from tests.harness.cluster import Cluster
from tests.harness.download import HTTP, MIB, fetch
from tests.harness.images import build_image, push
from tests.harness.loadbalancer import LoadBalancer
from tests.harness.metrics import scrape
from tests.harness.netns import Hosts
from tests.harness.registry import UpstreamRegistry
from tests.harness.s3engine import S3Engine
from tests.harness.tcpproxy import TcpProxy
from tests.harness.wait import eventually, wait_until


def ready(replica: CacheServer) -> bool:
    body = json.loads(HTTP.request("GET", f"{replica.url}/readyz").data)
    return bool(body["status"] == "ready")


def test_content_pulled_through_the_cluster_serves_a_fresh_replica_with_no_upstream_request(  # noqa: PLR0917
    s3_engine: S3Engine,
    upstream: UpstreamRegistry,
    make_cache: Callable[..., CacheServer],
    pg_database: Any,
    hosts_file: Callable[[Hosts], Path],
    tmp_path: Path,
) -> None:
    image = build_image("fleet", layers=3, layer_size=6 * MIB, workdir=tmp_path)
    pushed = push(upstream.url, "library/fleet", "1.0", image)
    everything = {pushed.digest, pushed.config_digest, *pushed.layer_digests}
    view = BucketView(s3_engine)
    cluster = Cluster(
        make_cache, tmp_path / "cluster", upstream.url, pg_database.url, env=storage_env(s3_engine)
    )
    with LoadBalancer(tmp_path / "lb", [r.host_port for r in cluster.replicas]) as lb:
        out = tmp_path / "through-lb"
        skopeo_copy(f"docker://{lb.host_port}/library/fleet:1.0", out, hosts=hosts_file([]))
        assert pulled_blobs(out) == everything - {pushed.digest}
    for digest in everything:
        assert view.wait_holds(digest), digest
    for digest in everything - {pushed.digest}:
        assert upstream.blob_gets(digest) == 1  # once for the whole cluster
    for replica in cluster.replicas:  # every replica goes away, with its local tier
        replica.stop()

    upstream.clear_request_log()
    fresh = cluster.add()
    assert not any(fresh.blob_path(d).exists() for d in everything)
    again = tmp_path / "fresh"
    skopeo_copy(f"docker://{fresh.host_port}/library/fleet:1.0", again, hosts=hosts_file([]))
    assert pulled_blobs(again) == everything - {pushed.digest}
    assert upstream.request_log() == []  # tag, manifest and blobs: index and bucket
    metrics = scrape(fresh.url)
    assert metrics.value("registry_cache_fill_sources_total", source="bucket") == 4
    assert metrics.value("registry_cache_fill_sources_total", source="upstream") == 0
    assert "Traceback" not in cluster.logs()


def test_kill9_of_a_replica_during_its_upload_leaves_no_object_and_the_next_request_succeeds(
    seaweedfs: S3Engine,
    upstream: UpstreamRegistry,
    make_cache: Callable[..., CacheServer],
    pg_database: Any,
    tmp_path: Path,
) -> None:
    image = build_image("killfleet", layers=1, layer_size=24 * MIB, workdir=tmp_path)
    layer = push(upstream.url, "library/killfleet", "1", image).layer_digests[0]
    view = BucketView(seaweedfs)
    with TcpProxy(seaweedfs.port) as slow:
        slow.upload_rate = 3 * MIB  # ~8 s per upload: time to kill it mid-way
        cluster = Cluster(
            make_cache,
            tmp_path / "cluster",
            upstream.url,
            pg_database.url,
            replicas=2,
            env=storage_env(seaweedfs, endpoint=slow.url),
        )
        a, b = cluster[0], cluster[1]
        assert fetch(f"{a.url}/v2/library/killfleet/blobs/{layer}")[:2] == (200, layer)
        assert eventually(lambda: slow.sent_up > 10 * MIB)
        a.kill9()
        assert view.key(layer) not in view.listing()  # nothing under the digest
        # The next request, on another replica, succeeds (the dead one's copy is out of
        # reach: from upstream), and that replica uploads it.
        slow.upload_rate = None
        assert fetch(f"{b.url}/v2/library/killfleet/blobs/{layer}")[:2] == (200, layer)
        assert view.wait_holds(layer)
        a.start()  # its abandoned upload is aborted at start
        assert eventually(lambda: view.uploads() == [])
    assert upstream.blob_gets(layer) == 2
    assert "Traceback" not in cluster.logs()


def test_the_bucket_stopped_hits_flow_misses_pass_through_and_the_cluster_recovers(
    s3_engine: S3Engine,
    upstream: UpstreamRegistry,
    make_cache: Callable[..., CacheServer],
    pg_database: Any,
    tmp_path: Path,
) -> None:
    layers = {}
    for name in ("a", "b", "c"):
        image = build_image(f"outage-{name}", layers=1, layer_size=2 * MIB, workdir=tmp_path)
        layers[name] = push(upstream.url, f"library/{name}", "1", image).layer_digests[0]
    view = BucketView(s3_engine)
    cluster = Cluster(
        make_cache,
        tmp_path / "cluster",
        upstream.url,
        pg_database.url,
        replicas=2,
        env=storage_env(s3_engine),
    )
    a, b = cluster[0], cluster[1]
    assert fetch(f"{a.url}/v2/library/a/blobs/{layers['a']}")[:2] == (200, layers["a"])
    assert view.wait_holds(layers["a"])

    s3_engine.stop()
    started = time.monotonic()
    assert fetch(f"{a.url}/v2/library/a/blobs/{layers['a']}")[:2] == (200, layers["a"])
    assert fetch(f"{b.url}/v2/library/a/blobs/{layers['a']}")[:2] == (200, layers["a"])  # a peer
    assert fetch(f"{b.url}/v2/library/b/blobs/{layers['b']}")[:2] == (200, layers["b"])  # upstream
    assert time.monotonic() - started < 15.0
    for replica in (a, b):
        body = json.loads(HTTP.request("GET", f"{replica.url}/readyz").data)
        assert body["status"] == "degraded" and body["checks"]["bucket"] != "ok", body
    # Layer b's upload is declined as its fill commits, a moment after the client's last byte.
    bypasses = "registry_cache_bucket_bypasses_total"
    wait_until(lambda: scrape(b.url).value(bypasses, kind="upload") >= 1)

    s3_engine.start()
    for replica in (a, b):
        assert eventually(functools.partial(ready, replica), 30)
    assert fetch(f"{a.url}/v2/library/c/blobs/{layers['c']}")[:2] == (200, layers["c"])
    assert view.wait_holds(layers["c"])
    assert view.key(layers["b"]) not in view.listing()  # the outage's miss was not stored
    assert upstream.blob_gets(layers["a"]) == 1
    logs = cluster.logs()
    assert "Traceback" not in logs and logs.count("unavailable, serving without it") <= 2


def test_shared_max_size_holds_for_the_cluster(
    seaweedfs: S3Engine,
    upstream: UpstreamRegistry,
    make_cache: Callable[..., CacheServer],
    pg_database: Any,
    tmp_path: Path,
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("evict_grace: 0s\n")
    view = BucketView(seaweedfs)
    cluster = Cluster(
        make_cache,
        tmp_path / "cluster",
        upstream.url,
        pg_database.url,
        replicas=3,
        extra=["--config", str(config), "--shared-max-size", "20MiB"],
        env=storage_env(seaweedfs),
    )
    layers = []
    for i in range(6):  # 6 x ~4 MiB through every replica in turn
        image = build_image(f"fleetcap{i}", layers=1, layer_size=4 * MIB, workdir=tmp_path)
        layer = push(upstream.url, f"library/cap{i}", "1", image).layer_digests[0]
        url = f"{cluster[i % 3].url}/v2/library/cap{i}/blobs/{layer}"
        assert fetch(url)[:2] == (200, layer)
        assert view.wait_holds(layer)
        layers.append(layer)
    assert eventually(lambda: view.total() <= 20 * MIB * 0.9), view.total()
    kept = view.digests()
    assert layers[-1] in kept and layers[0] not in kept  # least recently used went first

    def evicted() -> float:
        return sum(
            scrape(r.url).value("registry_cache_bucket_evictions_total") for r in cluster.replicas
        )

    # Counted once the deletions are in the index too, a moment after the bucket shows them.
    wait_until(lambda: evicted() >= len(layers) - len(kept))
    assert evicted() == len(layers) - len(kept)
