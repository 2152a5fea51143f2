"""The cache's shared tier pointed at a real S3 engine of the test's own.

- ``aws_env(engine)``: the environment a cache process (or the test process, for
  an in-process store) needs to reach ``engine``: the standard AWS variables with
  its keys, and nothing else of AWS's chain (no ~/.aws files, no instance metadata:
  no request may leave the machine).
- ``storage_args(engine, prefix)``: ``--storage s3://BUCKET/PREFIX --s3-endpoint URL``;
  ``storage_env(engine, prefix)``: the same as environment, with ``aws_env``.
- ``BucketView(engine, prefix)``: the test's own look into the bucket (boto3,
  independent of the product's S3 code): keys, objects' bytes, pending uploads.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from .s3engine import S3Engine


def aws_env(engine: S3Engine) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": engine.access_key,
        "AWS_SECRET_ACCESS_KEY": engine.secret_key,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }


def storage_args(engine: S3Engine, prefix: str = "cache", endpoint: str | None = None) -> list[str]:
    """The flags; ``endpoint``: reach the engine there instead (a ``TcpProxy`` in front)."""
    return [
        "--storage",
        f"s3://{engine.bucket}/{prefix}",
        "--s3-endpoint",
        endpoint or engine.endpoint_url,
    ]


def storage_env(
    engine: S3Engine, prefix: str = "cache", endpoint: str | None = None
) -> dict[str, str]:
    """``aws_env`` plus the storage settings as environment (for replicas and ``cache``)."""
    return {
        **aws_env(engine),
        "REGISTRY_CACHE_STORAGE": f"s3://{engine.bucket}/{prefix}",
        "REGISTRY_CACHE_S3_ENDPOINT": endpoint or engine.endpoint_url,
    }


class BucketView:
    def __init__(self, engine: S3Engine, prefix: str = "cache") -> None:
        self.engine = engine
        self.prefix = prefix
        self.client: Any = engine.client()

    def key(self, digest: str) -> str:
        algorithm, _, hex_ = digest.partition(":")
        return f"{self.prefix}/blobs/{algorithm}/{hex_[:2]}/{hex_}"

    def listing(self) -> list[str]:
        found: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.engine.bucket, Prefix=f"{self.prefix}/"):
            found += [item["Key"] for item in page.get("Contents", [])]
        return sorted(found)

    def digests(self) -> set[str]:
        """Digests stored under ``blobs/``."""
        out = set()
        for key in self.listing():
            parts = key.removeprefix(f"{self.prefix}/").split("/")
            if len(parts) == 4 and parts[0] == "blobs":
                out.add(f"{parts[1]}:{parts[3]}")
        return out

    def total(self) -> int:
        paginator = self.client.get_paginator("list_objects_v2")
        return sum(
            item["Size"]
            for page in paginator.paginate(
                Bucket=self.engine.bucket, Prefix=f"{self.prefix}/blobs/"
            )
            for item in page.get("Contents", [])
        )

    def holds(self, digest: str) -> bool:
        """The object is there and its bytes hash to ``digest``."""
        try:
            body = self.client.get_object(Bucket=self.engine.bucket, Key=self.key(digest))
        except self.client.exceptions.NoSuchKey:
            return False
        data = body["Body"].read()
        return "sha256:" + hashlib.sha256(data).hexdigest() == digest

    def wait_holds(self, digest: str, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.key(digest) in self.listing():
                return self.holds(digest)
            time.sleep(0.05)
        return False

    def put(self, digest: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.engine.bucket, Key=self.key(digest), Body=data)

    def uploads(self) -> list[dict[str, Any]]:
        answer = self.client.list_multipart_uploads(
            Bucket=self.engine.bucket, Prefix=f"{self.prefix}/"
        )
        return list(answer.get("Uploads", []))
