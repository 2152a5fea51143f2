"""skopeo pulls through the cache from two real upstreams with real auth.

docker.io is played by a Bearer-token registry (with a test token issuer), ghcr.io
by an htpasswd Basic-auth registry whose credentials come from the seed's ``.env``.
Routing is tested by virtual host (mount-namespace hosts file) and by a path-prefix
``registries.conf`` mirror: single-arch, multi-arch index (``--all``), by tag and by
digest, with every pulled blob verified against what was pushed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness import clients
from tests.harness.cache import CacheServer
from tests.harness.clients import pulled_blobs, pulled_manifest, skopeo_copy
from tests.harness.credentials import BASIC_PASSWORD, BASIC_USER, PULLER, PUSHER
from tests.harness.images import ImageIndex, build_image, build_index, push
from tests.harness.push import PushResult
from tests.harness.registry import UpstreamRegistry
from tests.harness.require import needs
from tests.harness.wait import wait_for_log

pytestmark = needs(clients.skopeo_available(), "skopeo missing")
DOMAIN = "registry.test"


class World:
    """Two upstreams with content, and a cache in front of both."""

    def __init__(
        self,
        make_upstream: Callable[..., UpstreamRegistry],
        make_cache: Callable[..., CacheServer],
    ) -> None:
        self.hub = make_upstream("token")
        self.ghcr = make_upstream("basic")
        self.single = push(self.hub.url, "library/test", "1.0", build_image("single"), PUSHER)
        self.multi = push(
            self.hub.url, "library/multi", "2.0", build_index("multi", fmt="docker"), PUSHER
        )
        self.ghcr_image = push(
            self.ghcr.url, "org/app", "3.1", build_image("ghcr-app"), (BASIC_USER, BASIC_PASSWORD)
        )
        cache = make_cache(
            "--domain",
            DOMAIN,
            "--upstream",
            f"docker.io={self.hub.url}",
            "--upstream",
            f"ghcr.io={self.ghcr.url}",
            start=False,
        )
        # Seed compatibility: credentials from .env in the working directory.
        (cache.cwd).mkdir(parents=True, exist_ok=True)
        (cache.cwd / ".env").write_text(
            f"REGISTRY_DOMAIN={DOMAIN}\n"
            f"DOCKERHUB_USERNAME={PULLER[0]}\nDOCKERHUB_PASSWORD={PULLER[1]}\n"
            f"GHCR_USERNAME={BASIC_USER}\nGHCR_PASSWORD={BASIC_PASSWORD}\n"
            "QUAY_USERNAME=\nQUAY_PASSWORD=\n"
        )
        self.cache = cache.start()
        self.port = cache.port
        self.vhosts = {f"docker.io.{DOMAIN}": "127.0.0.1", f"ghcr.io.{DOMAIN}": "127.0.0.1"}


@pytest.fixture
def world(
    make_upstream: Callable[..., UpstreamRegistry], make_cache: Callable[..., CacheServer]
) -> World:
    return World(make_upstream, make_cache)


def assert_pulled(dest: Path, pushed: PushResult) -> None:
    """Every blob the image needs arrived, byte-exact (skopeo dir: keeps names)."""
    blobs = pulled_blobs(dest)
    for image in pushed.images:
        assert image.config.digest in blobs
        assert set(image.layer_digests) <= blobs


def test_vhost_single_arch_by_tag_and_digest(world: World, tmp_path: Path) -> None:
    host = f"docker.io.{DOMAIN}:{world.port}"
    out = tmp_path / "tag"
    skopeo_copy(f"docker://{host}/library/test:1.0", out, hosts=world.vhosts)
    assert_pulled(out, world.single)
    assert pulled_manifest(out) == world.single.artifact.manifest.read()  # byte-exact
    by_digest = tmp_path / "digest"
    skopeo_copy(
        f"docker://{host}/library/test@{world.single.digest}", by_digest, hosts=world.vhosts
    )
    assert_pulled(by_digest, world.single)
    log = world.cache.log_text()
    assert "upstream=docker.io repo=library/test ref=1.0 cache=MISS" in log
    assert f"ref={world.single.digest} cache=HIT" in log
    # Credentials from .env reached the token issuer, never a log line.
    assert PULLER[1] not in log and BASIC_PASSWORD not in log
    assert world.hub.token_issuer is not None
    assert any(r.user == PULLER[0] for r in world.hub.token_issuer.requests)


def test_vhost_multi_arch_index_all_platforms(world: World, tmp_path: Path) -> None:
    host = f"docker.io.{DOMAIN}:{world.port}"
    out = tmp_path / "all"
    skopeo_copy(f"docker://{host}/library/multi:2.0", out, all_platforms=True, hosts=world.vhosts)
    assert_pulled(out, world.multi)
    assert pulled_manifest(out) == world.multi.artifact.manifest.read()
    for child in world.multi.images:
        assert pulled_manifest(out, child.digest) == child.manifest.read()
    # A child manifest by digest is served from the cache now.
    index = world.multi.artifact
    assert isinstance(index, ImageIndex)
    arm = index.for_platform("linux/arm64")
    out2 = tmp_path / "child"
    skopeo_copy(f"docker://{host}/library/multi@{arm.digest}", out2, hosts=world.vhosts)
    wait_for_log(world.cache, f"ref={arm.digest} cache=HIT")


def test_vhost_second_upstream_with_basic_auth(world: World, tmp_path: Path) -> None:
    out = tmp_path / "ghcr"
    skopeo_copy(f"docker://ghcr.io.{DOMAIN}:{world.port}/org/app:3.1", out, hosts=world.vhosts)
    assert_pulled(out, world.ghcr_image)
    wait_for_log(world.cache, "upstream=ghcr.io repo=org/app ref=3.1 cache=MISS")


def test_path_prefix_registries_conf_mirror(world: World, tmp_path: Path) -> None:
    conf = tmp_path / "registries.conf"
    conf.write_text(
        "unqualified-search-registries = []\n"
        + "".join(
            f'[[registry]]\nprefix = "{name}"\nlocation = "{name}"\n'
            f'[[registry.mirror]]\nlocation = "127.0.0.1:{world.port}/{name}"\ninsecure = true\n'
            for name in ("docker.io", "ghcr.io")
        )
    )
    out = tmp_path / "prefix-ghcr"
    skopeo_copy("docker://ghcr.io/org/app:3.1", out, registries_conf=conf)
    assert_pulled(out, world.ghcr_image)
    multi = tmp_path / "prefix-multi"
    skopeo_copy(
        f"docker://docker.io/library/multi@{world.multi.digest}",
        multi,
        registries_conf=conf,
        all_platforms=True,
    )
    assert_pulled(multi, world.multi)
    log = world.cache.log_text()
    assert "/v2/ghcr.io/org/app/manifests/3.1" in log
    assert f"/v2/docker.io/library/multi/manifests/{world.multi.digest}" in log


def test_second_pull_needs_no_upstream_blob_gets(world: World, tmp_path: Path) -> None:
    host = f"docker.io.{DOMAIN}:{world.port}"
    skopeo_copy(f"docker://{host}/library/test:1.0", tmp_path / "a", hosts=world.vhosts)
    gets = world.hub.blob_gets()
    assert gets == len(world.single.artifact.blobs)
    skopeo_copy(f"docker://{host}/library/test:1.0", tmp_path / "b", hosts=world.vhosts)
    assert world.hub.blob_gets() == gets
