"""Image references, addresses and platform selection of the benchmark tools."""

from __future__ import annotations

import pytest

from registry_cache.bench.pullclient import parse_platform, select_platform, split_reference
from registry_cache.bench.refs import (
    RefError,
    base_url,
    cache_repository,
    client_reference,
    default_upstream_url,
    host_port,
    parse_image,
    path_style,
    resolve_style,
    virtual_host_upstream,
)
from registry_cache.bench.registry import NotFound

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("repo", "registry", "repository", "tag"),
    [
        ("alpine", "docker.io", "library/alpine", "latest"),
        ("alpine:3.19", "docker.io", "library/alpine", "3.19"),
        ("library/alpine", "docker.io", "library/alpine", "latest"),
        ("bitnami/redis:7", "docker.io", "bitnami/redis", "7"),
        ("docker.io/alpine", "docker.io", "library/alpine", "latest"),
        ("index.docker.io/library/nginx:1", "docker.io", "library/nginx", "1"),
        ("ghcr.io/org/img", "ghcr.io", "org/img", "latest"),
        ("quay.io/prometheus/node-exporter:v1", "quay.io", "prometheus/node-exporter", "v1"),
        ("localhost:5000/foo", "localhost:5000", "foo", "latest"),
        ("localhost/foo/bar:x", "localhost", "foo/bar", "x"),
        ("registry.k8s.io/pause:3.9", "registry.k8s.io", "pause", "3.9"),
    ],
)
def test_parse_image_like_docker(repo: str, registry: str, repository: str, tag: str) -> None:
    image = parse_image(repo)
    assert (image.registry, image.repository, image.tag) == (registry, repository, tag)


def test_explicit_tag_wins_and_digest_is_kept() -> None:
    assert parse_image("alpine:3.18", "3.19").tag == "3.19"
    image = parse_image(f"ghcr.io/org/img@{DIGEST}")
    assert image.digest == DIGEST
    assert image.reference == DIGEST
    assert str(image) == f"ghcr.io/org/img@{DIGEST}"
    assert str(parse_image("alpine")) == "docker.io/library/alpine:latest"


@pytest.mark.parametrize("bad", ["", "UPPER/case", "a//b", "alpine:bad tag", "x@sha256:"])
def test_parse_image_rejects(bad: str) -> None:
    with pytest.raises(RefError):
        parse_image(bad)


def test_default_upstream_urls() -> None:
    assert default_upstream_url("docker.io") == "https://registry-1.docker.io"
    assert default_upstream_url("ghcr.io") == "https://ghcr.io"
    assert default_upstream_url("quay.io") == "https://quay.io"
    assert default_upstream_url("registry.k8s.io") == "https://registry.k8s.io"


def test_base_url_and_host_port() -> None:
    assert base_url("127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert base_url("cache.lan:5000", "https") == "https://cache.lan:5000"
    assert base_url("https://cache.lan:5000/some/path") == "https://cache.lan:5000"
    assert host_port("http://127.0.0.1:5000") == "127.0.0.1:5000"
    for bad in ("", "ftp://x", "http://", "host:notaport"):
        with pytest.raises(RefError):
            base_url(bad)


def test_cache_repository_styles() -> None:
    image = parse_image("alpine:3.19")
    assert cache_repository(image, "prefix") == "docker.io/library/alpine"
    assert cache_repository(image, "plain") == "library/alpine"
    assert cache_repository(parse_image("ghcr.io/org/img"), "prefix") == "ghcr.io/org/img"
    assert path_style("plain") == "plain"
    with pytest.raises(RefError):
        path_style("vhost")


@pytest.mark.parametrize(
    ("cache_host", "repo", "style", "repository"),
    [
        # The seed's invocation: a virtual host of Docker Hub asks for the plain name.
        ("http://docker.io.example.test:5000", "library/nginx", "host", "library/nginx"),
        ("http://DOCKER.IO.example.test.:5000", "nginx", "host", "library/nginx"),
        ("http://ghcr.io.localhost:5000", "ghcr.io/org/img", "host", "org/img"),
        ("http://127.0.0.1:5000", "library/nginx", "prefix", "docker.io/library/nginx"),
        ("http://cache.lan:5000", "ghcr.io/org/img", "prefix", "ghcr.io/org/img"),
        # "docker.io" itself, or a host merely containing the name, is no virtual host.
        ("http://docker.io:5000", "nginx", "prefix", "docker.io/library/nginx"),
        ("http://my-docker.io.lan:5000", "nginx", "prefix", "docker.io/library/nginx"),
    ],
)
def test_auto_style_follows_virtual_hosts(
    cache_host: str, repo: str, style: str, repository: str
) -> None:
    image = parse_image(repo)
    chosen = resolve_style("auto", cache_host, image)
    assert chosen == style
    assert cache_repository(image, chosen) == repository


def test_explicit_style_wins_and_foreign_virtual_host_is_refused() -> None:
    image = parse_image("nginx")
    assert resolve_style("prefix", "http://docker.io.x:5000", image) == "prefix"
    assert resolve_style("plain", "http://127.0.0.1:5000", image) == "plain"
    with pytest.raises(RefError, match=r"virtual host of quay\.io.*docker\.io"):
        resolve_style("auto", "http://quay.io.example.test:5000", image)
    # The longest registry name wins, as in the cache's own Host routing.
    assert virtual_host_upstream("http://a.b.c.x:1", ["a.b", "a.b.c"]) == "a.b.c"


def test_client_reference() -> None:
    image = parse_image("alpine:3.19")
    assert (
        client_reference("127.0.0.1:5000", "docker.io/library/alpine", image, by_digest=False)
        == "127.0.0.1:5000/docker.io/library/alpine:3.19"
    )
    with pytest.raises(RefError):
        client_reference("h", "r", image, by_digest=True)
    pinned = parse_image(f"alpine@{DIGEST}")
    assert client_reference("h:1", "library/alpine", pinned, by_digest=True) == (
        f"h:1/library/alpine@{DIGEST}"
    )


def test_split_reference() -> None:
    assert split_reference("library/alpine:3.19") == ("library/alpine", "3.19")
    assert split_reference(f"docker.io/library/alpine@{DIGEST}") == (
        "docker.io/library/alpine",
        DIGEST,
    )
    assert split_reference("library/alpine") == ("library/alpine", "latest")


def test_parse_platform() -> None:
    assert parse_platform("linux/amd64") == ("linux", "amd64", None)
    assert parse_platform("linux/arm/v7") == ("linux", "arm", "v7")
    for bad in ("linux", "linux/", "a/b/c/d"):
        with pytest.raises(ValueError):
            parse_platform(bad)


INDEX = {
    "manifests": [
        {
            "digest": "sha256:" + "1" * 64,
            "size": 1,
            "platform": {"os": "linux", "architecture": "amd64"},
        },
        {
            "digest": "sha256:" + "2" * 64,
            "size": 2,
            "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
        },
        {
            "digest": "sha256:" + "3" * 64,
            "size": 3,
            "platform": {"os": "linux", "architecture": "arm", "variant": "v7"},
        },
        {
            "digest": "sha256:" + "4" * 64,
            "size": 4,
            "platform": {"os": "unknown", "architecture": "unknown"},
        },
    ]
}


@pytest.mark.parametrize(
    ("platform", "digit"),
    [
        ("linux/amd64", "1"),
        ("linux/arm64", "2"),
        ("linux/arm64/v8", "2"),
        ("linux/arm/v7", "3"),
        ("linux/arm", "3"),
    ],
)
def test_select_platform(platform: str, digit: str) -> None:
    descriptor, _ = select_platform(INDEX, platform)
    assert descriptor.digest == "sha256:" + digit * 64


def test_select_platform_missing_names_what_exists() -> None:
    with pytest.raises(NotFound) as info:
        select_platform(INDEX, "windows/amd64")
    message = str(info.value)
    assert "windows/amd64" in message
    assert "linux/arm64/v8" in message
    assert "unknown/unknown" not in message
