"""Replicas talk to each other over one internal endpoint, signed with the cluster secret.

``GET /_internal/v1/blobs/<digest>`` (Range allowed) answers a blob this replica
holds, or one it is filling right now, streamed as it arrives with the last byte
held back until the digest checks out (as for clients). Requests carry
``X-Registry-Cache-Peer: <unix time>.<hex HMAC-SHA256(secret, time \\n method \\n path)>``:
the secret itself never travels, a signature is good for ``MAX_SKEW`` seconds
and for one path only. Anything else is refused with 401 before any lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import time

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error

from ..errors import BlobUnknown, Unavailable
from ..httpranges import ContentRangeInvalid
from ..streamed import open_span
from ..upstream.client import BlobStream

HEADER = "X-Registry-Cache-Peer"
BLOBS = "/_internal/v1/blobs/"
MAX_SKEW = 300.0
CONNECT_TIMEOUT = 2.0
HEADER_TIMEOUT = 10.0  # a peer's fill may still be waiting for upstream's headers
READ_TIMEOUT = 60.0


def sign(secret: str, method: str, path: str, now: float | None = None) -> str:
    stamp = str(int(time.time() if now is None else now))
    mac = hmac.new(secret.encode(), f"{stamp}\n{method}\n{path}".encode(), hashlib.sha256)
    return f"{stamp}.{mac.hexdigest()}"


def verify(
    secret: str, method: str, path: str, header: str | None, now: float | None = None
) -> bool:
    if not header or "." not in header:
        return False
    stamp, _, given = header.partition(".")
    try:
        when = int(stamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - when) > MAX_SKEW:
        return False
    expected = sign(secret, method, path, when).partition(".")[2]
    return hmac.compare_digest(expected, given)


class PeerClient:
    """Fetches blobs from other replicas (in fill threads: blocking, like upstream)."""

    def __init__(self, secret: str, pool: urllib3.PoolManager) -> None:
        self._secret = secret
        self._pool = pool

    def open_blob(self, peer: str, digest: str, offset: int = 0) -> BlobStream:
        path = BLOBS + digest
        headers = {HEADER: sign(self._secret, "GET", path)}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            response = self._pool.urlopen(
                "GET",
                peer + path,
                headers=headers,
                timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT, read=HEADER_TIMEOUT),
                retries=False,
                redirect=False,
                preload_content=False,
                decode_content=False,
            )
        except Urllib3Error as exc:
            raise Unavailable(f"replica {peer} unreachable ({type(exc).__name__})") from None
        status = response.status
        if status not in (200, 206):
            response.drain_conn()
            response.release_conn()
            if status == 404:
                raise BlobUnknown(f"replica {peer} does not hold {digest}")
            raise Unavailable(f"replica {peer} answered HTTP {status} for {digest}")
        try:
            start, size = open_span(response, status, offset, READ_TIMEOUT)
        except ContentRangeInvalid as exc:
            raise Unavailable(f"replica {peer} {exc} for {digest}") from None
        return BlobStream(response, start, size, "")

    def read_small(self, peer: str, digest: str, limit: int) -> bytes:
        """A whole small object (a manifest) from a peer; BlobUnknown when it lacks it."""
        stream = self.open_blob(peer, digest)
        try:
            if stream.size is not None and stream.size > limit:
                raise Unavailable(f"replica {peer}: {digest} is larger than {limit} bytes")
            chunks = bytearray()
            buffer = memoryview(bytearray(64 << 10))
            while True:
                count = stream.readinto(buffer)
                if not count:
                    return bytes(chunks)
                chunks += buffer[:count]
                if len(chunks) > limit:
                    raise Unavailable(f"replica {peer}: {digest} is larger than {limit} bytes")
        except Urllib3Error as exc:
            raise Unavailable(f"replica {peer} broke off ({type(exc).__name__})") from None
        finally:
            stream.close()
