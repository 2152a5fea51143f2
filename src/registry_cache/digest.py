"""Digest grammar and incremental hashing."""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from typing import Protocol

from .errors import DigestInvalid

_ENCODED = {
    "sha256": re.compile(r"[a-f0-9]{64}"),
    "sha512": re.compile(r"[a-f0-9]{128}"),
}
# Spec grammar for an algorithm identifier; used to tell "unknown algorithm" from garbage.
_ALGORITHM = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*")
_GENERIC_ENCODED = re.compile(r"[a-zA-Z0-9=_-]+")


class Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...

    def hexdigest(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Digest:
    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Parse ``algorithm:encoded``; raise DIGEST_INVALID for anything else."""
        return _parse(text)

    @classmethod
    def _parse_uncached(cls, text: str) -> Digest:
        algorithm, sep, encoded = text.partition(":")
        if not sep:
            raise DigestInvalid(f"invalid digest: {text[:200]!r}")
        pattern = _ENCODED.get(algorithm)
        if pattern is None:
            if _ALGORITHM.fullmatch(algorithm) and _GENERIC_ENCODED.fullmatch(encoded):
                raise DigestInvalid(f"unsupported digest algorithm: {algorithm[:50]!r}")
            raise DigestInvalid(f"invalid digest: {text[:200]!r}")
        if not pattern.fullmatch(encoded):
            raise DigestInvalid(f"invalid {algorithm} digest: {text[:200]!r}")
        return cls(algorithm, encoded)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def hasher(self) -> Hasher:
        return hashlib.new(self.algorithm)

    def matches(self, data: bytes) -> bool:
        return hashlib.new(self.algorithm, data).hexdigest() == self.hex


@functools.lru_cache(maxsize=8192)
def _parse(text: str) -> Digest:
    # Digests are immutable values parsed on every hit; errors are never cached.
    return Digest._parse_uncached(text)


def looks_like_digest(reference: str) -> bool:
    """The spec: a reference is a digest if it parses as one (contains ``:``), else a tag."""
    return ":" in reference
