"""k3s's ``registries.yaml`` → containerd ``hosts.toml`` conversion, re-done in Python.

k3s does not hand ``registries.yaml`` to containerd: on every agent start it
renders one ``certs.d/<registry>/hosts.toml`` per registry and points containerd's
``config_path`` at that directory. Tests of our generated ``registries.yaml`` must
go through the same conversion to prove what a k3s node would really do.

Followed: k3s ``pkg/agent/containerd/config.go`` at k3s-io/k3s commit 06ea261c
(``getHostConfigs``, ``normalizeEndpointAddress``, ``defaultHostConfig``,
``configForHost``, ``endpointURLEqual``, ``endpointHasConfig``: the "default
endpoint" generation of that code, where every endpoint URL carries ``/v2`` and
``server`` is the registry's own ``https://<host>/v2``), and the
``HostsTomlTemplate`` of the same generation (``HostConfig{Default, Program,
Endpoints}``; text as reproduced in the xiaods/k8e fork of k3s,
pkg/agent/templates/templates.go at cc08bfd1). The embedded registry (spegel) is
off, so there is no ``mirrorAddr`` special case.

Contract:
- ``host_configs(registries_yaml_text, no_default_endpoint=False)`` → registry
  directory name → ``HostConfig`` (``*`` becomes ``_default``), like
  ``getHostConfigs``.
- ``render_hosts_toml(config)`` → the file text k3s writes.
- ``hosts_tomls(text, server_override=None)`` → directory name → text. With
  ``server_override`` (registry → URL) the ``server`` of those registries is
  replaced before rendering: tests must never leave a public registry as the
  fallback, so they point it at the local upstream playing that registry; every
  other line is k3s's.
- ``write_hosts_dir(dir, files)`` writes ``DIR/<registry>/hosts.toml``.
"""

from __future__ import annotations

import ipaddress
import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PROGRAM = "k3s"
DOCKER_HUB = "docker.io"
DOCKER_HUB_HOST = "registry-1.docker.io"


@dataclass
class RegistryEndpoint:
    """templates.RegistryEndpoint: ``url`` None is Go's nil, "" an empty url.URL{}."""

    url: str | None
    config: dict[str, Any] = field(default_factory=dict)  # wharfie RegistryConfig
    override_path: bool = False
    rewrites: dict[str, str] = field(default_factory=dict)

    @property
    def tls(self) -> dict[str, Any] | None:
        tls = self.config.get("tls")
        return tls if isinstance(tls, dict) else None

    def has_config(self) -> bool:  # endpointHasConfig
        return bool(
            self.override_path
            or self.config.get("auth") is not None
            or self.tls is not None
            or self.rewrites
        )


@dataclass
class HostConfig:
    """templates.HostConfig."""

    default: RegistryEndpoint | None
    endpoints: list[RegistryEndpoint] = field(default_factory=list)
    program: str = PROGRAM


# -- containerd's docker.DefaultHost / docker.IsLocalhost --------------------------------
def default_host(host: str) -> str:
    return DOCKER_HUB_HOST if host == DOCKER_HUB else host


def is_localhost(host: str) -> bool:
    hostname = urllib.parse.urlsplit("//" + host).hostname or host
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def normalize_endpoint_address(endpoint: str) -> tuple[str, str, bool]:
    """(registry name, endpoint URL, override_path), like k3s's normalizeEndpointAddress."""
    if "://" not in endpoint:
        endpoint = "//" + endpoint
    parts = urllib.parse.urlsplit(endpoint)
    scheme, host, path = parts.scheme, parts.netloc, parts.path
    port = parts.port
    if not scheme:
        # localhost on odd ports defaults to http (no embedded registry address here)
        scheme = "http" if is_localhost(host) and port not in (None, 443) else "https"
    registry = host
    host = default_host(registry)
    if host == DOCKER_HUB_HOST:
        registry = DOCKER_HUB
    if path in ("", "/", "/v2"):
        return registry, f"{scheme}://{host}/v2", False
    return registry, f"{scheme}://{host}{path}", True


def config_for_host(configs: Mapping[str, Any], host: str) -> dict[str, Any]:
    modified = default_host(host)
    if modified != host and modified in configs:
        return dict(configs[modified] or {})
    return dict(configs.get(host) or {})


def default_host_config(host: str, config: Mapping[str, Any]) -> HostConfig:
    _, url, _ = normalize_endpoint_address(host)
    return HostConfig(
        default=RegistryEndpoint(url=None if host == "*" else url, config=dict(config))
    )


def host_configs(
    registries_yaml: str, *, no_default_endpoint: bool = False
) -> dict[str, HostConfig]:
    """getHostConfigs over the parsed ``registries.yaml``."""
    doc = yaml.safe_load(registries_yaml) or {}
    mirrors: dict[str, Any] = doc.get("mirrors") or {}
    configs: dict[str, Any] = doc.get("configs") or {}
    hosts: dict[str, HostConfig] = {}

    # create config for default endpoints
    for host, config in configs.items():
        hosts["_default" if host == "*" else host] = default_host_config(host, config or {})

    # create endpoints for mirrors
    for host, mirror_or_none in mirrors.items():
        mirror = mirror_or_none or {}
        config = hosts.get(host)
        if config is None:
            config = default_host_config(host, config_for_host(configs, host))
            if no_default_endpoint:
                config.default = None
            elif host == "*":
                config.default = RegistryEndpoint(url="")
        seen: set[str] = set()
        endpoints: list[str] = mirror.get("endpoint") or []
        for i, endpoint in enumerate(endpoints):
            registry_name, url, override = normalize_endpoint_address(endpoint)
            if url in seen:
                continue
            seen.add(url)
            ep = RegistryEndpoint(
                url=url,
                config=config_for_host(configs, registry_name),
                override_path=override,
                rewrites=dict(mirror.get("rewrite") or {}),
            )
            default_url = config.default.url if config.default is not None else None
            if i + 1 == len(endpoints) and (default_url or "") == url:
                config.default = ep  # the last endpoint is the default one: move it there
            else:
                config.endpoints.append(ep)
        hosts["_default" if host == "*" else host] = config

    # hosts whose config leaves only a plain default endpoint are not written
    return {
        host: config
        for host, config in hosts.items()
        if config.endpoints or (config.default is not None and config.default.has_config())
    }


# -- templates.HostsTomlTemplate -----------------------------------------------------------
def _q(value: Any) -> str:
    """Go's ``printf "%q"`` for the plain strings used here."""
    return json.dumps(str(value))


def _tls_lines(tls: Mapping[str, Any], indent: str) -> str:
    out = ""
    if tls.get("ca_file"):
        out += f"\n{indent}ca = [{_q(tls['ca_file'])}]"
    if tls.get("cert_file") or tls.get("key_file"):
        cert, key = _q(tls.get("cert_file", "")), _q(tls.get("key_file", ""))
        out += f"\n{indent}client = [[{cert}, {key}]]"
    if tls.get("insecure_skip_verify"):
        out += f"\n{indent}skip_verify = true"
    return out + "\n"


def render_hosts_toml(config: HostConfig) -> str:
    """The text k3s's HostsTomlTemplate renders for ``config`` (whitespace included)."""
    out = f"# File generated by {config.program}. DO NOT EDIT.\n"
    default = config.default
    if default is not None:
        if default.url is not None:
            out += f'\nserver = "{default.url}"\ncapabilities = ["pull", "resolve", "push"]\n'
        if default.tls is not None:
            out += _tls_lines(default.tls, "")
        out += "\n"
    out += "\n[host]\n"
    for ep in config.endpoints:
        out += f'[host."{ep.url}"]\n  capabilities = ["pull", "resolve"]'
        if ep.override_path:
            out += "\n  override_path = true"
        if ep.tls is not None:
            out += _tls_lines(ep.tls, "  ")
        if ep.rewrites:
            out += f'\n  [host."{ep.url}".rewrite]'
            for pattern in sorted(ep.rewrites):
                out += f'\n    "{pattern}" = "{ep.rewrites[pattern]}"'
            out += "\n"
        out += "\n"
    return out


def hosts_tomls(
    registries_yaml: str,
    *,
    no_default_endpoint: bool = False,
    server_override: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Registry directory → hosts.toml text, as k3s would write them."""
    configs = host_configs(registries_yaml, no_default_endpoint=no_default_endpoint)
    for registry, url in (server_override or {}).items():
        config = configs.get(registry)
        if config is not None and config.default is not None:
            config.default.url = normalize_endpoint_address(url)[1]
    return {host: render_hosts_toml(config) for host, config in configs.items()}


def write_hosts_dir(directory: Path, files: Mapping[str, str]) -> Path:
    """Write ``DIR/<registry>/hosts.toml`` for each entry (k3s on Linux keeps ``host:port``)."""
    for host, text in files.items():
        target = directory / host / "hosts.toml"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return directory
