"""Cluster mode: replicas sharing a PostgreSQL index fetch each blob from upstream once.

Real engines throughout: docker-registry as the upstream, PostgreSQL 15 as the
index, the cache's own processes as replicas on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from registry_cache.cluster.peers import BLOBS, HEADER, sign
from tests.harness.cache import CacheServer
from tests.harness.clients import pulled_blobs, skopeo_copy
from tests.harness.cluster import Cluster
from tests.harness.containerd import Containerd
from tests.harness.download import HTTP, fetch
from tests.harness.images import build_image, push
from tests.harness.loadbalancer import LoadBalancer
from tests.harness.netns import Hosts
from tests.harness.registry import UpstreamRegistry
from tests.harness.wait import wait_until


@pytest.fixture
def cluster(
    upstream: UpstreamRegistry,
    make_cache: Callable[..., CacheServer],
    pg_database: Any,
    tmp_path: Path,
) -> Cluster:
    return Cluster(make_cache, tmp_path / "cluster", upstream.url, pg_database.url)


def test_a_blob_filled_on_one_replica_is_copied_to_another_not_fetched_again(
    cluster: Cluster, upstream: UpstreamRegistry, tmp_path: Path
) -> None:
    image = build_image("copy", layers=1, layer_size=8 << 20, workdir=tmp_path)
    layer = push(upstream.url, "library/copy", "1", image).layer_digests[0]
    upstream.clear_request_log()
    first = fetch(f"{cluster[0].url}/v2/library/copy/blobs/{layer}")
    assert first == (200, layer, image.layers[0].size)
    assert cluster[0].wait_for_blob(layer, 5).exists()
    for replica in cluster.replicas[1:]:
        assert fetch(f"{replica.url}/v2/library/copy/blobs/{layer}")[:2] == (200, layer)
        assert replica.wait_for_blob(layer, 5).exists()
    assert upstream.blob_gets(layer) == 1


def test_concurrent_cold_gets_over_three_replicas_make_one_upstream_get(
    cluster: Cluster, upstream: UpstreamRegistry, tmp_path: Path
) -> None:
    image = build_image("herd", layers=1, layer_size=48 << 20, workdir=tmp_path)
    layer = push(upstream.url, "library/herd", "1", image).layer_digests[0]
    upstream.clear_request_log()
    urls = [f"{cluster[i % 3].url}/v2/library/herd/blobs/{layer}" for i in range(12)]
    with ThreadPoolExecutor(len(urls)) as pool:
        results = list(pool.map(fetch, urls))
    assert {r[:2] for r in results} == {(200, layer)}
    assert {r[2] for r in results} == {image.layers[0].size}
    assert upstream.blob_gets(layer) == 1


def test_a_manifest_fetched_by_one_replica_is_served_by_the_others_without_upstream(
    cluster: Cluster, upstream: UpstreamRegistry, tmp_path: Path
) -> None:
    image = build_image("tagged", layers=1, layer_size=1 << 16, workdir=tmp_path)
    pushed = push(upstream.url, "library/tagged", "1", image)
    upstream.clear_request_log()
    for replica in cluster.replicas:
        response = HTTP.request("GET", f"{replica.url}/v2/library/tagged/manifests/1")
        assert response.status == 200
        assert response.headers["Docker-Content-Digest"] == pushed.digest
    assert upstream.count("GET", "/manifests/") == 1
    assert upstream.count("HEAD", "/manifests/") == 0


def test_the_internal_endpoint_refuses_requests_without_the_secret(
    cluster: Cluster, upstream: UpstreamRegistry, tmp_path: Path
) -> None:
    image = build_image("secret", layers=1, layer_size=1 << 16, workdir=tmp_path)
    layer = push(upstream.url, "library/secret", "1", image).layer_digests[0]
    assert fetch(f"{cluster[0].url}/v2/library/secret/blobs/{layer}")[0] == 200
    path = BLOBS + layer
    url = cluster[0].url + path
    assert HTTP.request("GET", url).status == 401
    assert HTTP.request("GET", url, headers={HEADER: sign("wrong" * 8, "GET", path)}).status == 401
    assert HTTP.request("GET", url, headers={HEADER: "1.deadbeef"}).status == 401
    other = BLOBS + "sha256:" + "0" * 64
    assert (
        HTTP.request("GET", url, headers={HEADER: sign(cluster.secret, "GET", other)}).status == 401
    )
    good = {HEADER: sign(cluster.secret, "GET", path)}
    assert fetch(url, good)[:2] == (200, layer)
    assert cluster.secret not in cluster.logs()


def test_kill9_of_the_filling_replica_mid_fill_another_takes_over_and_nothing_corrupt(
    upstream: UpstreamRegistry,
    proxy: Any,
    make_cache: Callable[..., CacheServer],
    pg_database: Any,
    tmp_path: Path,
) -> None:
    from tests.harness.faults import Rule

    image = build_image("kill", layers=1, layer_size=24 << 20, workdir=tmp_path)
    layer = push(upstream.url, "library/kill", "1", image).layer_digests[0]
    proxy.rules.append(Rule(path=f"/blobs/{layer}", method="GET", rate=6 << 20))
    cluster = Cluster(make_cache, tmp_path / "cluster", proxy.url, pg_database.url)
    a, b = cluster[0], cluster[1]
    size = image.layers[0].size
    # The fill starts on A; B follows it (a peer stream) and serves its client as it goes.
    on_a = HTTP.request("GET", f"{a.url}/v2/library/kill/blobs/{layer}", preload_content=False)
    assert on_a.status == 200
    on_a.read(1 << 20)
    on_b = HTTP.request("GET", f"{b.url}/v2/library/kill/blobs/{layer}", preload_content=False)
    assert on_b.status == 200
    got = bytearray(on_b.read(2 << 20))
    a.kill9()
    got += on_b.read()  # B takes the lease over once A's expires, resumes with Range
    assert len(got) == size and "sha256:" + hashlib.sha256(got).hexdigest() == layer
    # A client that was on A retries elsewhere and succeeds.
    assert fetch(f"{cluster[2].url}/v2/library/kill/blobs/{layer}")[:2] == (200, layer)
    ranges = [seen.range for seen in proxy.log if layer in seen.path and seen.method == "GET"]
    assert ranges[0] is None and any(r and r.startswith("bytes=") for r in ranges[1:]), ranges
    a.start()
    for replica in cluster.replicas:
        verified = cluster.cli(replica, "cache", "verify", "--json")
        assert verified.returncode == 0, verified.stderr
        assert json.loads(verified.stdout)["corrupt"] == []


def test_a_tag_is_revalidated_once_for_the_whole_cluster(
    upstream: UpstreamRegistry,
    make_cache: Callable[..., CacheServer],
    pg_database: Any,
    tmp_path: Path,
) -> None:
    image = build_image("ttl", layers=1, layer_size=1 << 16, workdir=tmp_path)
    push(upstream.url, "library/ttl", "1", image)
    cluster = Cluster(
        make_cache, tmp_path / "cluster", upstream.url, pg_database.url, extra=["--tag-ttl", "2s"]
    )
    urls = [f"{replica.url}/v2/library/ttl/manifests/1" for replica in cluster.replicas]
    assert HTTP.request("GET", urls[0]).status == 200
    fetched_at = time.monotonic()
    assert all(HTTP.request("GET", url).status == 200 for url in urls)
    upstream.clear_request_log()
    time.sleep(max(0.0, fetched_at + 2.2 - time.monotonic()))  # the TTL has passed
    with ThreadPoolExecutor(len(urls) * 2) as pool:
        statuses = list(pool.map(lambda url: HTTP.request("GET", url).status, urls * 2))
    assert statuses == [200] * len(statuses)
    assert upstream.count("HEAD", "/manifests/1") == 1
    assert upstream.count("GET", "/manifests/") == 0
    # The revalidated answer is among a replica's last: its line follows the client's
    # last byte by a loop turn.
    wait_until(lambda: "cache=REVALIDATED" in cluster.logs())


def test_three_replicas_behind_nginx_skopeo_ctr_and_a_herd_of_sixteen(  # noqa: PLR0917
    upstream: UpstreamRegistry,
    proxy: Any,
    make_cache: Callable[..., CacheServer],
    pg_database: Any,
    hosts_file: Callable[[Hosts], Path],
    tmp_path: Path,
) -> None:
    from tests.harness.faults import Rule

    small = build_image("lb", layers=3, layer_size=1 << 20, workdir=tmp_path)
    push(upstream.url, "library/test", "1.0", small)
    big = build_image("herd256", layers=1, layer_size=256 << 20, workdir=tmp_path)
    layer = push(upstream.url, "library/big", "1", big).layer_digests[0]
    proxy.rules.append(Rule(path=f"/blobs/{layer}", method="GET", rate=96 << 20))
    cluster = Cluster(make_cache, tmp_path / "cluster", proxy.url, pg_database.url)
    with LoadBalancer(tmp_path / "lb", [r.host_port for r in cluster.replicas]) as lb:
        hosts = hosts_file([])
        # skopeo pulls through the load balancer (default upstream: docker.io).
        out = tmp_path / "skopeo"
        skopeo_copy(f"docker://{lb.host_port}/library/test:1.0", out, hosts=hosts)
        assert pulled_blobs(out) == {small.config.digest, *small.layer_digests}
        # ctr pulls (and unpacks) through it, with the hosts.toml a node would have.
        certs = tmp_path / "certs.d" / "docker.io"
        certs.mkdir(parents=True)
        certs.joinpath("hosts.toml").write_text(
            f'server = "{upstream.url}"\n\n'
            f'[host."{lb.url}"]\n  capabilities = ["pull", "resolve"]\n'
        )
        with Containerd(hosts) as containerd:
            containerd.pull("docker.io/library/test:1.0", hosts_dir=certs.parent)
            assert {small.config.digest, *small.layer_digests} <= containerd.content_digests()
        # Every layer crossed from upstream once, whichever replicas served the two clients.
        for digest in small.layer_digests:
            assert upstream.blob_gets(digest) == 1

        # 16 concurrent cold GETs of a 256 MiB blob: one upstream GET, 16 right bodies,
        # and every client's first bytes arrive before the fill ends.
        upstream.clear_request_log()
        url = f"{lb.url}/v2/library/big/blobs/{layer}"
        with ThreadPoolExecutor(16) as pool:
            timed = list(pool.map(lambda _: timed_fetch(url), range(16)))
        assert {t[0] for t in timed} == {(200, layer, big.layers[0].size)}
        first_bytes = max(t[1] for t in timed)
        fill_ended = min(t[2] for t in timed)  # the last byte waits for the digest
        assert first_bytes < fill_ended, (first_bytes, fill_ended)
        assert upstream.blob_gets(layer) == 1

        def served() -> list[CacheServer]:
            return [r for r in cluster.replicas if f"/blobs/{layer}" in r.log_text()]

        # The herd is each replica's last work: a line follows its client's last byte.
        wait_until(lambda: len(served()) >= 3)
        assert len(served()) == 3  # the balancer spread the herd over every replica
    assert "Traceback" not in cluster.logs()


def timed_fetch(url: str) -> tuple[tuple[int, str, int], float, float]:
    started = time.monotonic()
    response = HTTP.request("GET", url, preload_content=False)
    hasher, size, first = hashlib.sha256(), 0, 0.0
    for chunk in response.stream(1 << 20):
        if not size:
            first = time.monotonic() - started
        hasher.update(chunk)
        size += len(chunk)
    response.release_conn()
    return (
        (response.status, "sha256:" + hasher.hexdigest(), size),
        first,
        time.monotonic() - started,
    )


def test_head_of_a_blob_another_replica_holds_needs_no_upstream(
    cluster: Cluster, upstream: UpstreamRegistry, tmp_path: Path
) -> None:
    image = build_image("head", layers=1, layer_size=1 << 20, workdir=tmp_path)
    pushed = push(upstream.url, "library/head", "1", image)
    layer = pushed.layer_digests[0]
    assert HTTP.request("GET", f"{cluster[0].url}/v2/library/head/manifests/1").status == 200
    assert fetch(f"{cluster[0].url}/v2/library/head/blobs/{layer}")[0] == 200
    assert cluster.wait_indexed(layer)
    upstream.clear_request_log()
    response = HTTP.request("HEAD", f"{cluster[1].url}/v2/library/head/blobs/{layer}")
    assert response.status == 200
    assert int(response.headers["Content-Length"]) == image.layers[0].size
    assert upstream.request_log() == []


def test_postgresql_stopped_mid_run_hits_flow_misses_fill_and_it_recovers(
    upstream: UpstreamRegistry,
    make_cache: Callable[..., CacheServer],
    postgres: Any,
    tmp_path: Path,
) -> None:
    cached = build_image("pgdown-a", layers=1, layer_size=2 << 20, workdir=tmp_path)
    cold = build_image("pgdown-b", layers=1, layer_size=2 << 20, workdir=tmp_path)
    later = build_image("pgdown-c", layers=1, layer_size=2 << 20, workdir=tmp_path)
    layers = {}
    for name, image in (("a", cached), ("b", cold), ("c", later)):
        layers[name] = push(upstream.url, f"library/{name}", "1", image).layer_digests[0]
    cluster = Cluster(make_cache, tmp_path / "cluster", upstream.url, postgres.url, replicas=2)
    a, b = cluster[0], cluster[1]
    assert HTTP.request("GET", f"{a.url}/v2/library/a/manifests/1").status == 200
    assert fetch(f"{a.url}/v2/library/a/blobs/{layers['a']}")[:2] == (200, layers["a"])

    postgres.stop()
    started = time.monotonic()
    # Hits: the tag from memory (within its TTL), the blob from the local tier.
    assert HTTP.request("GET", f"{a.url}/v2/library/a/manifests/1").status == 200
    assert fetch(f"{a.url}/v2/library/a/blobs/{layers['a']}")[:2] == (200, layers["a"])
    assert time.monotonic() - started < 5.0
    # A miss still fills from upstream, unshared.
    assert HTTP.request("GET", f"{b.url}/v2/library/b/manifests/1").status == 200
    assert fetch(f"{b.url}/v2/library/b/blobs/{layers['b']}")[:2] == (200, layers["b"])
    ready = HTTP.request("GET", f"{a.url}/readyz")
    body = json.loads(ready.data)
    assert ready.status == 200 and body["status"] == "degraded", body
    assert body["checks"]["index"] != "ok" and body["checks"]["data_dir"] == "ok"

    postgres.start()
    # Every replica, not just A: each one skips the index for a second after its own
    # last failed query (a heartbeat's, a lease renewal's), and B's may come later.
    deadline = time.monotonic() + 15
    for replica in cluster.replicas:
        while time.monotonic() < deadline:
            body = json.loads(HTTP.request("GET", f"{replica.url}/readyz").data)
            if body["status"] == "ready":
                break
            time.sleep(0.2)
        assert body["status"] == "ready", (replica.url, body)
    # Shared again: a cold blob through A, then B, crosses from upstream once.
    upstream.clear_request_log()
    assert fetch(f"{a.url}/v2/library/c/blobs/{layers['c']}")[:2] == (200, layers["c"])
    assert cluster.wait_indexed(layers["c"])
    assert fetch(f"{b.url}/v2/library/c/blobs/{layers['c']}")[:2] == (200, layers["c"])
    assert upstream.blob_gets(layers["c"]) == 1, cluster.logs()  # the replicas say why
    logs = cluster.logs()
    assert "Traceback" not in logs and "index unavailable" in logs


def test_each_replica_evicts_its_own_tier_and_the_catalog_keeps_what_another_holds(
    upstream: UpstreamRegistry,
    make_cache: Callable[..., CacheServer],
    pg_database: Any,
    tmp_path: Path,
) -> None:
    layers = []
    for i in range(3):
        image = build_image(f"evict{i}", layers=1, layer_size=8 << 20, workdir=tmp_path)
        layers.append(push(upstream.url, f"library/evict{i}", "1", image).layer_digests[0])
    cluster = Cluster(
        make_cache,
        tmp_path / "cluster",
        upstream.url,
        pg_database.url,
        replicas=2,
        extra=["--max-size", "20MB"],
    )
    a, b = cluster[0], cluster[1]
    assert fetch(f"{a.url}/v2/library/evict0/blobs/{layers[0]}")[:2] == (200, layers[0])
    assert cluster.wait_indexed(layers[0])
    assert fetch(f"{b.url}/v2/library/evict0/blobs/{layers[0]}")[:2] == (200, layers[0])
    assert b.wait_for_blob(layers[0], 5).exists()
    for i in (1, 2):  # A goes over its cap: its least recently used blob leaves A only
        assert fetch(f"{a.url}/v2/library/evict{i}/blobs/{layers[i]}")[:2] == (200, layers[i])
    deadline = time.monotonic() + 10
    while a.blob_path(layers[0]).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not a.blob_path(layers[0]).exists() and b.blob_path(layers[0]).exists()
    du = cluster.cli(a, "cache", "du", "--json")
    assert du.returncode == 0, du.stderr
    assert json.loads(du.stdout)["total"]["bytes"] <= 20_000_000
    assert cluster.wait_indexed(layers[0], timeout=1)  # B still holds it: still catalogued
    upstream.clear_request_log()
    # Asked on A again, it comes from B, not from upstream.
    assert fetch(f"{a.url}/v2/library/evict0/blobs/{layers[0]}")[:2] == (200, layers[0])
    assert upstream.blob_gets(layers[0]) == 0


def test_the_dashboard_lists_every_replica_with_its_local_tier(
    cluster: Cluster, upstream: UpstreamRegistry, tmp_path: Path
) -> None:
    from tests.harness.browser import Console, open_browser, require_browser

    require_browser()
    image = build_image("dash-cluster", layers=1, layer_size=2 << 20, workdir=tmp_path)
    layer = push(upstream.url, "library/dc", "1", image).layer_digests[0]
    assert fetch(f"{cluster[0].url}/v2/library/dc/blobs/{layer}")[:2] == (200, layer)
    assert cluster.wait_indexed(layer)
    urls = {f"http://127.0.0.1:{r.port}" for r in cluster.replicas}

    def replicas() -> dict[str, Any]:
        doc = json.loads(HTTP.request("GET", f"{cluster[1].url}/api/v1/stats").data)
        return {r["url"]: r for r in doc["replicas"]}

    deadline = time.monotonic() + 10  # each replica announces itself within its first beat
    while set(replicas()) != urls and time.monotonic() < deadline:
        time.sleep(0.1)
    listed = replicas()
    assert set(listed) == urls
    assert all(r["alive"] for r in listed.values())
    me = f"http://127.0.0.1:{cluster[1].port}"
    assert [u for u, r in listed.items() if r["self"]] == [me]
    holder = listed[f"http://127.0.0.1:{cluster[0].port}"]["local_tier"]
    assert holder["objects"] >= 1 and holder["bytes"] >= image.layers[0].size
    console = Console()
    with open_browser() as browser:
        page = console.watch(browser.new_page(viewport={"width": 1280, "height": 900}))
        page.goto(cluster[1].url + "/")
        text = page.inner_text("[data-part=cluster]")
        assert all(url in text for url in urls) and "(this one)" in text
        shown = dict(
            page.eval_on_selector_all(
                "[data-part=cluster] [data-stat]",
                "els => els.map(e => [e.dataset.stat, e.dataset.value])",
            )
        )
        doc = json.loads(HTTP.request("GET", f"{cluster[1].url}/api/v1/stats").data)
        for i, replica in enumerate(doc["replicas"]):
            assert int(shown[f"replicas.{i}.local_tier.bytes"]) == replica["local_tier"]["bytes"]
        page.close()
    assert console.errors == []
