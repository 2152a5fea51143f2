"""skopeo 1.9 through virtual hosts ``<registry>.<domain>:<port>``.

With ``--domain`` the cache routes by the Host header alone: no ``ns=``, no path
prefix, and here no default upstream either, so only the Host can have chosen
the upstream. skopeo runs under a private /etc/hosts that maps the virtual host
names (and every public registry name) to 127.0.0.1.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness.cache import CacheServer
from tests.harness.cachelog import describe, settled_blob_gets, settled_requests
from tests.harness.clients import pulled_blobs, pulled_manifest, skopeo_available, skopeo_copy
from tests.harness.configcli import config_cli
from tests.harness.images import build_image, build_index
from tests.harness.netns import Hosts
from tests.harness.registry import UpstreamRegistry, hub_and_ghcr
from tests.harness.require import needs

pytestmark = [
    pytest.mark.clients,
    needs(skopeo_available(), "skopeo not installed: apt-get install skopeo"),
]

DOMAIN = "registry-cache.test"
CLIENT_AGENTS = ("skopeo/", "containers/")  # skopeo's User-Agent prefixes


def test_skopeo_through_virtual_hosts(
    make_upstream: Callable[..., UpstreamRegistry],
    make_cache: Callable[..., CacheServer],
    hosts_file: Callable[[Hosts], Path],
    tmp_path: Path,
) -> None:
    hub_image = build_image("skopeo-hub")
    index = build_index("skopeo-ghcr", fmt="docker")
    hub, ghcr = hub_and_ghcr(make_upstream, hub_image, index)
    cache = make_cache(
        "--upstream",
        f"docker.io={hub.url}",
        "--upstream",
        f"ghcr.io={ghcr.url}",
        "--domain",
        DOMAIN,
        "--default-upstream",
        "none",
    )
    hub_vhost, ghcr_vhost = f"docker.io.{DOMAIN}", f"ghcr.io.{DOMAIN}"
    hosts = hosts_file([hub_vhost, ghcr_vhost])

    # 1. The virtual host in the image reference.
    out = tmp_path / "hub"
    skopeo_copy(f"docker://{hub_vhost}:{cache.port}/library/test:1.0", out, hosts=hosts)
    assert pulled_manifest(out) == hub_image.manifest.read()  # byte-identical manifest
    assert pulled_blobs(out) == {hub_image.config.digest, *hub_image.layer_digests}

    # 2. The real name, sent to the virtual host by the generated (vhost) registries.conf.
    conf_text = config_cli(cache, "registries-conf")
    locations = {
        r["prefix"]: r["mirror"][0]["location"] for r in tomllib.loads(conf_text)["registry"]
    }
    assert locations == {
        "docker.io": f"{hub_vhost}:{cache.port}",
        "ghcr.io": f"{ghcr_vhost}:{cache.port}",
    }
    conf = tmp_path / "registries.conf"
    conf.write_text(conf_text)
    out_all = tmp_path / "ghcr"
    skopeo_copy(
        "docker://ghcr.io/org/app:2.0",
        out_all,
        hosts=hosts,
        registries_conf=conf,
        all_platforms=True,
    )
    assert pulled_manifest(out_all) == index.manifest.read()
    for image in index.images:
        assert pulled_manifest(out_all, image.digest) == image.manifest.read()
    assert pulled_blobs(out_all) == {b.digest for b in index.blobs}

    hub_blobs = {hub_image.config.digest, *hub_image.layer_digests}
    ghcr_blobs = {b.digest for b in index.blobs}
    reqs = [r for r in settled_requests(cache, hub_blobs | ghcr_blobs) if r.kind]
    listing = describe(reqs)
    for name, repo in (("docker.io", "library/test"), ("ghcr.io", "org/app")):
        mine = [r for r in reqs if r.upstream == name]
        assert mine, listing
        # Routed by Host: the path has neither a prefix nor ns=, and there is no default.
        assert all(r.bare_path.startswith(f"/v2/{repo}/") and r.ns is None for r in mine), listing
        assert all(r.status == 200 and r.repo == repo for r in mine), listing
    assert all(r.upstream in ("docker.io", "ghcr.io") for r in reqs), listing
    # Upstreams: reached by the cache only, every blob once.
    for upstream, blobs in (
        (hub, hub_blobs),
        (ghcr, ghcr_blobs),
    ):
        assert not [
            e.path for e in upstream.request_log() if e.user_agent.startswith(CLIENT_AGENTS)
        ]
        assert settled_blob_gets(upstream, blobs) == dict.fromkeys(blobs, 1)
