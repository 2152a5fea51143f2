"""Where an upstream's credentials may go: origins, registrable domains, token realms.

The rule (README "Design notes"), for one upstream:

- ``Authorization`` goes only to the upstream's own origin: scheme, host AND port
  equal. A redirect anywhere else (a CDN, signed storage, or the same host over
  another scheme) gets the request without it.
- An https upstream never follows a redirect to plain http, and never uses a plain-http
  token realm: both are refused (a 502 naming the upstream).
- username/password go to a Bearer token realm only when the realm host is trusted:
  on the upstream's own registrable domain (``auth.docker.io`` for
  ``registry-1.docker.io``, ``ghcr.io`` for ``ghcr.io``), or listed in the upstream's
  ``token_realms``. Over https; over plain http only when the upstream itself is plain
  http (its password already crosses the wire in clear) and the realm is on the
  upstream's own host or listed. Any other realm gets an anonymous token request.

The registrable domain is a built-in approximation of the Public Suffix List (the
real list changes weekly and would need the network or a stale bundled copy):
the last two labels, or three when the top level is a two-letter country code and
the second level one of the generic labels registries sell under (``co.uk``,
``com.au``, ``co.jp``, ...). Hosts under a shared-hosting suffix (``amazonaws.com``,
``azurecr.io``, ...), IP addresses and single-label names are their own domain: there
every name may belong to someone else, so only the very same host counts.
Where the approximation is too strict, ``token_realms`` lists the realm host.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}

# Second-level labels under two-letter country codes that are public suffixes
# themselves (example.co.uk, example.com.au, example.ne.jp ...).
CCTLD_SECOND_LEVEL = frozenset(
    {
        "ac", "co", "com", "edu", "gov", "net", "org", "mil", "nom", "sch", "ltd", "plc",
        "me", "or", "ne", "go", "gob", "gv", "ad", "lg", "gen", "ind", "firm", "nic",
        "info", "biz", "res", "int", "web",
    }
)  # fmt: skip
# Suffixes under which every name is a different customer's (Public Suffix List,
# private section): their hosts never share a registrable domain.
SHARED_SUFFIXES = frozenset(
    {
        "amazonaws.com", "azurecr.io", "azurewebsites.net", "windows.net", "cloudfront.net",
        "appspot.com", "herokuapp.com", "github.io", "githubusercontent.com", "pages.dev",
        "workers.dev", "r2.dev", "fly.dev", "netlify.app", "vercel.app", "web.app",
        "firebaseapp.com", "digitaloceanspaces.com", "ngrok.io", "ngrok-free.app",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int

    @property
    def secure(self) -> bool:
        return self.scheme == "https"


def origin_of(url: str) -> Origin | None:
    """(scheme, host, port) of an http(s) URL; None for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if scheme not in DEFAULT_PORTS or not host:
        return None
    return Origin(scheme, host, port or DEFAULT_PORTS[scheme])


def host_of(url: str) -> str:
    """The host of ``url`` for messages (never its path or query string)."""
    try:
        return urlsplit(url).hostname or "?"
    except ValueError:
        return "?"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def registrable_domain(host: str) -> str:
    """The part of ``host`` one owner registered (see the module doc for the rule)."""
    host = host.lower().rstrip(".")
    if _is_ip(host) or "." not in host:
        return host
    if any(host == s or host.endswith("." + s) for s in SHARED_SUFFIXES):
        return host
    labels = host.split(".")
    keep = 2
    if len(labels[-1]) == 2 and labels[-2] in CCTLD_SECOND_LEVEL:
        keep = 3
    return ".".join(labels[-keep:])


class RealmUse(enum.Enum):
    CREDENTIALS = "credentials"  # send username/password as Basic
    ANONYMOUS = "anonymous"  # ask for a token without them
    REFUSED = "refused"  # do not use this realm at all


@dataclass(frozen=True, slots=True)
class RealmDecision:
    use: RealmUse
    reason: str = ""  # why, for REFUSED (credential- and query-free)


class CredentialPolicy:
    """The rule of the module doc for one upstream URL and its ``token_realms``."""

    def __init__(self, upstream_url: str, token_realms: Iterable[str] = ()) -> None:
        origin = origin_of(upstream_url)
        if origin is None:
            raise ValueError("the upstream URL is not http(s)://host")
        self.upstream = origin
        self._domain = registrable_domain(origin.host)
        self._listed: set[tuple[str, int | None]] = set()
        for entry in token_realms:
            host, port = _split_host_port(entry.lower())
            self._listed.add((host, port))

    def same_origin(self, url: str) -> bool:
        """Whether ``url`` may carry the upstream's ``Authorization``."""
        return origin_of(url) == self.upstream

    def redirect_refusal(self, url: str) -> str | None:
        """Why a redirect to ``url`` is refused, or None when it may be followed."""
        target = origin_of(url)
        if target is None:
            return f"redirected to a URL that is not http(s) (host {host_of(url)})"
        if self.upstream.secure and not target.secure:
            return f"redirected to plain http (host {target.host}) from https"
        return None

    def realm(self, realm_url: str) -> RealmDecision:
        realm = origin_of(realm_url)
        if realm is None:
            return RealmDecision(RealmUse.REFUSED, "named a token realm that is not http(s)")
        if self.upstream.secure and not realm.secure:
            return RealmDecision(
                RealmUse.REFUSED, f"named a plain-http token realm (host {realm.host})"
            )
        listed = (realm.host, realm.port) in self._listed or (realm.host, None) in self._listed
        if realm.secure:
            trusted = listed or registrable_domain(realm.host) == self._domain
        else:  # both plain http (an https upstream's http realm was refused above)
            trusted = listed or realm.host == self.upstream.host
        return RealmDecision(RealmUse.CREDENTIALS if trusted else RealmUse.ANONYMOUS)


def _split_host_port(entry: str) -> tuple[str, int | None]:
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else None
    host, sep, port = entry.rpartition(":")
    if sep and port.isdigit():
        return host, int(port)
    return entry, None
