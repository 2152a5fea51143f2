"""The Docker daemon (20.10) pulling Docker Hub images through the cache.

dockerd's ``registry-mirrors`` apply to Docker Hub only and send neither ``ns=``
nor a path prefix: the cache routes ``/v2/library/test/...`` to its default
upstream, docker.io, here a local docker-registry. dockerd runs under a private
/etc/hosts mapping registry-1.docker.io and friends to 127.0.0.1, so its
fallback to Docker Hub (after a mirror failure) would fail locally.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness.cache import CacheServer
from tests.harness.cachelog import describe, settled_blob_gets, settled_requests
from tests.harness.certs import make_tls
from tests.harness.configcli import config_cli, fetch_config
from tests.harness.dockerd import Dockerd, dockerd_available
from tests.harness.images import build_image, push
from tests.harness.netns import Hosts
from tests.harness.registry import UpstreamRegistry
from tests.harness.require import needs

pytestmark = [
    pytest.mark.clients,
    needs(dockerd_available(), "dockerd/docker not installed: apt-get install docker.io"),
]

CLIENT_AGENT = "docker/"  # dockerd's User-Agent prefix


@pytest.fixture
def hub(make_upstream: Callable[..., UpstreamRegistry]) -> UpstreamRegistry:
    """The local docker-registry playing Docker Hub."""
    return make_upstream()


@pytest.fixture
def cache(make_cache: Callable[..., CacheServer], hub: UpstreamRegistry) -> CacheServer:
    # No domain, docker.io the default upstream: the single-host mirror the daemon needs.
    return make_cache("--upstream", f"docker.io={hub.url}", "--default-upstream", "docker.io")


@pytest.fixture
def dockerd(
    cache: CacheServer, hosts_file: Callable[[Hosts], Path], tmp_path: Path
) -> Iterator[Dockerd]:
    daemon_json = tmp_path / "daemon.json"
    daemon_json.write_text(config_cli(cache, "docker-daemon"))
    with Dockerd(daemon_json, hosts_file([])) as daemon:
        yield daemon


def test_docker_pull_goes_through_the_cache(
    hub: UpstreamRegistry, cache: CacheServer, dockerd: Dockerd
) -> None:
    image = build_image("dockerd-hub", fmt="docker")  # schema2, as Docker Hub serves
    push(hub.url, "library/test", "1.0", image)
    hub.clear_request_log()
    daemon_json = json.loads(Path(dockerd.daemon_json).read_text())
    assert daemon_json == {
        "registry-mirrors": [cache.url],
        "insecure-registries": [cache.host_port],
    }
    assert json.loads(fetch_config(cache, "/daemon.json")) == daemon_json
    info = json.loads(dockerd.docker("info", "--format", "{{json .RegistryConfig}}").stdout)
    assert info["Mirrors"] == [cache.url + "/"]

    out = dockerd.docker("pull", "library/test:1.0").stdout
    assert f"Digest: {image.digest}" in out, out

    inspected = dockerd.image_inspect("library/test:1.0")
    assert f"test@{image.digest}" in inspected["RepoDigests"]
    assert inspected["RootFS"]["Layers"] == image.diff_ids  # every layer unpacked, verified
    assert inspected["Id"] == image.config.digest

    blobs = {image.config.digest, *image.layer_digests}
    reqs = [r for r in settled_requests(cache, blobs) if r.kind]
    listing = describe(reqs)
    assert reqs, f"the daemon never reached the cache\n{dockerd.log_text()[-3000:]}"
    for r in reqs:
        assert r.status == 200 and r.ns is None, listing
        assert r.upstream == "docker.io" and r.repo == "library/test", listing
        assert r.bare_path.startswith("/v2/library/test/"), listing  # no prefix: default route
    assert any(r.kind == "manifests" and r.bare_path.endswith("/1.0") for r in reqs), listing
    assert {r.digest for r in reqs if r.kind == "blobs"} == blobs, listing
    # Docker Hub (the local stand-in) was reached by the cache only, each blob once.
    upstream = hub.request_log()
    assert upstream and not [e.path for e in upstream if e.user_agent.startswith(CLIENT_AGENT)]
    assert settled_blob_gets(hub, blobs) == dict.fromkeys(blobs, 1)


def test_docker_pull_through_a_cache_serving_tls(
    hub: UpstreamRegistry,
    make_cache: Callable[..., CacheServer],
    hosts_file: Callable[[Hosts], Path],
    tmp_path: Path,
) -> None:
    """A TLS cache needs no insecure-registries: dockerd trusts it through
    /etc/docker/certs.d/<host:port>/ca.crt (bound over /etc/docker for this daemon only)."""
    tls = make_tls(tmp_path / "tls")
    env = {"REGISTRY_CACHE_TLS_CERT": str(tls.cert), "REGISTRY_CACHE_TLS_KEY": str(tls.key)}
    cache = make_cache(
        "--upstream", f"docker.io={hub.url}", "--default-upstream", "docker.io",
        env=env, ca_file=tls.ca_cert,
    )  # fmt: skip
    image = build_image("dockerd-tls", fmt="docker")
    push(hub.url, "library/secure", "1.0", image)
    hub.clear_request_log()
    daemon_json = tmp_path / "daemon.json"
    daemon_json.write_text(config_cli(cache, "docker-daemon"))
    assert json.loads(daemon_json.read_text()) == {"registry-mirrors": [cache.url]}
    docker_etc = tmp_path / "etc-docker"
    (docker_etc / "certs.d" / cache.host_port).mkdir(parents=True)
    shutil.copy(tls.ca_cert, docker_etc / "certs.d" / cache.host_port / "ca.crt")

    with Dockerd(daemon_json, hosts_file([]), docker_etc=docker_etc) as daemon:
        out = daemon.docker("pull", "library/secure:1.0").stdout
        assert f"Digest: {image.digest}" in out, out
        assert daemon.image_inspect("library/secure:1.0")["Id"] == image.config.digest
    blobs = {image.config.digest, *image.layer_digests}
    served = [r for r in settled_requests(cache, blobs) if r.kind == "blobs"]
    assert {r.digest for r in served} == blobs, describe(served)
    assert not [e for e in hub.request_log() if e.user_agent.startswith(CLIENT_AGENT)]
