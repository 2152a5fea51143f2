"""``s3://BUCKET/PREFIX`` and the keys under it. The one place that knows keys.

::

    PREFIX/blobs/sha256/ab/abcdef…      verified content (layers, configs AND manifests),
                                         named by digest, as under the data directory
    PREFIX/quarantine/sha256-abcdef…    objects ``cache verify`` found corrupt

An object exists under ``blobs/`` only once its digest and size were verified:
small objects are one ``PutObject`` (atomic), big ones one multipart upload
completed only after every part's MD5 was checked by the bucket and the whole
SHA-256 by us (``store.py``). An interrupted upload leaves no object, only an
incomplete multipart upload under ``blobs/``, which ``sweep.py`` aborts. No other
keys are written (no staging copies).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..digest import Digest

# S3's bucket naming rules (lowercase, 3-63, no leading/trailing dot or hyphen); a
# legacy bucket with capitals or underscores is accepted too, path-style only.
_BUCKET = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9._-]{1,61}[a-zA-Z0-9]")
_PREFIX = re.compile(r"[A-Za-z0-9!_.*'()/-]*")


@dataclass(frozen=True, slots=True)
class BucketLocation:
    bucket: str
    prefix: str  # without leading or trailing "/"; may be ""

    @classmethod
    def parse(cls, url: str) -> BucketLocation:
        """``s3://BUCKET`` or ``s3://BUCKET/PREFIX``; ValueError (naming no secret) else."""
        text = url.strip()
        if not text.lower().startswith("s3://"):
            raise ValueError("expected s3://BUCKET/PREFIX (only S3-compatible storage is known)")
        rest = text[5:]
        bucket, _, prefix = rest.partition("/")
        if "@" in bucket or ":" in bucket:
            raise ValueError(
                "credentials in the storage URL are not allowed: they come from the AWS"
                " environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws, instance role)"
            )
        if not _BUCKET.fullmatch(bucket) or ".." in bucket:
            raise ValueError(f"invalid bucket name {bucket[:70]!r}")
        prefix = prefix.strip("/")
        if not _PREFIX.fullmatch(prefix) or "//" in prefix:
            raise ValueError(f"invalid key prefix {prefix[:100]!r} (letters, digits, !_.*'()/-)")
        return cls(bucket, prefix)

    @property
    def url(self) -> str:
        """``s3://BUCKET/PREFIX``: the tier's name in messages and in the index."""
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def _under(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    @property
    def blobs(self) -> str:
        """The key prefix of every object (and of every multipart upload)."""
        return self._under("blobs/")

    def blob(self, digest: Digest) -> str:
        return self._under(f"blobs/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}")

    def quarantined(self, digest: Digest) -> str:
        return self._under(f"quarantine/{digest.algorithm}-{digest.hex}")

    def digest_of(self, key: str) -> Digest | None:
        """Inverse of ``blob()``; None for anything else (a stray key)."""
        if not key.startswith(self.blobs):
            return None
        parts = key[len(self.blobs) :].split("/")
        if len(parts) != 3 or parts[1] != parts[2][:2]:
            return None
        try:
            return Digest.parse(f"{parts[0]}:{parts[2]}")
        except Exception:
            return None
