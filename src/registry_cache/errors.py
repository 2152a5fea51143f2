"""One error hierarchy for the whole cache, and one table to OCI code + HTTP status.

::

    RegistryError                 rendered by web.middleware as an OCI JSON error body
    ├── NameInvalid, TagInvalid, DigestInvalid, ManifestInvalid, RangeInvalid
    ├── NameUnknown, ManifestUnknown, BlobUnknown
    ├── Unsupported               write methods; unknown digest algorithms
    ├── Unauthorized, Denied      upstream refused the cache's credentials
    ├── TooManyRequests           upstream rate limit (carries retry_after)
    ├── Unavailable               upstream unreachable / timed out / 5xx
    │   ├── BadGateway            upstream answered something unusable (502)
    │   ├── IndexUnavailable      the index (SQLite file, PostgreSQL) cannot be reached
    │   └── StorageUnavailable    a content tier (data directory, bucket) cannot be reached
    └── InsufficientStorage       the data directory is full
    ConfigError                   bad configuration: a one-line CLI message, exit 2
    DigestMismatch                upstream bytes did not match their digest

Nothing in here knows about aiohttp: handlers raise, one middleware renders.
"""

from __future__ import annotations

from typing import Any, ClassVar


class RegistryError(Exception):
    """An error the client sees as ``{"errors":[{"code","message","detail"}]}``."""

    code: ClassVar[str] = "UNKNOWN"
    status: ClassVar[int] = 500

    def __init__(self, message: str = "", detail: Any = None) -> None:
        super().__init__(message or self.code.lower().replace("_", " "))
        self.message = message or self.code.lower().replace("_", " ")
        self.detail = detail

    def headers(self) -> dict[str, str]:
        return {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            error["detail"] = self.detail
        return {"errors": [error]}


class NameInvalid(RegistryError):
    code, status = "NAME_INVALID", 400


class TagInvalid(RegistryError):
    code, status = "TAG_INVALID", 400


class DigestInvalid(RegistryError):
    code, status = "DIGEST_INVALID", 400


class ManifestInvalid(RegistryError):
    code, status = "MANIFEST_INVALID", 400


class RangeInvalid(RegistryError):
    code, status = "RANGE_INVALID", 416

    def __init__(self, size: int, message: str = "requested range not satisfiable") -> None:
        super().__init__(message)
        self.size = size

    def headers(self) -> dict[str, str]:
        return {"Content-Range": f"bytes */{self.size}"}


class NameUnknown(RegistryError):
    code, status = "NAME_UNKNOWN", 404


class ManifestUnknown(RegistryError):
    code, status = "MANIFEST_UNKNOWN", 404


class BlobUnknown(RegistryError):
    code, status = "BLOB_UNKNOWN", 404


class Unsupported(RegistryError):
    code, status = "UNSUPPORTED", 405


class Unauthorized(RegistryError):
    code, status = "UNAUTHORIZED", 401


class Denied(RegistryError):
    code, status = "DENIED", 403


class TooManyRequests(RegistryError):
    code, status = "TOOMANYREQUESTS", 429

    def __init__(self, message: str = "", retry_after: float | None = None) -> None:
        super().__init__(message or "upstream rate limit reached")
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, int(self.retry_after + 0.999)))}


class Unavailable(RegistryError):
    code, status = "UNAVAILABLE", 503


class BadGateway(Unavailable):
    """Upstream answered, but with something we cannot use (keeps code UNAVAILABLE)."""

    status = 502


class IndexUnavailable(Unavailable):
    """The index cannot be reached; the message names it without credentials."""


class IndexBusy(IndexUnavailable):
    """The index answered, but a write waited too long for a lock another transaction
    holds (a maintenance command's, say): that one write is lost or retried, and the
    index counts as reachable."""


class StorageUnavailable(Unavailable):
    """A content tier cannot be read or written (I/O error, bucket down)."""


class InsufficientStorage(RegistryError):
    code, status = "UNAVAILABLE", 507


class ConfigError(Exception):
    """Invalid configuration; the CLI prints ``str(error)`` on one line and exits 2."""


class DigestMismatch(Exception):
    """Bytes from upstream did not hash to the digest they were fetched for."""

    def __init__(self, expected: str, actual: str, size: int) -> None:
        super().__init__(f"digest mismatch: expected {expected}, got {actual} ({size} bytes)")
        self.expected = expected
        self.actual = actual
        self.size = size
