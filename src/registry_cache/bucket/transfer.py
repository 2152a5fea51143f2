"""Bulk bytes to and from the bucket, moved by threads over presigned URLs (urllib3).

The SDK (aiobotocore, on the event loop) signs; the bytes go through urllib3 in a
thread, as upstream bodies do: a fill thread reads a ranged GET straight into its
buffer (``readinto``), an upload thread PUTs a part it read from the local tier.
So no body crosses the event loop, and none is hashed there (botocore signs every
payload it sends over plain http; a presigned URL is ``UNSIGNED-PAYLOAD``, and
each part carries ``Content-MD5``, which the bucket checks).

Everything here blocks: call it from a thread. Failures become ``StorageUnavailable``
(or ``BlobUnknown`` for a missing object) naming the bucket, never a URL (a
presigned URL is a credential for as long as it lives).
"""

from __future__ import annotations

import re
from pathlib import Path

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error

from .. import metrics
from ..errors import BlobUnknown, StorageUnavailable
from ..httpranges import ContentRangeInvalid
from ..streamed import open_span
from ..upstream.client import BlobStream

CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 10.0  # a read (or a PUT's answer) may stall this long; a fill then resumes
_CODE = re.compile(rb"<Code>([A-Za-z]{1,64})</Code>")


class PartRejected(StorageUnavailable):
    """The bucket refused a part's bytes (``BadDigest``: they changed on the way)."""


class BucketStream(BlobStream):
    """A ranged GET of an object: a fill's ``BlobSource``; counts the bytes read."""

    def readinto(self, buffer: memoryview) -> int:
        count = super().readinto(buffer)
        if count:
            metrics.bucket_bytes("read", count)
        return count


class Transfers:
    """One connection pool for every presigned request of a process (any thread)."""

    def __init__(self, name: str, *, ca_file: Path | None = None, maxsize: int = 16) -> None:
        self.name = name
        self._pool = urllib3.PoolManager(
            num_pools=4,
            maxsize=maxsize,
            block=False,
            cert_reqs="CERT_REQUIRED",
            ca_certs=str(ca_file) if ca_file is not None else None,
        )

    def open_range(self, url: str, offset: int) -> BucketStream:
        """The object from ``offset`` on; BlobUnknown when it is not there."""
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        response = self._request("GET", url, headers=headers)
        status = response.status
        if status not in (200, 206):
            code = _error_code(response)
            if status == 404 or code == "NoSuchKey":
                raise BlobUnknown(f"bucket {self.name} does not hold it")
            if status == 416:  # asked from the very end of the object: nothing left
                raise BlobUnknown(f"bucket {self.name}: nothing at offset {offset}")
            raise StorageUnavailable(f"bucket {self.name} answered HTTP {status} {code}".rstrip())
        try:
            start, size = open_span(response, status, offset, READ_TIMEOUT)
        except ContentRangeInvalid as exc:
            raise StorageUnavailable(f"bucket {self.name} {exc}") from None
        return BucketStream(response, start, size, "")

    def put(self, url: str, body: bytes, md5: str) -> str:
        """PUT ``body`` (a part or a small object); its ETag. ``md5``: base64 Content-MD5."""
        response = self._request(
            "PUT",
            url,
            body=body,
            headers={"Content-MD5": md5, "Content-Length": str(len(body))},
            preload=True,
        )
        if response.status != 200:
            code = _error_code(response, preloaded=True)
            if code in ("BadDigest", "InvalidDigest"):
                raise PartRejected(f"bucket {self.name} refused bytes that changed on the way")
            raise StorageUnavailable(
                f"bucket {self.name} answered HTTP {response.status} {code}".rstrip()
            )
        metrics.bucket_bytes("written", len(body))
        return str(response.headers.get("ETag", ""))

    def _request(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str],
        preload: bool = False,
    ) -> urllib3.BaseHTTPResponse:
        try:
            return self._pool.urlopen(
                method,
                url,
                body=body,
                headers=headers,
                timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT),
                retries=False,
                redirect=False,
                preload_content=preload,
                decode_content=False,
            )
        except Urllib3Error as exc:
            raise StorageUnavailable(
                f"bucket {self.name} unreachable ({type(exc).__name__})"
            ) from None

    def close(self) -> None:
        self._pool.clear()


def _error_code(response: urllib3.BaseHTTPResponse, *, preloaded: bool = False) -> str:
    """S3's ``<Code>`` from an error body (the first 4 KiB; the connection is dropped)."""
    try:
        head = response.data[:4096] if preloaded else response.read(4096)
    except Urllib3Error:
        head = b""
    finally:
        if not preloaded:  # the rest of the body is not worth reading: drop the connection
            response.close()
            response.release_conn()
    match = _CODE.search(head or b"")
    return match.group(1).decode() if match else ""
