"""Repository-name and tag grammar of the distribution spec.

Everything a client names is validated here before it touches disk or upstream.
"""

from __future__ import annotations

import re

from .errors import NameInvalid, TagInvalid

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
# The spec bounds the name together with the registry host.
MAX_NAME_LENGTH = 255


def validate_name(name: str, registry: str = "") -> str:
    """Return ``name`` if it is a valid repository name, else raise NAME_INVALID."""
    if not NAME_RE.fullmatch(name):
        raise NameInvalid(f"invalid repository name: {name[:300]!r}")
    if len(registry) + 1 + len(name) > MAX_NAME_LENGTH if registry else len(name) > MAX_NAME_LENGTH:
        raise NameInvalid("repository name too long")
    return name


def validate_tag(tag: str) -> str:
    if not TAG_RE.fullmatch(tag):
        raise TagInvalid(f"invalid tag: {tag[:200]!r}")
    return tag


def docker_hub_name(name: str) -> str:
    """Docker Hub keeps official images under ``library/``; bare clients omit it."""
    return name if "/" in name else f"library/{name}"


def display_reference(repository: str, reference: str) -> str:
    """``repo:tag`` or ``repo@digest``, as docker writes them (a tag never holds ``:``)."""
    return f"{repository}@{reference}" if ":" in reference else f"{repository}:{reference}"
