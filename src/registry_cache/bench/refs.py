"""Image references as the benchmark tools take them, and where each side is reached.

``--repo`` follows docker's rules: a first component with a ``.`` or ``:`` (or
``localhost``) names the registry, anything else is Docker Hub, where one-word
names live under ``library/``. The cache serves every upstream on one port and is
addressed by path prefix (``/v2/<upstream>/<repo>/...``), by virtual host
(``--cache-host docker.io.<domain>:5000``: the Host header picks the upstream, so the
path is the plain repository, exactly as the cache routes it: Host before prefix)
or, for caches that mirror one upstream only (distribution's proxy), by the plain
repository name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from ..config import DEFAULT_UPSTREAMS
from ..reference import NAME_RE, TAG_RE

DOCKER_HUB = "docker.io"
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_DIGEST_RE = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")

# "host": a virtual host <upstream>.<domain> names the upstream, the path is plain.
PathStyle = Literal["prefix", "plain", "host"]
STYLE_CHOICES = ("auto", "prefix", "plain")


class RefError(ValueError):
    """A reference or address the tools cannot use (message fit for one CLI line)."""


@dataclass(frozen=True, slots=True)
class ImageRef:
    registry: str  # "docker.io", "ghcr.io", "localhost:5000"
    repository: str  # as the registry knows it ("library/alpine")
    tag: str
    digest: str | None = None

    @property
    def reference(self) -> str:
        """What goes after ``/manifests/``: the digest when known, else the tag."""
        return self.digest or self.tag

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        return f"{self.name}@{self.digest}" if self.digest else f"{self.name}:{self.tag}"


def parse_image(repo: str, tag: str | None = None) -> ImageRef:
    """Parse ``--repo`` (optionally ``name:tag`` or ``name@digest``) like docker does.

    An explicit ``tag`` wins over one embedded in ``repo``; the default tag is ``latest``.
    """
    text = repo.strip()
    digest: str | None = None
    if "@" in text:
        text, _, digest = text.partition("@")
        if not _DIGEST_RE.fullmatch(digest):
            raise RefError(f"invalid digest in {repo!r}")
    last_slash = text.rfind("/")
    colon = text.rfind(":")
    embedded_tag: str | None = None
    if colon > last_slash:
        text, embedded_tag = text[:colon], text[colon + 1 :]
    first, sep, rest = text.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        registry, path = first.lower(), rest
    else:
        registry, path = DOCKER_HUB, text
    if registry in _HUB_ALIASES:
        registry = DOCKER_HUB
        if "/" not in path:
            path = f"library/{path}"
    if not path or not NAME_RE.fullmatch(path):
        raise RefError(f"invalid repository name {repo!r}")
    chosen = tag or embedded_tag or "latest"
    if not TAG_RE.fullmatch(chosen):
        raise RefError(f"invalid tag {chosen!r}")
    return ImageRef(registry=registry, repository=path, tag=chosen, digest=digest)


def default_upstream_url(registry: str) -> str:
    """The real registry behind a registry name (``docker.io`` is served elsewhere)."""
    return DEFAULT_UPSTREAMS.get(registry, f"https://{registry}")


def base_url(address: str, default_scheme: str = "http") -> str:
    """``HOST:PORT`` or a URL → ``scheme://host:port`` (no trailing slash, no path)."""
    text = address.strip()
    if not text:
        raise RefError("empty address")
    if "://" not in text:
        text = f"{default_scheme}://{text}"
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RefError(f"invalid address {address!r} (use HOST:PORT or http(s)://HOST:PORT)")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise RefError(f"invalid port in {address!r}") from None
    return f"{parts.scheme}://{parts.netloc}"


def host_port(url: str) -> str:
    """``http://host:port`` → ``host:port`` (the form container clients take)."""
    return urlsplit(url).netloc


def path_style(text: str) -> PathStyle:
    if text not in ("prefix", "plain"):
        raise RefError(f"invalid cache path style {text!r} (prefix or plain)")
    return "plain" if text == "plain" else "prefix"


def virtual_host_upstream(cache_url: str, registries: Iterable[str]) -> str | None:
    """The registry whose virtual host ``cache_url`` is (``docker.io.example:5000``
    → ``docker.io``), the longest name first, as the cache itself matches; else None."""
    host = (urlsplit(cache_url).hostname or "").rstrip(".").lower()
    for name in sorted(registries, key=len, reverse=True):
        if host.startswith(f"{name}.") and len(host) > len(name) + 1:
            return name
    return None


def resolve_style(text: str, cache_url: str, image: ImageRef) -> PathStyle:
    """``--cache-path-style``: ``auto`` picks ``host`` for a virtual host of the
    image's registry, else ``prefix``. A virtual host of another registry is an error:
    the cache routes by Host before path, so no path could reach the image there."""
    if text != "auto":
        return path_style(text)
    named = virtual_host_upstream(cache_url, {image.registry, *DEFAULT_UPSTREAMS})
    if named is None:
        return "prefix"
    if named != image.registry:
        raise RefError(
            f"--cache-host {host_port(cache_url)} is the virtual host of {named}, "
            f"but {image.name} is on {image.registry} (use {image.registry}.<domain>, "
            "or the cache's plain HOST:PORT)"
        )
    return "host"


def cache_repository(image: ImageRef, style: PathStyle) -> str:
    """The repository path to ask the cache for."""
    return f"{image.registry}/{image.repository}" if style == "prefix" else image.repository


def client_reference(host: str, repository: str, image: ImageRef, *, by_digest: bool) -> str:
    """A reference for docker/skopeo/ctr: ``host/repository:tag`` or ``...@digest``."""
    if by_digest:
        if not image.digest:
            raise RefError("no digest resolved for a by-digest pull")
        return f"{host}/{repository}@{image.digest}"
    return f"{host}/{repository}:{image.tag}"
