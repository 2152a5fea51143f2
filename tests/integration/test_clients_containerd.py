"""containerd 1.6 (``ctr images pull --hosts-dir``) pulling through the cache.

What a node does: containerd reads ``certs.d/<registry>/hosts.toml``, asks the
``[host]`` (the cache) first with ``?ns=<registry>``, then falls back to ``server``.
Every ``server`` here is a local upstream, and containerd and ctr run under a
private /etc/hosts mapping the public registry names to 127.0.0.1, so nothing
can leave the machine even on a fallback.
"""

from __future__ import annotations

import json
import subprocess
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness.cache import CacheServer
from tests.harness.cachelog import (
    CacheRequest,
    cache_requests,
    describe,
    settled_blob_gets,
    settled_requests,
)
from tests.harness.certs import make_tls
from tests.harness.configcli import config_cli, fetch_config
from tests.harness.containerd import Containerd, chain_ids, containerd_available
from tests.harness.images import Image, build_image, build_index, push
from tests.harness.k3s import host_configs, hosts_tomls, write_hosts_dir
from tests.harness.netns import Hosts
from tests.harness.registry import UpstreamRegistry, hub_and_ghcr
from tests.harness.require import needs

pytestmark = [
    pytest.mark.clients,
    needs(containerd_available(), "containerd/ctr not installed: apt-get install containerd"),
]

# Public names beyond netns.PUBLIC_REGISTRY_NAMES that these tests pull from.
EXTRA_PUBLIC_NAMES = ["registry.k8s.io"]
CLIENT_AGENT = "containerd/"  # containerd's User-Agent prefix


@pytest.fixture
def containerd(hosts_file: Callable[[Hosts], Path]) -> Iterator[Containerd]:
    with Containerd(hosts_file(EXTRA_PUBLIC_NAMES)) as daemon:
        yield daemon


def image_blobs(image: Image) -> set[str]:
    return {image.config.digest, *image.layer_digests}


def by_ns(cache: CacheServer, ns: str, blobs: set[str]) -> list[CacheRequest]:
    """The cache's requests with ``?ns=ns``, once blob requests for ``blobs`` are logged."""
    return [r for r in settled_requests(cache, blobs) if r.ns == ns]


def client_requests(upstream: UpstreamRegistry) -> list[str]:
    """Requests that reached an upstream straight from containerd (a fallback)."""
    return [e.path for e in upstream.request_log() if e.user_agent.startswith(CLIENT_AGENT)]


def assert_routed(cache: CacheServer, ns: str, repo: str, tag: str, blobs: set[str]) -> None:
    """Every request for ``ns`` reached that upstream via ns=, and fetched exactly ``blobs``."""
    reqs = by_ns(cache, ns, blobs)
    listing = describe(reqs)
    assert reqs, f"no request with ns={ns} reached the cache:\n{describe(cache_requests(cache))}"
    for r in reqs:
        assert r.status == 200, listing
        assert r.upstream == ns and r.repo == repo, listing
        assert r.bare_path.startswith(f"/v2/{repo}/"), listing  # no path prefix: ns routes
    assert any(r.kind == "manifests" and r.bare_path.endswith(f"/{tag}") for r in reqs), listing
    assert {r.digest for r in reqs if r.kind == "blobs"} == blobs, listing


def top_layer_marker(image: Image) -> str:
    """The content of ``etc/registry-cache-test`` in the image's last layer.

    ``images.build_image`` seeds layer i with ``f"{seed}/{platform}/{i}"``; the image
    seed is in the config's labels.
    """
    config = json.loads(image.config.read())
    seed = config["config"]["Labels"]["org.registry-cache.test.seed"]
    return f"seed={seed}/{image.platform}/{len(image.layers) - 1}\n"


def assert_unpacked(containerd: Containerd, image: Image) -> None:
    """The image's chain of layers is committed, and one snapshot is its full rootfs."""
    keys = containerd.snapshot_keys()
    assert set(chain_ids(image.diff_ids)) <= keys, keys
    marker = top_layer_marker(image)
    tops = [
        d
        for d in containerd.snapshot_dirs()
        if (d / "etc/registry-cache-test").is_file()
        and (d / "etc/registry-cache-test").read_text() == marker
    ]
    assert tops, f"no unpacked snapshot holds {marker!r}"
    assert all((tops[0] / name).exists() for name in image.layers[-1].files)


def pull_hub_and_ghcr(
    containerd: Containerd, cache: CacheServer, certs: Path, hub_image: Image, ghcr_image: Image
) -> None:
    """Pull docker.io/library/test:1.0 and ghcr.io/org/app:2.0 with ``certs`` (see
    ``registry.hub_and_ghcr``): both images complete and unpacked, every request routed
    through the cache by ``?ns=``."""
    containerd.pull("docker.io/library/test:1.0", hosts_dir=certs)
    containerd.pull("ghcr.io/org/app:2.0", hosts_dir=certs)

    assert containerd.image_target("docker.io/library/test:1.0") == hub_image.digest
    assert containerd.image_target("ghcr.io/org/app:2.0") == ghcr_image.digest
    assert containerd.content_digests() == {
        hub_image.digest,
        ghcr_image.digest,
        *image_blobs(hub_image),
        *image_blobs(ghcr_image),
    }
    assert_unpacked(containerd, hub_image)
    assert_unpacked(containerd, ghcr_image)
    assert_routed(cache, "docker.io", "library/test", "1.0", image_blobs(hub_image))
    assert_routed(cache, "ghcr.io", "org/app", "2.0", image_blobs(ghcr_image))


def test_docker_io_and_ghcr_io_through_one_endpoint_via_ns(
    make_upstream: Callable[..., UpstreamRegistry],
    make_cache: Callable[..., CacheServer],
    containerd: Containerd,
    tmp_path: Path,
) -> None:
    hub_image = build_image("ctr-hub")
    ghcr_image = build_image("ctr-ghcr", fmt="docker")
    hub, ghcr = hub_and_ghcr(make_upstream, hub_image, ghcr_image)
    cache = make_cache("--upstream", f"docker.io={hub.url}", "--upstream", f"ghcr.io={ghcr.url}")

    certs = tmp_path / "certs.d"
    config_cli(cache, "containerd-hosts", "--out", str(certs))
    hub_toml = tomllib.loads((certs / "docker.io" / "hosts.toml").read_text())
    ghcr_toml = tomllib.loads((certs / "ghcr.io" / "hosts.toml").read_text())
    assert (hub_toml["server"], ghcr_toml["server"]) == (hub.url, ghcr.url)  # local fallbacks
    assert list(hub_toml["host"]) == list(ghcr_toml["host"]) == [cache.url]  # ONE endpoint
    assert (certs / "docker.io" / "hosts.toml").read_text() == fetch_config(
        cache, "/containerd/docker.io/hosts.toml"
    )  # the CLI and the HTTP page agree

    pull_hub_and_ghcr(containerd, cache, certs, hub_image, ghcr_image)
    assert not [r for r in cache_requests(cache) if r.kind and r.ns is None]
    # The upstreams saw the cache only (no fallback), each blob fetched once.
    assert client_requests(hub) == client_requests(ghcr) == []
    for upstream, image in ((hub, hub_image), (ghcr, ghcr_image)):
        blobs = image_blobs(image)
        assert settled_blob_gets(upstream, blobs) == dict.fromkeys(blobs, 1)

    # Pull again from an empty content store: everything comes from the cache's disk.
    containerd.ctr("images", "rm", "--sync", "docker.io/library/test:1.0")
    assert hub_image.layer_digests[0] not in containerd.content_digests()
    before = len(cache_requests(cache))
    containerd.pull("docker.io/library/test:1.0", hosts_dir=certs)
    again = [
        r
        for r in settled_requests(cache, image_blobs(hub_image), since=before)
        if r.kind == "blobs"
    ]
    assert {r.digest for r in again} == image_blobs(hub_image), describe(again)
    assert all(r.cache == "HIT" for r in again), describe(again)
    assert sum(hub.blob_gets(d) for d in image_blobs(hub_image)) == len(image_blobs(hub_image))


def test_platform_arm64_from_a_multi_arch_index(
    make_upstream: Callable[..., UpstreamRegistry],
    make_cache: Callable[..., CacheServer],
    containerd: Containerd,
    tmp_path: Path,
) -> None:
    hub = make_upstream()
    index = build_index("ctr-multi")  # linux/amd64 + linux/arm64/v8, distinct layers
    push(hub.url, "library/multi", "3.0", index)
    hub.clear_request_log()
    arm, amd = index.for_platform("linux/arm64"), index.for_platform("linux/amd64")
    cache = make_cache("--upstream", f"docker.io={hub.url}")
    certs = tmp_path / "certs.d"
    config_cli(cache, "containerd-hosts", "--out", str(certs))

    out = containerd.pull(
        "docker.io/library/multi:3.0", hosts_dir=certs, platform="linux/arm64"
    ).stdout
    assert "unpacking linux/arm64" in out, out

    assert containerd.image_target("docker.io/library/multi:3.0") == index.digest
    assert containerd.content_digests() == {index.digest, arm.digest, *image_blobs(arm)}
    assert_unpacked(containerd, arm)
    assert containerd.snapshot_keys() == set(chain_ids(arm.diff_ids))

    reqs = by_ns(cache, "docker.io", image_blobs(arm))
    listing = describe(reqs)
    manifests = {r.digest for r in reqs if r.kind == "manifests" and r.method == "GET"}
    assert arm.digest in manifests and amd.digest not in manifests, listing
    assert {r.digest for r in reqs if r.kind == "blobs"} == image_blobs(arm), listing
    assert all(r.status == 200 and r.upstream == "docker.io" for r in reqs), listing
    # Upstream: the arm64 blobs once each, nothing of amd64, nothing straight from containerd.
    assert settled_blob_gets(hub, image_blobs(arm)) == dict.fromkeys(image_blobs(arm), 1)
    assert all(hub.blob_gets(d) == 0 for d in image_blobs(amd))
    assert client_requests(hub) == []


# Cases from k3s's own Test_UnitGetHostConfigs (pkg/agent/containerd/config_test.go):
# registries.yaml → {dir: (server URL, [(endpoint URL, override_path, has auth/tls)])}.
K3S_CASES = [
    ("mirrors:\n  docker.io:\n", {}),
    ("mirrors:\n  docker.io:\n    endpoint: [docker.io]\n", {}),
    (
        "mirrors:\n  docker.io:\nconfigs:\n  docker.io:\n    auth: {username: u, password: p}\n",
        {"docker.io": ("https://registry-1.docker.io/v2", [])},
    ),
    (
        "mirrors:\n  docker.io:\n    endpoint: [https://registry.example.com/prefix/v2]\n",
        {
            "docker.io": (
                "https://registry-1.docker.io/v2",
                [("https://registry.example.com/prefix/v2", True, False)],
            )
        },
    ),
    (
        "mirrors:\n  docker.io:\n    endpoint: [registry.example.com/v2]\n",
        {
            "docker.io": (
                "https://registry-1.docker.io/v2",
                [("https://registry.example.com/v2", False, False)],
            )
        },
    ),
    (
        "mirrors:\n  docker.io:\n    endpoint: [localhost:5000, 127.0.0.1:5000, "
        "https://127.0.0.1:5001, registry.example.com:443]\n",
        {
            "docker.io": (
                "https://registry-1.docker.io/v2",
                [
                    ("http://localhost:5000/v2", False, False),
                    ("http://127.0.0.1:5000/v2", False, False),
                    ("https://127.0.0.1:5001/v2", False, False),
                    ("https://registry.example.com:443/v2", False, False),
                ],
            )
        },
    ),
    (
        "mirrors:\n  docker.io:\n    endpoint: [registry.example.com, "
        "https://registry.example.com, https://registry.example.com/v2]\n",
        {
            "docker.io": (
                "https://registry-1.docker.io/v2",
                [("https://registry.example.com/v2", False, False)],
            )
        },
    ),
    (
        "mirrors:\n  docker.io:\n    endpoint: [https://registry.example.com/v2]\n"
        "configs:\n  registry.example.com:\n    auth: {username: u, password: p}\n",
        {
            "docker.io": (
                "https://registry-1.docker.io/v2",
                [("https://registry.example.com/v2", False, True)],
            ),
            "registry.example.com": ("https://registry.example.com/v2", []),
        },
    ),
    (
        "mirrors:\n  localhost:5000:\n    endpoint: [https://localhost:5000]\n"
        "configs:\n  localhost:5000:\n    tls: {insecure_skip_verify: true}\n",
        {
            "localhost:5000": (
                "http://localhost:5000/v2",
                [("https://localhost:5000/v2", False, True)],
            )
        },
    ),
]


@pytest.mark.parametrize(("registries_yaml", "expected"), K3S_CASES)
def test_k3s_conversion_helper_matches_k3s_unit_cases(
    registries_yaml: str, expected: dict[str, tuple[str, list[tuple[str, bool, bool]]]]
) -> None:
    """The Python re-implementation agrees with k3s's own expectations (no daemon)."""
    got = {
        host: (
            config.default.url if config.default else None,
            [(e.url, e.override_path, bool(e.config)) for e in config.endpoints],
        )
        for host, config in host_configs(registries_yaml).items()
    }
    assert got == expected


def test_k3s_registries_yaml_single_style(
    make_upstream: Callable[..., UpstreamRegistry],
    make_cache: Callable[..., CacheServer],
    containerd: Containerd,
    tmp_path: Path,
) -> None:
    """registries.yaml --style single → hosts.toml exactly as k3s writes them → ctr pull."""
    hub_image = build_image("k3s-hub")
    ghcr_image = build_image("k3s-ghcr")
    hub, ghcr = hub_and_ghcr(make_upstream, hub_image, ghcr_image)
    cache = make_cache("--upstream", f"docker.io={hub.url}", "--upstream", f"ghcr.io={ghcr.url}")

    registries_yaml = config_cli(cache, "registries", "--style", "single")
    assert registries_yaml == fetch_config(cache, "/registries.yaml?style=single")

    # What k3s itself would write (its default endpoint is the real registry) ...
    k3s_files = hosts_tomls(registries_yaml)
    endpoint = f"{cache.url}/v2"
    for registry, server in (
        ("docker.io", "https://registry-1.docker.io/v2"),
        ("ghcr.io", "https://ghcr.io/v2"),
    ):
        parsed = tomllib.loads(k3s_files[registry])
        assert parsed["server"] == server
        assert list(parsed["host"]) == [endpoint]  # /v2 appended, no override_path
        assert "override_path" not in parsed["host"][endpoint]
    # ... and what this test installs: the same files with `server` on the local
    # upstreams playing those registries (never leave a public fallback in a test).
    files = hosts_tomls(
        registries_yaml, server_override={"docker.io": hub.url, "ghcr.io": ghcr.url}
    )
    assert set(files) == set(k3s_files)
    certs = write_hosts_dir(tmp_path / "certs.d", files)

    pull_hub_and_ghcr(containerd, cache, certs, hub_image, ghcr_image)
    assert client_requests(hub) == client_requests(ghcr) == []


def test_unmapped_registry_falls_back_to_server(
    make_upstream: Callable[..., UpstreamRegistry],
    make_cache: Callable[..., CacheServer],
    containerd: Containerd,
    tmp_path: Path,
) -> None:
    """registry.k8s.io is not configured: the cache answers 404 and containerd uses ``server``."""
    hub, k8s = make_upstream(), make_upstream()  # k8s plays registry.k8s.io
    image = build_image("ctr-k8s", layers=1)
    push(k8s.url, "pause", "3.9", image)
    k8s.clear_request_log()
    cache = make_cache("--upstream", f"docker.io={hub.url}")

    certs = tmp_path / "certs.d"
    config_cli(cache, "containerd-hosts", "--out", str(certs))
    assert not (certs / "registry.k8s.io").exists()  # nothing generated for it
    # The operator's hand-written file for an unmapped registry, shaped like ours.
    (certs / "registry.k8s.io").mkdir()
    (certs / "registry.k8s.io" / "hosts.toml").write_text(
        f'server = "{k8s.url}"\n\n[host."{cache.url}"]\n  capabilities = ["pull", "resolve"]\n'
    )

    containerd.pull("registry.k8s.io/pause:3.9", hosts_dir=certs)

    assert containerd.image_target("registry.k8s.io/pause:3.9") == image.digest
    assert containerd.content_digests() == {image.digest, *image_blobs(image)}
    assert_unpacked(containerd, image)
    # The cache was asked first and said NAME_UNKNOWN quickly, without any upstream.
    reqs = by_ns(cache, "registry.k8s.io", image_blobs(image))
    listing = describe(reqs)
    assert reqs and all(r.status == 404 and r.error == "NAME_UNKNOWN" for r in reqs), listing
    assert any(r.kind == "manifests" for r in reqs), listing
    assert all(r.upstream is None for r in reqs), listing
    assert all((r.duration_ms or 0) < 1000 for r in reqs), listing
    assert not [e.path for e in hub.request_log() if "pause" in e.path]
    # containerd then went to `server`: the manifest and every blob, from containerd itself.
    served = client_requests(k8s)
    assert any(p.startswith("/v2/pause/manifests/") for p in served), served
    assert settled_blob_gets(k8s, image_blobs(image)) == dict.fromkeys(image_blobs(image), 1)
    assert len(served) == len(k8s.request_log())


def test_pull_through_a_cache_serving_tls(
    make_upstream: Callable[..., UpstreamRegistry],
    make_cache: Callable[..., CacheServer],
    containerd: Containerd,
    tmp_path: Path,
) -> None:
    """hosts.toml from ``containerd-hosts --ca-file`` for a cache with --tls-cert: containerd
    verifies the cache's certificate against that CA and pulls everything through it."""
    tls = make_tls(tmp_path / "tls")
    hub = make_upstream()
    image = build_image("ctr-tls")
    push(hub.url, "library/secure", "1.0", image)
    hub.clear_request_log()
    # Configured like a node's .env would: serve and the generator both read it.
    tls_env = {"REGISTRY_CACHE_TLS_CERT": str(tls.cert), "REGISTRY_CACHE_TLS_KEY": str(tls.key)}
    cache = make_cache("--upstream", f"docker.io={hub.url}", env=tls_env, ca_file=tls.ca_cert)
    certs = tmp_path / "certs.d"
    config_cli(cache, "containerd-hosts", "--ca-file", str(tls.ca_cert), "--out", str(certs))
    hosts = tomllib.loads((certs / "docker.io" / "hosts.toml").read_text())
    assert list(hosts["host"]) == [cache.url] and cache.url.startswith("https://")
    assert hosts["host"][cache.url]["ca"] == str(tls.ca_cert)

    containerd.pull("docker.io/library/secure:1.0", hosts_dir=certs)
    assert containerd.image_target("docker.io/library/secure:1.0") == image.digest
    assert_unpacked(containerd, image)
    assert_routed(cache, "docker.io", "library/secure", "1.0", image_blobs(image))
    assert client_requests(hub) == []  # no fallback: the TLS endpoint was used


def test_pull_with_a_login_when_the_cache_requires_one(
    make_upstream: Callable[..., UpstreamRegistry],
    make_cache: Callable[..., CacheServer],
    containerd: Containerd,
    tmp_path: Path,
) -> None:
    """A cache started with --htpasswd: ctr answers its Basic challenge with --user."""
    users = tmp_path / "htpasswd"
    line = subprocess.run(
        ["htpasswd", "-Bbn", "node", "pull-pw"], capture_output=True, text=True, check=True
    ).stdout
    users.write_text(line)
    hub = make_upstream()
    image = build_image("ctr-auth")
    push(hub.url, "library/guarded", "1.0", image)
    hub.clear_request_log()
    cache = make_cache(
        "--upstream", f"docker.io={hub.url}", env={"REGISTRY_CACHE_HTPASSWD": str(users)}
    )
    certs = tmp_path / "certs.d"
    config_cli(cache, "containerd-hosts", "--out", str(certs))

    containerd.pull("docker.io/library/guarded:1.0", hosts_dir=certs, user="node:pull-pw")
    assert containerd.image_target("docker.io/library/guarded:1.0") == image.digest
    reqs = by_ns(cache, "docker.io", image_blobs(image))
    challenged = [r for r in reqs if r.status == 401]
    served = [r for r in reqs if r.status != 401]
    assert challenged, describe(reqs)  # ctr was asked to log in, and did
    assert all(r.status == 200 for r in served), describe(reqs)
    assert {r.digest for r in served if r.kind == "blobs"} == image_blobs(image)
    assert " user=node" in cache.log_text() and "pull-pw" not in cache.log_text()
    assert client_requests(hub) == []  # never fell back to the upstream directly
