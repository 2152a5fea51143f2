"""Try one route the way the node's runtime would, and prove the cache served it.

For a ``Mirror``: resolve its host name (as the runtime would, through this
machine's resolver), ask ``/v2/`` with the node's login (what a runtime does
first), then GET the image's manifest through exactly the route's URL (``?ns=``
for containerd and k3s, ``/v2/<repo>`` for Docker, ``/v2/<prefix>/<repo>`` for
podman) and read the cache's marks: ``X-Registry-Cache`` (HIT, MISS, …) and
``X-Registry-Cache-Upstream`` (which upstream the cache routed it to). Only the
manifest is fetched: a resolve, not a pull.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any

import urllib3

from .nodeconfig import Mirror, Problem

ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)
CACHE_HEADER = "X-Registry-Cache"
UPSTREAM_HEADER = "X-Registry-Cache-Upstream"
TIMEOUT = urllib3.Timeout(connect=5.0, read=20.0)


@dataclass(frozen=True, slots=True)
class Proof:
    url: str
    status: int
    cache: str | None
    upstream: str | None


@dataclass
class Check:
    mirror: Mirror
    answered: bool = False
    is_cache: bool = False
    scheme: str | None = None  # what worked (podman's insecure may fall back to http)
    proof: Proof | None = None
    problems: list[Problem] = field(default_factory=list)
    upstreams: list[str] | None = None  # what the cache mirrors, when its API says


def _pool(mirror: Mirror) -> urllib3.PoolManager:
    if mirror.skip_verify:
        return urllib3.PoolManager(retries=False, timeout=TIMEOUT, cert_reqs="CERT_NONE")
    context = ssl.create_default_context(cafile=mirror.ca_file) if mirror.ca_file else None
    return urllib3.PoolManager(retries=False, timeout=TIMEOUT, ssl_context=context)


def _headers(mirror: Mirror) -> dict[str, str]:
    headers = {"Accept": ACCEPT, "User-Agent": "registry-cache-doctor"}
    if mirror.login is not None:
        token = base64.b64encode(f"{mirror.login[0]}:{mirror.login[1]}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    return headers


def resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError):
        return False
    return True


def _with_scheme(url: str, scheme: str) -> str:
    return scheme + url[url.index("://") :]


def check(mirror: Mirror, image: tuple[str, str] | None) -> Check:
    result = Check(mirror)
    where = f"{mirror.runtime} mirror {mirror.base} for {mirror.registry} ({mirror.source})"
    if not resolves(mirror.host):
        result.problems.append(
            Problem(
                "a name that does not resolve",
                f"{where}: {mirror.host!r} does not resolve on this node, so every pull of "
                f"{mirror.registry} skips the cache",
                f"give {mirror.host} a DNS record (a wildcard for virtual hosts) or an /etc/hosts "
                "entry, or point the node at the cache's IP address (`--style single`)",
            )
        )
        return result
    pool, headers = _pool(mirror), _headers(mirror)
    schemes = ["https", "http"] if mirror.http_fallback else [mirror.base.split("://", 1)[0]]
    ping: urllib3.BaseHTTPResponse | None = None
    failure = ""
    for scheme in schemes:
        try:
            ping = pool.request("GET", _with_scheme(mirror.ping_url(), scheme), headers=headers)
        except urllib3.exceptions.HTTPError as exc:
            failure = str(getattr(exc, "reason", None) or exc)
            continue
        result.scheme = scheme
        break
    if ping is None:
        result.problems.append(
            Problem(
                "the cache does not answer",
                f"{where}: {failure}",
                "start the cache, open the port, or (TLS) trust its CA: k3s tls.ca_file, "
                "hosts.toml ca, /etc/docker/certs.d/<host:port>/ca.crt, "
                "/etc/containers/certs.d/<host:port>/ca.crt",
            )
        )
        return result
    result.answered = True
    result.is_cache = CACHE_HEADER in ping.headers
    if ping.status == 401:
        if mirror.login is not None:
            result.problems.append(
                Problem(
                    "a cache that refuses the node's login",
                    f"{where}: the cache answered 401 to user {mirror.login[0]!r}",
                    "check the user and password against the cache's htpasswd file "
                    "(`htpasswd -v FILE USER`) and where this runtime reads them",
                )
            )
        else:
            docker = mirror.runtime == "Docker"
            result.problems.append(
                Problem(
                    "a cache that refuses the node's login",
                    f"{where}: the cache asks clients to log in and this runtime sends no "
                    "credentials" + (" (dockerd never logs in to a mirror)" if docker else ""),
                    "Docker: pull by the cache's name after `docker login`, or serve Docker "
                    "nodes from a cache without htpasswd"
                    if docker
                    else "add the node's login (k3s: configs.<endpoint>.auth; containerd CRI: "
                    "registry.configs.<host>.auth; podman: `podman login`)",
                )
            )
        return result
    if ping.status != 200:
        result.problems.append(
            Problem(
                "the mirror does not answer like a registry",
                f"{where}: GET /v2/ answered HTTP {ping.status}",
                "point the runtime at the registry-cache's address and port",
            )
        )
        return result
    result.upstreams, served = _mirrored(pool, headers, mirror, result.scheme or "http")
    image = image or served.get(mirror.registry)  # else an image the cache served lately
    if image is None:
        return result
    repo, tag = image
    url = mirror.manifest_url(repo, tag, result.scheme)
    try:
        response = pool.request("GET", url, headers=headers)
    except urllib3.exceptions.HTTPError as exc:
        result.problems.append(
            Problem(
                "the cache does not answer", f"{where}: GET {url}: {exc}", "see the cache's log"
            )
        )
        return result
    proof = Proof(url, response.status, response.headers.get(CACHE_HEADER),
                  response.headers.get(UPSTREAM_HEADER))  # fmt: skip
    result.proof = proof
    if proof.cache is None:
        result.problems.append(
            Problem(
                "the mirror is not a registry-cache",
                f"{where}: {url} answered without an {CACHE_HEADER} header",
                "point the runtime at the registry-cache (or upgrade it)",
            )
        )
    elif proof.upstream is not None and proof.upstream != mirror.registry:
        result.problems.append(
            Problem(
                "the cache serves this registry from another upstream",
                f"{where}: the cache routed {mirror.registry} requests to its "
                f"{proof.upstream} upstream",
                "Docker: use the cache's docker.io virtual host or a cache whose default "
                "upstream is docker.io; others: the endpoint of this registry",
            )
        )
    elif proof.status != 200:
        result.problems.append(
            Problem(
                "the cache could not serve the image",
                f"{where}: GET {url} answered HTTP {proof.status} ({CACHE_HEADER}: {proof.cache})",
                "check the image name, and the cache's upstream for it (`registry-cache status`)",
            )
        )
    return result


def _mirrored(
    pool: urllib3.PoolManager, headers: dict[str, str], mirror: Mirror, scheme: str
) -> tuple[list[str] | None, dict[str, tuple[str, str]]]:
    """(the upstreams the cache mirrors or None if it will not say, upstream -> an image
    it served lately) from its /api/v1/stats."""
    root = mirror.ping_url().split("/v2/", 1)[0]
    try:
        response = pool.request("GET", _with_scheme(root, scheme) + "/api/v1/stats",
                                headers=headers)  # fmt: skip
        if response.status != 200:
            return None, {}
        doc: dict[str, Any] = json.loads(response.data)
        served: dict[str, tuple[str, str]] = {}
        for pull in doc.get("recent", {}).get("pulls", []):
            if pull.get("upstream") and pull.get("status") == 200:
                served.setdefault(pull["upstream"], (pull["repository"], pull["reference"]))
        return [str(u["name"]) for u in doc.get("upstreams", [])], served
    except (urllib3.exceptions.HTTPError, ValueError, KeyError, TypeError):
        return None, {}
