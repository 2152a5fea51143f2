"""Request → upstream, from a closed set.

Order: containerd's ``ns=`` → Host ``<upstream>.<domain>`` → path prefix
``/v2/<upstream>/<repo>`` → the default upstream. Every key is looked up among the
configured upstreams: the cache never dials a host because a client named it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import Settings, UpstreamConfig
from .errors import Denied, NameUnknown
from .reference import docker_hub_name, validate_name


@dataclass(frozen=True, slots=True)
class Route:
    upstream: UpstreamConfig
    repository: str  # the name upstream knows (``library/`` applied)
    prefix: str  # path prefix the client used ("" or "ghcr.io/"), for Link headers
    via: str  # ns | host | path | default


def host_upstream(settings: Settings, host_header: str | None) -> UpstreamConfig | None:
    """The upstream a virtual host names; NAME_UNKNOWN for an unconfigured one under our domain."""
    if not host_header:
        return None
    host = _strip_port(host_header.strip().lower()).rstrip(".")
    if settings.domain:
        suffix = "." + settings.domain
        if not host.endswith(suffix):
            return None
        label = host[: -len(suffix)]
        upstream = settings.upstreams.get(label)
        if upstream is None:
            raise NameUnknown(f"registry {label!r} is not mirrored by this cache")
        return upstream
    # No domain configured: any Host that starts with "<upstream>." (longest name wins).
    best: UpstreamConfig | None = None
    for name, upstream in settings.upstreams.items():
        if host.startswith(name + ".") and (best is None or len(name) > len(best.name)):
            best = upstream
    return best


def _strip_port(host: str) -> str:
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def route(
    settings: Settings, name: str, *, ns: str | None = None, host: str | None = None
) -> Route:
    """Pick the upstream for a request on repository path ``name``."""
    if ns is not None:
        upstream = settings.upstreams.get(ns.strip().lower())
        if upstream is None:
            raise NameUnknown(f"registry {ns[:100]!r} is not mirrored by this cache")
        return _route(upstream, name, "", "ns")
    by_host = host_upstream(settings, host)
    if by_host is not None:
        return _route(by_host, name, "", "host")
    first, sep, rest = name.partition("/")
    if sep and first in settings.upstreams:
        return _route(settings.upstreams[first], rest, first + "/", "path")
    if settings.default_upstream is None:
        raise NameUnknown(f"no upstream for {name[:200]!r} (no default upstream configured)")
    return _route(settings.upstreams[settings.default_upstream], name, "", "default")


def _route(upstream: UpstreamConfig, name: str, prefix: str, via: str) -> Route:
    validate_name(name, upstream.name)
    if upstream.uses_library_prefix:
        name = docker_hub_name(name)
    if not upstream.serves(name):
        # Before anything is looked up or fetched: the cache's credentials never
        # reach a repository the operator kept out (e.g. private ones).
        raise Denied(f"repository {name} of {upstream.name} is not served by this cache")
    return Route(upstream=upstream, repository=name, prefix=prefix, via=via)
