"""Where clients should reach the cache: one endpoint per configured upstream.

Two styles (protocol.md section 3):

``vhost``
    every upstream has its own name, ``<upstream>.<domain>:<port>`` (a DNS
    wildcard points them all at the cache); the cache routes by the Host header,
    so this works for every client, even those that send no ``ns=`` and no path
    prefix (Docker's ``registry-mirrors``).
``single``
    one name for everything, ``<host>:<port>``; routing relies on containerd's
    ``ns=`` query parameter, or on a path prefix (``registries.conf`` mirrors),
    or on the default upstream (Docker daemon).

Which host a ``single`` endpoint advertises is decided by the caller (CLI: an
explicit ``--host``, else the listen address unless it is a wildcard, else the
machine's host name; HTTP: ``?host=``, else the request's Host header), so that
everything here stays pure.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

from ..config import Settings
from ..errors import ConfigError, NameUnknown
from ..routing import host_upstream

Style = Literal["vhost", "single"]
Scheme = Literal["http", "https"]
STYLES: tuple[Style, ...] = ("vhost", "single")
SCHEMES: tuple[Scheme, ...] = ("http", "https")
# Listen addresses that name no host a client could dial.
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})
_HOSTNAME_RE = re.compile(
    r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*\.?"
)


class ClientConfigError(ConfigError):
    """The requested client configuration cannot be made; one line, names the option."""


@dataclass(frozen=True, slots=True)
class Advertise:
    """How clients reach the cache (already resolved and validated)."""

    style: Style
    host: str  # the single endpoint's host; vhost names come from the domain instead
    port: int
    scheme: Scheme = "http"
    ca_file: str | None = None  # a path on the client machine, never read here
    skip_verify: bool = False

    @property
    def insecure(self) -> bool:
        """Clients must be told to accept this endpoint: plain HTTP or an unverified cert."""
        return self.scheme == "http" or self.skip_verify


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One upstream as clients should reach it through the cache."""

    registry: str  # the upstream's name, what clients call the registry ("docker.io")
    server: str  # the upstream's real URL ("https://registry-1.docker.io")
    host: str
    port: int
    scheme: Scheme
    vhost: bool

    @property
    def authority(self) -> str:
        return authority(self.host, self.port)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.authority}"

    @property
    def mirror_location(self) -> str:
        """``registries.conf`` mirror location: a virtual host needs no path prefix.

        (A prefix under a virtual host would be wrong: the Host header wins over
        the path, so ``/v2/ghcr.io/x`` would be asked of ghcr.io as ``ghcr.io/x``.)
        """
        return self.authority if self.vhost else f"{self.authority}/{self.registry}"


def authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def validate_host(value: str) -> str:
    """A DNS name or an IP address (IPv6 with or without brackets), lower-cased."""
    host = value.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host:
        try:
            return str(ipaddress.IPv6Address(host))
        except ValueError:
            pass
    elif host and len(host) <= 253 and _HOSTNAME_RE.fullmatch(host):
        return host.rstrip(".")
    raise ClientConfigError(f"invalid host {value[:100]!r} (expected a DNS name or IP address)")


def validate_port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ClientConfigError(f"invalid port {value} (1-65535; pass --port)")
    return value


def split_host_header(value: str) -> tuple[str, int | None]:
    """``cache.lan:5000`` / ``[::1]:5000`` / ``cache.lan`` → (host, port or None)."""
    value = value.strip()
    match = re.fullmatch(r"(\[[^\]]*\]|[^:\[\]]*)(?::(\d{1,5}))?", value)
    if match is None:
        raise ClientConfigError(f"invalid host {value[:100]!r}")
    port = int(match.group(2)) if match.group(2) else None
    return validate_host(match.group(1)), None if port is None else validate_port(port)


def fallback_host(settings: Settings, hostname: str) -> str:
    """The listen host when clients could dial it, else ``hostname`` (the machine's name)."""
    return hostname if settings.host in WILDCARD_HOSTS else settings.host


def resolve_advertise(
    settings: Settings,
    *,
    style: Style | None = None,
    host: str | None = None,
    fallback: str,
    port: int | None = None,
    scheme: Scheme = "http",
    ca_file: str | None = None,
    skip_verify: bool = False,
    default_style: Style | None = None,
) -> Advertise:
    """Turn options into an :class:`Advertise`, or raise one clear ``ClientConfigError``.

    Precedence for the advertised name: an explicit ``host`` (forces ``single``),
    else the vhost names ``<upstream>.<domain>`` when a domain is configured,
    else ``fallback``. ``default_style`` replaces the domain test when no style
    and no host are given (the ``registries`` command defaults to ``vhost``).
    """
    if scheme not in SCHEMES:
        raise ClientConfigError(f"invalid scheme {scheme!r} (http or https)")
    if scheme == "http" and (ca_file or skip_verify):
        raise ClientConfigError("a CA file or skip-verify only applies to https (add --https)")
    if style is None and host:
        style = "single"
    elif style is None:
        style = default_style or ("vhost" if settings.domain else "single")
    if style not in STYLES:
        raise ClientConfigError(f"invalid style {style!r} (vhost or single)")
    if style == "vhost":
        if not settings.domain:
            raise ClientConfigError(
                "style vhost needs a domain: set --domain or REGISTRY_DOMAIN "
                "(clients then reach <upstream>.<domain>), or use style single"
            )
        if host:
            raise ClientConfigError(
                "a host applies to style single only; vhost names are <upstream>.<domain>"
            )
    return Advertise(
        style=style,
        host=validate_host(host or fallback),
        port=validate_port(settings.port if port is None else port),
        scheme=scheme,
        ca_file=ca_file or None,
        skip_verify=skip_verify,
    )


def endpoints(settings: Settings, adv: Advertise) -> list[Endpoint]:
    """Every configured upstream, in configuration order."""
    return [endpoint_for(settings, adv, name) for name in settings.upstreams]


def endpoint_for(settings: Settings, adv: Advertise, registry: str) -> Endpoint:
    upstream = settings.upstreams.get(registry)
    if upstream is None:
        raise NameUnknown(f"registry {registry[:100]!r} is not mirrored by this cache")
    vhost = adv.style == "vhost"
    if vhost and not settings.domain:
        raise ClientConfigError("style vhost needs a domain (set --domain or REGISTRY_DOMAIN)")
    return Endpoint(
        registry=upstream.name,
        server=upstream.url,
        host=f"{upstream.name}.{settings.domain}" if vhost else adv.host,
        port=adv.port,
        scheme=adv.scheme,
        vhost=vhost,
    )


def host_route(settings: Settings, host: str) -> str | None:
    """The upstream a request reaches on ``host`` with no ``ns=`` and no path prefix.

    None: nothing (no default upstream, or a name under our domain that names no
    upstream, which the cache answers with 404).
    """
    try:
        upstream = host_upstream(settings, host)
    except NameUnknown:
        return None
    return upstream.name if upstream is not None else settings.default_upstream


def takes_host_route(settings: Settings, host: str) -> bool:
    """Whether the Host header alone decides the upstream (so path prefixes are ignored)."""
    try:
        return host_upstream(settings, host) is not None
    except NameUnknown:
        return True
