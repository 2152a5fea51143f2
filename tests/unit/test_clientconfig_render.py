"""Pure client-config renderers: every output parsed back and checked for structure."""

from __future__ import annotations

import json
import tomllib
from typing import Any

import pytest
import yaml

from registry_cache.clientconfig import (
    Advertise,
    ClientConfigError,
    DaemonJsonError,
    merge_daemon_json,
    render_all_hosts_toml,
    render_daemon_json,
    render_hosts_toml,
    render_registries_conf,
    render_registries_yaml,
    resolve_advertise,
)
from registry_cache.clientconfig._quote import quote
from registry_cache.clientconfig.endpoints import (
    fallback_host,
    split_host_header,
    validate_host,
)
from registry_cache.config import Settings, build_settings
from registry_cache.errors import NameUnknown

DOMAIN = "registry.example.com"
NAMES = ["docker.io", "ghcr.io", "quay.io"]


def settings(**flags: Any) -> Settings:
    upstreams = flags.pop("upstreams", ())
    return build_settings(environ={}, dotenv=None, flags=flags, upstream_flags=upstreams)


def vhost() -> tuple[Settings, Advertise]:
    s = settings(domain=DOMAIN)
    return s, resolve_advertise(s, fallback="ignored")


def single(host: str = "cache.lan", **kw: Any) -> tuple[Settings, Advertise]:
    s = settings(**kw.pop("flags", {}))
    return s, resolve_advertise(s, host=host, fallback="ignored", **kw)


# --- endpoints ---------------------------------------------------------------------------


def test_style_resolution() -> None:
    s = settings(domain=DOMAIN)
    assert resolve_advertise(s, fallback="h").style == "vhost"
    assert resolve_advertise(s, host="cache.lan", fallback="h").style == "single"
    plain = settings()
    assert resolve_advertise(plain, fallback="h").style == "single"
    with pytest.raises(ClientConfigError, match="needs a domain"):
        resolve_advertise(plain, fallback="h", default_style="vhost")
    with pytest.raises(ClientConfigError, match="needs a domain"):
        resolve_advertise(plain, style="vhost", fallback="h")
    with pytest.raises(ClientConfigError, match="single only"):
        resolve_advertise(s, style="vhost", host="cache.lan", fallback="h")
    with pytest.raises(ClientConfigError, match="https"):
        resolve_advertise(s, fallback="h", ca_file="/ca.pem")


def test_port_defaults_to_listen_port() -> None:
    s = settings(listen="127.0.0.1:5050")
    adv = resolve_advertise(s, fallback=fallback_host(s, "machine"))
    assert (adv.host, adv.port) == ("127.0.0.1", 5050)
    wildcard = settings()
    assert fallback_host(wildcard, "machine") == "machine"
    with pytest.raises(ClientConfigError, match="port"):
        resolve_advertise(settings(listen="127.0.0.1:0"), fallback="h")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Cache.LAN", "cache.lan"),
        ("10.0.0.5", "10.0.0.5"),
        ("[fd00::1]", "fd00::1"),
        ("fd00::1", "fd00::1"),
        ("registry-cache", "registry-cache"),
    ],
)
def test_validate_host(value: str, expected: str) -> None:
    assert validate_host(value) == expected


@pytest.mark.parametrize("value", ["", "a b", "x/y", 'a"b', "-bad", "host:5000", "[zz::]"])
def test_validate_host_rejects(value: str) -> None:
    with pytest.raises(ClientConfigError):
        validate_host(value)


def test_split_host_header() -> None:
    assert split_host_header("cache.lan:5001") == ("cache.lan", 5001)
    assert split_host_header("cache.lan") == ("cache.lan", None)
    assert split_host_header("[::1]:5000") == ("::1", 5000)
    with pytest.raises(ClientConfigError):
        split_host_header("cache.lan:99999")


def test_quote_round_trips_in_yaml_and_toml() -> None:
    nasty = 'C:\\ca "root".pem\n\t\x7f\u2028é\U0001f600'
    assert yaml.safe_load(f"v: {quote(nasty)}")["v"] == nasty
    assert tomllib.loads(f"v = {quote(nasty)}")["v"] == nasty


# --- registries.yaml ---------------------------------------------------------------------


def test_registries_yaml_vhost_seed_shape() -> None:
    doc = yaml.safe_load(render_registries_yaml(*vhost()))
    assert list(doc["mirrors"]) == NAMES
    for name in NAMES:
        assert doc["mirrors"][name] == {"endpoint": [f"http://{name}.{DOMAIN}:5000"]}
        # keyed by the endpoint host:port, the field k3s reads (not the seed's tls.insecure)
        assert doc["configs"][f"{name}.{DOMAIN}:5000"] == {"tls": {"insecure_skip_verify": True}}
    assert set(doc) == {"mirrors", "configs"}


def test_registries_yaml_single() -> None:
    doc = yaml.safe_load(render_registries_yaml(*single(port=5001)))
    assert {n: m["endpoint"] for n, m in doc["mirrors"].items()} == {
        n: ["http://cache.lan:5001"] for n in NAMES
    }
    assert doc["configs"] == {"cache.lan:5001": {"tls": {"insecure_skip_verify": True}}}


def test_registries_yaml_https() -> None:
    text = render_registries_yaml(*single(scheme="https", ca_file="/etc/ssl/my ca.pem"))
    doc = yaml.safe_load(text)
    assert doc["mirrors"]["ghcr.io"]["endpoint"] == ["https://cache.lan:5000"]
    assert doc["configs"] == {"cache.lan:5000": {"tls": {"ca_file": "/etc/ssl/my ca.pem"}}}
    trusted = yaml.safe_load(render_registries_yaml(*single(scheme="https")))
    assert "configs" not in trusted
    skip = yaml.safe_load(render_registries_yaml(*single(scheme="https", skip_verify=True)))
    assert skip["configs"]["cache.lan:5000"]["tls"] == {"insecure_skip_verify": True}


def test_registries_yaml_ipv6_and_extra_upstream() -> None:
    s = settings(upstreams=["registry.k8s.io=https://registry.k8s.io"])
    adv = resolve_advertise(s, host="fd00::5", fallback="x")
    doc = yaml.safe_load(render_registries_yaml(s, adv))
    assert doc["mirrors"]["registry.k8s.io"]["endpoint"] == ["http://[fd00::5]:5000"]
    assert list(doc["configs"]) == ["[fd00::5]:5000"]


# --- containerd hosts.toml -----------------------------------------------------------------


def test_hosts_toml_always_has_a_host_table() -> None:
    for s, adv in (vhost(), single()):
        files = render_all_hosts_toml(s, adv)
        assert list(files) == NAMES
        for name, text in files.items():
            doc = tomllib.loads(text)
            assert doc["server"] == s.upstreams[name].url
            assert len(doc["host"]) == 1
            [(url, table)] = doc["host"].items()
            assert url.startswith("http://")
            assert table == {"capabilities": ["pull", "resolve"]}  # no TLS keys for http


def test_hosts_toml_docker_hub_server_and_vhost() -> None:
    doc = tomllib.loads(render_hosts_toml(*vhost(), "docker.io"))
    assert doc["server"] == "https://registry-1.docker.io"
    assert list(doc["host"]) == [f"http://docker.io.{DOMAIN}:5000"]


def test_hosts_toml_https_options() -> None:
    s, adv = single(scheme="https", ca_file="/etc/ca.pem", skip_verify=True)
    doc = tomllib.loads(render_hosts_toml(s, adv, "quay.io"))
    assert doc["host"]["https://cache.lan:5000"] == {
        "capabilities": ["pull", "resolve"],
        "ca": "/etc/ca.pem",
        "skip_verify": True,
    }


def test_hosts_toml_unknown_registry() -> None:
    with pytest.raises(NameUnknown):
        render_hosts_toml(*vhost(), "example.org")


# --- daemon.json ---------------------------------------------------------------------------


def test_daemon_json_vhost_and_single() -> None:
    assert json.loads(render_daemon_json(*vhost())) == {
        "registry-mirrors": [f"http://docker.io.{DOMAIN}:5000"],
        "insecure-registries": [f"docker.io.{DOMAIN}:5000"],
    }
    assert json.loads(render_daemon_json(*single())) == {
        "registry-mirrors": ["http://cache.lan:5000"],
        "insecure-registries": ["cache.lan:5000"],
    }
    assert json.loads(render_daemon_json(*single(scheme="https"))) == {
        "registry-mirrors": ["https://cache.lan:5000"]
    }


def test_daemon_json_refuses_a_host_that_does_not_reach_docker_hub() -> None:
    with pytest.raises(ClientConfigError, match=r"reach ghcr\.io"):
        render_daemon_json(*single(flags={"default_upstream": "ghcr.io"}))
    with pytest.raises(ClientConfigError, match="not a configured upstream"):
        render_daemon_json(
            *single(flags={"upstreams": ["docker.io=none"], "default_upstream": "ghcr.io"})
        )
    # a name under our domain that is no upstream: the cache answers 404 on it
    s = settings(domain=DOMAIN)
    adv = resolve_advertise(s, host=f"cache.{DOMAIN}", fallback="x")
    with pytest.raises(ClientConfigError, match="no upstream"):
        render_daemon_json(s, adv)


def test_merge_keeps_other_keys_and_dedupes() -> None:
    existing = json.dumps(
        {
            "log-driver": "journald",
            "registry-mirrors": ["https://mirror.gcr.io", "http://cache.lan:5000"],
            "insecure-registries": ["old:5000", "old:5000"],
            "features": {"buildkit": True},
        }
    )
    merged = json.loads(merge_daemon_json(existing, *single()))
    assert merged == {
        "log-driver": "journald",
        "registry-mirrors": ["http://cache.lan:5000", "https://mirror.gcr.io"],
        "insecure-registries": ["cache.lan:5000", "old:5000"],
        "features": {"buildkit": True},
    }
    again = merge_daemon_json(merge_daemon_json(existing, *single()), *single())
    assert json.loads(again) == merged


def test_merge_empty_is_render() -> None:
    s, adv = single()
    assert merge_daemon_json("", s, adv) == render_daemon_json(s, adv)
    assert merge_daemon_json("  \n", s, adv) == render_daemon_json(s, adv)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a": 1,', "invalid JSON at line 1"),
        ("[1, 2]", "JSON object"),
        ('{"registry-mirrors": "x"}', "list of strings"),
        ('{"insecure-registries": [1]}', "list of strings"),
    ],
)
def test_merge_refuses_invalid(text: str, message: str) -> None:
    with pytest.raises(DaemonJsonError, match=message):
        merge_daemon_json(text, *single())


# --- registries.conf -------------------------------------------------------------------------


def test_registries_conf_single_uses_path_prefix() -> None:
    doc = tomllib.loads(render_registries_conf(*single()))
    assert [r["prefix"] for r in doc["registry"]] == NAMES
    for reg in doc["registry"]:
        assert reg["location"] == reg["prefix"]
        assert reg["mirror"] == [{"location": f"cache.lan:5000/{reg['prefix']}", "insecure": True}]


def test_registries_conf_vhost_has_no_prefix() -> None:
    doc = tomllib.loads(render_registries_conf(*vhost()))
    for reg in doc["registry"]:
        assert reg["mirror"] == [{"location": f"{reg['prefix']}.{DOMAIN}:5000", "insecure": True}]


def test_registries_conf_https_trusted_is_secure() -> None:
    doc = tomllib.loads(render_registries_conf(*single(scheme="https")))
    assert all("insecure" not in reg["mirror"][0] for reg in doc["registry"])


def test_registries_conf_refuses_a_virtual_host_as_single_host() -> None:
    s = settings(domain=DOMAIN)
    adv = resolve_advertise(s, host=f"ghcr.io.{DOMAIN}", fallback="x")
    with pytest.raises(ClientConfigError, match="Host header"):
        render_registries_conf(s, adv)
