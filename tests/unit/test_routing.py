"""Routing: ns → Host → path prefix → default, from a closed set (protocol.md §3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry_cache.config import Settings, build_settings
from registry_cache.errors import ConfigError, Denied, NameInvalid, NameUnknown
from registry_cache.routing import host_upstream, route


def settings(**flags: object) -> Settings:
    return build_settings(environ={}, dotenv=None, flags=flags)


def test_ns_wins_over_host_and_prefix() -> None:
    s = settings(domain="reg.example.com")
    r = route(s, "ghcr.io/org/img", ns="quay.io", host="docker.io.reg.example.com:5000")
    assert (r.upstream.name, r.repository, r.via) == ("quay.io", "ghcr.io/org/img", "ns")


def test_unknown_ns_is_name_unknown() -> None:
    with pytest.raises(NameUnknown):
        route(settings(), "pause", ns="registry.k8s.io")


def test_host_with_domain_and_port() -> None:
    s = settings(domain="reg.example.com")
    r = route(s, "org/img", host="ghcr.io.reg.example.com:5000")
    assert (r.upstream.name, r.repository, r.via) == ("ghcr.io", "org/img", "host")


def test_host_under_domain_for_unconfigured_registry_is_404() -> None:
    s = settings(domain="reg.example.com")
    with pytest.raises(NameUnknown):
        route(s, "pause", host="registry.k8s.io.reg.example.com:5000")


def test_host_not_under_domain_falls_through_to_default() -> None:
    s = settings(domain="reg.example.com")
    r = route(s, "alpine", host="127.0.0.1:5000")
    assert (r.upstream.name, r.repository, r.via) == ("docker.io", "library/alpine", "default")


def test_host_without_domain_matches_prefix_label() -> None:
    s = settings()
    assert host_upstream(s, "quay.io.localhost:5000") is s.upstreams["quay.io"]
    assert host_upstream(s, "cache.local:5000") is None
    assert host_upstream(s, "[::1]:5000") is None


def test_path_prefix() -> None:
    r = route(settings(), "ghcr.io/org/img", host="cache:5000")
    assert (r.upstream.name, r.repository, r.prefix, r.via) == (
        "ghcr.io",
        "org/img",
        "ghcr.io/",
        "path",
    )


def test_path_prefix_docker_hub_gets_library() -> None:
    r = route(settings(), "docker.io/nginx")
    assert (r.upstream.name, r.repository) == ("docker.io", "library/nginx")


def test_library_prefix_only_for_docker_hub() -> None:
    assert route(settings(), "alpine", ns="quay.io").repository == "alpine"
    assert route(settings(), "alpine", ns="docker.io").repository == "library/alpine"


def test_default_none_means_404() -> None:
    s = settings(default_upstream="none")
    with pytest.raises(NameUnknown):
        route(s, "alpine")


def test_invalid_name_is_400() -> None:
    with pytest.raises(NameInvalid):
        route(settings(), "Bad/Name")


def test_never_routes_to_an_unconfigured_prefix() -> None:
    # "registry.k8s.io/pause" is not a configured upstream: it is a docker.io repo name.
    r = route(settings(), "registry.k8s.io/pause")
    assert r.upstream.name == "docker.io"


def test_allow_and_deny_patterns_per_upstream(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "upstreams:\n  docker.io:\n    allow: ['library/*', 'myorg/*']\n    deny: myorg/secret-*\n"
    )
    s = build_settings(config_file=config, environ={}, dotenv=None)
    assert route(s, "alpine").repository == "library/alpine"  # matched after library/
    assert route(s, "myorg/app").repository == "myorg/app"
    for name in ("myorg/secret-db", "other/app"):
        with pytest.raises(Denied, match="is not served by this cache"):
            route(s, name)
    # Other upstreams are unrestricted; a denied repo is a 403 whichever way it is routed.
    assert route(s, "ghcr.io/any/thing").repository == "any/thing"
    with pytest.raises(Denied):
        route(s, "myorg/secret-db", ns="docker.io")


def test_empty_pattern_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("upstreams:\n  docker.io:\n    deny: ['']\n")
    with pytest.raises(ConfigError, match=r"upstreams\.docker\.io\.deny"):
        build_settings(config_file=config, environ={}, dotenv=None)
