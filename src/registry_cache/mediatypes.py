"""Manifest media types and local Accept negotiation.

The cache stores manifests byte-exact with the media type upstream gave them and
decides locally whether a client's ``Accept`` admits it: it never converts.
"""

from __future__ import annotations

import json
from typing import Any

from .digest import Digest
from .errors import DigestInvalid

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"

INDEX_TYPES = frozenset({DOCKER_MANIFEST_LIST, OCI_INDEX})
IMAGE_TYPES = frozenset({DOCKER_MANIFEST, OCI_MANIFEST})
MANIFEST_TYPES = INDEX_TYPES | IMAGE_TYPES | {DOCKER_SCHEMA1_SIGNED, DOCKER_SCHEMA1}

# What we ask upstream for: every modern type, so upstream never converts for us.
UPSTREAM_ACCEPT = ", ".join(
    [OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST, DOCKER_SCHEMA1_SIGNED]
)


def parse_accept(values: list[str]) -> list[tuple[str, float]]:
    """Parse (possibly repeated) Accept headers into (media range, q) pairs."""
    ranges: list[tuple[str, float]] = []
    for value in values:
        for part in value.split(","):
            fields = [f.strip() for f in part.split(";")]
            media = fields[0].lower()
            if not media:
                continue
            q = 1.0
            for param in fields[1:]:
                key, _, val = param.partition("=")
                if key.strip().lower() == "q":
                    try:
                        q = float(val.strip())
                    except ValueError:
                        q = 0.0
            ranges.append((media, q))
    return ranges


def accepts(accept_values: list[str], media_type: str) -> bool:
    """True when a client that sent these Accept headers can take ``media_type``.

    No Accept header at all means "anything" (curl, crane). Docker schema2 clients
    that send only schema1 types are not served a schema2 manifest, as a registry
    would not. Media types compare case-insensitively (RFC 9110).
    """
    ranges = parse_accept(accept_values)
    if not ranges:
        return True
    media_type = media_type.lower()
    major = media_type.split("/", 1)[0]
    best = -1.0
    for media, q in ranges:
        if media in (media_type, "*/*", f"{major}/*"):
            best = max(best, q)
    return best > 0


def manifest_media_type(body: bytes, content_type: str | None) -> str:
    """The media type to store: upstream's Content-Type, else the body's mediaType field."""
    if content_type:
        base = content_type.split(";", 1)[0].strip()
        if base and base not in ("application/json", "application/octet-stream", "text/plain"):
            return base
    try:
        doc = json.loads(body)
    except ValueError:
        return content_type or "application/octet-stream"
    if isinstance(doc, dict):
        media = doc.get("mediaType")
        if isinstance(media, str) and media:
            return media
        if doc.get("schemaVersion") == 1:
            return DOCKER_SCHEMA1_SIGNED if "signatures" in doc else DOCKER_SCHEMA1
        if "manifests" in doc:
            return OCI_INDEX
        if "layers" in doc:
            return OCI_MANIFEST
    return content_type or "application/octet-stream"


def referenced_digests(body: bytes) -> tuple[list[str], list[str]]:
    """Digests a manifest refers to: (blobs, child manifests).

    Used to link layers and configs to the repository that pulled the manifest. The
    strings come from upstream and end up in paths and URLs: only what parses as a
    digest (``Digest.parse``) is returned; anything else is skipped.
    """
    try:
        doc: Any = json.loads(body)
    except ValueError:
        return [], []
    if not isinstance(doc, dict):
        return [], []
    blobs: list[str] = []
    children: list[str] = []
    config = doc.get("config")
    _add(blobs, config, "digest")
    for item in _list(doc.get("layers")):
        _add(blobs, item, "digest")
    for item in _list(doc.get("fsLayers")):  # schema1
        _add(blobs, item, "blobSum")
    for item in _list(doc.get("manifests")):
        _add(children, item, "digest")
    return blobs, children


def valid_digest(value: Any) -> str | None:
    """``value`` as a digest string if it is one (the spec's grammar), else None."""
    if not isinstance(value, str):
        return None
    try:
        return str(Digest.parse(value))
    except DigestInvalid:
        return None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _add(into: list[str], item: Any, key: str) -> None:
    if isinstance(item, dict) and (digest := valid_digest(item.get(key))) is not None:
        into.append(digest)
