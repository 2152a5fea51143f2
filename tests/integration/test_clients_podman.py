"""podman 4.3 with the generated registries.conf: two upstreams through path prefixes.

A ``registries.conf`` mirror ``127.0.0.1:PORT/ghcr.io`` makes podman ask
``/v2/ghcr.io/org/app/...``: the cache routes by that first path segment. podman
runs under a private /etc/hosts, so a fallback to the real registry (the
``location``) fails locally.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness.cache import CacheServer
from tests.harness.cachelog import describe, settled_blob_gets, settled_requests
from tests.harness.configcli import config_cli, fetch_config
from tests.harness.images import build_image, build_index
from tests.harness.netns import Hosts
from tests.harness.podman import Podman, podman_available
from tests.harness.registry import UpstreamRegistry, hub_and_ghcr
from tests.harness.require import needs

pytestmark = [
    pytest.mark.clients,
    needs(podman_available(), "podman not installed: apt-get install podman"),
]

CLIENT_AGENT = "containers/"  # podman's User-Agent prefix (containers/image)


def test_podman_pulls_two_upstreams_through_path_prefixes(
    make_upstream: Callable[..., UpstreamRegistry],
    make_cache: Callable[..., CacheServer],
    hosts_file: Callable[[Hosts], Path],
    tmp_path: Path,
) -> None:
    hub_image = build_image("podman-hub", fmt="docker")
    index = build_index("podman-ghcr")  # podman picks linux/amd64 from it
    amd = index.for_platform("linux/amd64")
    hub, ghcr = hub_and_ghcr(make_upstream, hub_image, index)
    cache = make_cache("--upstream", f"docker.io={hub.url}", "--upstream", f"ghcr.io={ghcr.url}")

    conf_text = fetch_config(cache, "/registries.conf")  # what a node fetches from the cache
    assert conf_text == config_cli(cache, "registries-conf")
    mirrors = {
        r["prefix"]: [m["location"] for m in r["mirror"]]
        for r in tomllib.loads(conf_text)["registry"]
    }
    assert mirrors == {
        "docker.io": [f"{cache.host_port}/docker.io"],
        "ghcr.io": [f"{cache.host_port}/ghcr.io"],
    }
    conf = tmp_path / "registries.conf"
    conf.write_text(conf_text)

    with Podman(conf, hosts_file([])) as podman:
        podman.pull("docker.io/library/test:1.0")
        podman.pull("ghcr.io/org/app:2.0")
        hub_seen = podman.image_inspect("docker.io/library/test:1.0")
        ghcr_seen = podman.image_inspect("ghcr.io/org/app:2.0")

    assert hub_seen["Digest"] == hub_image.digest
    assert hub_seen["Id"] == hub_image.config.digest.removeprefix("sha256:")
    assert hub_seen["RootFS"]["Layers"] == hub_image.diff_ids
    assert ghcr_seen["Digest"] == index.digest
    assert ghcr_seen["Id"] == amd.config.digest.removeprefix("sha256:")
    assert ghcr_seen["RootFS"]["Layers"] == amd.diff_ids

    hub_blobs = {hub_image.config.digest, *hub_image.layer_digests}
    ghcr_blobs = {amd.config.digest, *amd.layer_digests}
    reqs = [r for r in settled_requests(cache, hub_blobs | ghcr_blobs) if r.kind]
    listing = describe(reqs)
    for prefix, repo, blobs in (
        ("docker.io", "library/test", hub_blobs),
        ("ghcr.io", "org/app", ghcr_blobs),
    ):
        mine = [r for r in reqs if r.bare_path.startswith(f"/v2/{prefix}/{repo}/")]
        assert mine, listing
        assert all(r.status == 200 and r.ns is None for r in mine), listing
        assert all(r.upstream == prefix and r.repo == repo for r in mine), listing
        assert {r.digest for r in mine if r.kind == "blobs"} == blobs, listing
    assert all(r.bare_path.startswith(("/v2/docker.io/", "/v2/ghcr.io/")) for r in reqs), listing
    # The upstreams saw the cache only; each pulled blob once.
    for upstream in (hub, ghcr):
        assert upstream.request_log()
        assert not [e.path for e in upstream.request_log() if e.user_agent.startswith(CLIENT_AGENT)]
    assert settled_blob_gets(hub, hub_blobs) == dict.fromkeys(hub_blobs, 1)
    assert settled_blob_gets(ghcr, ghcr_blobs) == dict.fromkeys(ghcr_blobs, 1)
