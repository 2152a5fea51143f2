"""``S3BlobStore``: the ``BlobStore`` contract over an S3-compatible bucket.

Control requests (HEAD, GET of small objects, multipart create/complete/abort,
lists, deletes, presigning) go through aiobotocore on the event loop: asyncio
all the way, no thread hop per call. Bulk bytes never do (``transfer.py``): an
upload reads each part from the local tier in a thread, hashes it there and PUTs
it over a presigned UploadPart URL; a fill reads a presigned ranged GET in its own
thread.

Verified by construction: an object appears under its digest key only once it is
known to be right. A small one (one part) is hashed before its single PutObject,
which is atomic. A big one is a multipart upload under the final key: each part
carries ``Content-MD5`` (the bucket refuses a part that changed on the way), the
SHA-256 of all parts must be the digest, and only then is the upload completed,
and the completed object's size checked (a HEAD: RGW 16.2 answers Complete with an
empty ETag). Anything else aborts the upload; a crash leaves only an incomplete
upload, never an object (``sweep.py`` removes it).

Every call is bounded (``CALL_TIMEOUT``) and goes through the ``Breaker``: the
bucket down costs one failed call per ``RETRY_AFTER``, not one per request.
Credentials come from the AWS chain (environment, shared files, instance role)
inside the SDK; none passes through this code or its messages.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from ..digest import Digest, Hasher
from ..errors import BlobUnknown, DigestMismatch, StorageUnavailable
from ..store.blobs import MAX_READ
from ..store.body import StreamBody
from .breaker import Breaker
from .location import BucketLocation
from .transfer import CONNECT_TIMEOUT, READ_TIMEOUT, BucketStream, Transfers

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

    from ..config import Settings

log = logging.getLogger("registry_cache.bucket")

T = TypeVar("T")

CALL_TIMEOUT = 8.0  # one control request, retries included
PRESIGN_TTL = 300  # internal transfers start at once; the signature is checked at the start
MIN_PART = 8 << 20  # S3 wants ≥ 5 MiB but the last; ≤ 16 MiB keeps each PUT short
MAX_PARTS = 10_000
DELETE_BATCH = 1000  # DeleteObjects' limit
STREAM_CHUNK = 1 << 20
UPLOAD_THREADS = 4
PARTS_IN_FLIGHT = 2  # per multipart upload, each a part in memory


def part_size(size: int) -> int:
    """Parts of at least ``MIN_PART``, few enough for S3's 10,000 (whole MiB)."""
    needed = -(-size // MAX_PARTS)
    return max(MIN_PART, -(-needed // (1 << 20)) << 20)


@dataclass(frozen=True, slots=True)
class StoredObject:
    digest: Digest
    size: int
    modified: float  # Unix time the bucket says it was written


@dataclass(frozen=True, slots=True)
class PendingUpload:
    key: str
    upload_id: str
    initiated: float  # Unix time


class S3BlobStore:
    """Create with ``await S3BlobStore.connect(settings)``; ``await close()`` at the end."""

    def __init__(
        self,
        location: BucketLocation,
        client: S3Client,
        transfers: Transfers,
        breaker: Breaker,
        *,
        endpoint: str | None,
        region: str,
        exits: AsyncExitStack,
    ) -> None:
        self.location = location
        self.bucket = location.bucket
        self.client = client
        self.transfers = transfers
        self.breaker = breaker
        self.endpoint = endpoint
        self.region = region
        self._exits = exits
        self._threads = ThreadPoolExecutor(UPLOAD_THREADS, thread_name_prefix="bucket")

    @classmethod
    async def connect(cls, settings: Settings) -> S3BlobStore:
        """A client for ``settings.storage`` (made once: loading botocore's models costs
        100-300 ms). Nothing is asked of the bucket yet."""
        location = settings.bucket
        if location is None:
            raise ValueError("no storage configured")
        ca_file = settings.s3_ca_file
        if ca_file is not None and not ca_file.is_file():
            raise StorageUnavailable(f"s3_ca_file {ca_file} is not a readable file")
        config = AioConfig(
            signature_version="s3v4",
            s3={
                "addressing_style": "path" if settings.path_style else "virtual",
                # The store verifies digests itself; botocore would otherwise SHA-256
                # every body on the event loop (over https; over http it always does).
                "payload_signing_enabled": False,
            },
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            retries={"max_attempts": 2, "mode": "standard"},
            # Content-MD5 per part is ours; the newer default CRC headers are not
            # understood by every S3-compatible engine (Ceph RGW 16.2).
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            max_pool_connections=32,
        )
        exits = AsyncExitStack()
        session = get_session()
        region = settings.s3_region or "us-east-1"
        maker = session.create_client(
            "s3",
            endpoint_url=settings.s3_endpoint,
            region_name=region,
            config=config,
            verify=str(ca_file) if ca_file is not None else True,
        )
        client = await exits.enter_async_context(maker)
        name = location.url
        return cls(
            location,
            client,
            Transfers(name, ca_file=ca_file),
            Breaker(name),
            endpoint=settings.s3_endpoint,
            region=region,
            exits=exits,
        )

    async def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
        self.transfers.close()
        await self._exits.aclose()

    def describe(self) -> str:
        where = f" at {self.endpoint}" if self.endpoint else ""
        return f"bucket {self.location.url}{where}"

    # -------------------------------------------------------------- plumbing

    async def _call(self, op: str, make: Callable[[], Awaitable[T]], *, probe: bool = False) -> T:
        """One bounded request through the breaker. A missing key is a ``ClientError``
        the caller handles (not a failure of the bucket)."""
        if not probe and not self.breaker.allow():
            health = self.breaker.health()
            raise StorageUnavailable(f"{self.describe()} is unavailable: {health.error}")
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                result = await make()
        except ClientError as exc:
            if _status(exc) in (404, 416) or _code(exc) in ("NoSuchKey", "NoSuchUpload"):
                self.breaker.worked()
                raise
            reason = f"HTTP {_status(exc)} {_code(exc)}".strip()
            self.breaker.failed(op, reason)
            raise StorageUnavailable(f"{self.describe()}: {reason}") from None
        except NoCredentialsError:
            reason = "no AWS credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws, role)"
            self.breaker.failed(op, reason)
            raise StorageUnavailable(f"{self.describe()}: {reason}") from None
        except (BotoCoreError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
            self.breaker.failed(op, reason)
            raise StorageUnavailable(f"{self.describe()} unreachable ({reason})") from None
        self.breaker.worked()
        return result

    async def presign(self, method: str, params: dict[str, Any], ttl: int = PRESIGN_TTL) -> str:
        """A presigned URL (local computation; credentials may be refreshed first)."""
        try:
            url = await self.client.generate_presigned_url(
                method,
                Params={"Bucket": self.bucket, **params},
                ExpiresIn=ttl,
            )
        except (BotoCoreError, ClientError) as exc:
            self.breaker.failed("presign", type(exc).__name__)
            raise StorageUnavailable(
                f"{self.describe()}: cannot sign ({type(exc).__name__})"
            ) from None
        return str(url)

    async def presign_get(self, digest: Digest, ttl: int = PRESIGN_TTL) -> str:
        return await self.presign("get_object", {"Key": self.location.blob(digest)}, ttl)

    # ------------------------------------------------------------ BlobStore

    async def head(self, key: str) -> int | None:
        try:
            answer = await self._call(
                "head", lambda: self.client.head_object(Bucket=self.bucket, Key=key)
            )
        except ClientError:
            return None
        return int(answer["ContentLength"])

    async def stat(self, digest: Digest) -> int | None:
        return await self.head(self.location.blob(digest))

    async def read(self, digest: Digest) -> bytes | None:
        key = self.location.blob(digest)

        async def get() -> bytes:
            answer = await self.client.get_object(Bucket=self.bucket, Key=key)
            body = answer["Body"]
            try:
                if int(answer["ContentLength"]) > MAX_READ:
                    raise StorageUnavailable(f"{digest} in {self.describe()} is too big to read")
                return await body.read()
            finally:
                body.close()

        try:
            data = await self._call("get", get)
        except ClientError:
            return None
        return data

    async def open(self, digest: Digest) -> StreamBody | None:
        key = self.location.blob(digest)
        try:
            answer = await self._call(
                "get", lambda: self.client.get_object(Bucket=self.bucket, Key=key)
            )
        except ClientError:
            return None
        body = answer["Body"]

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in body.iter_chunks(STREAM_CHUNK):
                    yield chunk
            finally:
                body.close()

        async def close() -> None:
            body.close()

        return StreamBody(chunks(), int(answer["ContentLength"]), close)

    async def put(self, digest: Digest, data: bytes) -> None:
        if not digest.matches(data):
            raise DigestMismatch(str(digest), str(Digest.of(data, digest.algorithm)), len(data))
        await self._put_verified(self.location.blob(digest), data)

    async def _put_verified(self, key: str, data: bytes) -> None:
        if not self.breaker.allow():
            raise StorageUnavailable(f"{self.describe()} is unavailable")
        url = await self.presign("put_object", {"Key": key})
        md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
        await self._send("put", url, data, md5)

    async def _send(self, op: str, url: str, data: bytes, md5: str) -> str:
        loop = asyncio.get_running_loop()
        try:
            etag = await loop.run_in_executor(self._threads, self.transfers.put, url, data, md5)
        except StorageUnavailable as exc:
            self.breaker.failed(op, exc.message.removeprefix(f"bucket {self.location.url} "))
            raise
        self.breaker.worked()
        return etag

    async def delete(self, digest: Digest) -> int:
        key = self.location.blob(digest)
        size = await self.head(key)
        if size is None:
            return 0
        await self._call("delete", lambda: self.client.delete_object(Bucket=self.bucket, Key=key))
        return size

    async def delete_many(self, digests: list[Digest]) -> list[Digest]:
        """Remove objects in batches (DeleteObjects); the ones the bucket removed
        (a missing key counts as removed: S3 does not tell them apart)."""
        removed: list[Digest] = []
        for start in range(0, len(digests), DELETE_BATCH):
            batch = digests[start : start + DELETE_BATCH]
            keys = {self.location.blob(d): d for d in batch}

            def job(keys: dict[str, Digest] = keys) -> Awaitable[Any]:
                return self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True},
                )

            answer = await self._call("delete", job)
            failed = {e.get("Key") for e in answer.get("Errors", [])}
            removed += [d for k, d in keys.items() if k not in failed]
        return removed

    async def walk(self) -> AsyncIterator[tuple[Digest, int]]:
        async for item in self.objects():
            yield item.digest, item.size

    async def objects(self) -> AsyncIterator[StoredObject]:
        """Every object under ``blobs/`` (ListObjectsV2, 1,000 a page); stray keys skipped."""
        token: str | None = None
        while True:
            params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.location.blobs}
            if token:
                params["ContinuationToken"] = token
            page = await self._call(
                "list", functools.partial(self.client.list_objects_v2, **params)
            )
            for item in page.get("Contents", []):
                digest = self.location.digest_of(item["Key"])
                if digest is not None:
                    yield StoredObject(digest, int(item["Size"]), _time(item["LastModified"]))
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    async def check(self) -> None:
        """A HeadBucket, even while the breaker is open: readiness probes are also how
        an outage is seen to end between requests."""
        try:
            await self._call(
                "probe", lambda: self.client.head_bucket(Bucket=self.bucket), probe=True
            )
        except ClientError as exc:  # 404: the bucket itself is missing
            self.breaker.failed("probe", f"HTTP {_status(exc)} {_code(exc)}".strip())
            raise StorageUnavailable(f"{self.describe()}: the bucket does not exist") from None

    async def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (a fresh engine); otherwise nothing."""
        try:
            await self._call("probe", lambda: self.client.head_bucket(Bucket=self.bucket))
            return
        except ClientError:
            pass
        params: dict[str, Any] = {"Bucket": self.bucket}
        if self.endpoint is None and self.region != "us-east-1":
            # AWS itself wants the region spelled out; S3-compatible engines may refuse it.
            params["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        await self._call("put", functools.partial(self.client.create_bucket, **params))
        log.info("created %s", self.describe())

    # --------------------------------------------------------------- uploads

    async def upload(
        self,
        digest: Digest,
        fd: int,
        size: int,
        *,
        started: Callable[[str, str], None] | None = None,
    ) -> None:
        """Store ``size`` bytes of the open file ``fd`` (a committed local blob) under
        ``digest``, verified by construction (see the module docstring). ``started``
        is told (key, upload id) of a multipart upload before its first part."""
        key = self.location.blob(digest)
        chunk = part_size(size)
        if size <= chunk:
            loop = asyncio.get_running_loop()
            data = await loop.run_in_executor(self._threads, _read_all, fd, size)
            if not digest.matches(data):
                raise DigestMismatch(str(digest), str(Digest.of(data, digest.algorithm)), size)
            await self._put_verified(key, data)
        else:
            await self._multipart(digest, key, fd, size, chunk, started)
        stored = await self.head(key)
        if stored != size:
            # Cannot be ours (every part was checked): someone else's write raced us.
            raise StorageUnavailable(f"{key} in {self.describe()} has {stored} bytes, not {size}")

    async def _multipart(  # noqa: PLR0917 - one call site, all of them needed
        self,
        digest: Digest,
        key: str,
        fd: int,
        size: int,
        chunk: int,
        started: Callable[[str, str], None] | None,
    ) -> None:
        created = await self._call(
            "upload",
            lambda: self.client.create_multipart_upload(
                Bucket=self.bucket, Key=key, ContentType="application/octet-stream"
            ),
        )
        upload_id = created["UploadId"]
        if started is not None:
            started(key, upload_id)
        # Parts are read and hashed in order (the running digest) while up to
        # PARTS_IN_FLIGHT earlier ones are on their way: one at a time, the read and
        # hash waited for each PUT and the PUT for each read (59 MB/s into SeaweedFS
        # here, which takes 92-94 MB/s one part at a time and 112-129 with 2-4).
        etags: dict[int, str] = {}
        window = asyncio.Semaphore(PARTS_IN_FLIGHT)  # parts held in memory, at most
        sending: set[asyncio.Task[None]] = set()
        refused: list[BaseException] = []  # the first part the bucket refused ends the upload

        async def send(number: int, url: str, data: bytes, md5: str) -> None:
            try:
                etags[number] = await self._send("upload", url, data, md5)
            except BaseException as error:
                refused.append(error)
                raise
            finally:
                window.release()

        try:
            hasher = digest.hasher()
            loop = asyncio.get_running_loop()
            for number, offset in enumerate(range(0, size, chunk), 1):
                await window.acquire()
                if refused:
                    window.release()
                    raise refused[0]
                length = min(chunk, size - offset)
                try:
                    url = await self.presign(
                        "upload_part", {"Key": key, "UploadId": upload_id, "PartNumber": number}
                    )
                    data, md5 = await loop.run_in_executor(
                        self._threads, _read_part, fd, offset, length, hasher
                    )
                except BaseException:
                    window.release()
                    raise
                sending.add(asyncio.ensure_future(send(number, url, data, md5)))
            await asyncio.gather(*sending)
            parts = [{"PartNumber": n, "ETag": etags[n]} for n in sorted(etags)]
            actual = hasher.hexdigest()
            if actual != digest.hex:
                raise DigestMismatch(str(digest), f"{digest.algorithm}:{actual}", size)
            await self._call(
                "upload",
                lambda: self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
                ),
            )
        except BaseException:
            # Parts still on their way end first (a PUT cannot be called back from its
            # thread), so that the abort is the last word on this upload. Shielded: a
            # cancelled upload (shutdown) still gives its parts back.
            with contextlib.suppress(BaseException):
                await asyncio.shield(asyncio.gather(*sending, return_exceptions=True))
            with contextlib.suppress(Exception):
                await asyncio.shield(self.abort(key, upload_id))
            raise

    async def abort(self, key: str, upload_id: str) -> None:
        """Abort a multipart upload (already gone counts as done)."""
        with contextlib.suppress(ClientError):
            await self._call(
                "upload",
                lambda: self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id
                ),
            )

    async def pending_uploads(self) -> list[PendingUpload]:
        """Incomplete multipart uploads under ``blobs/`` (ListMultipartUploads, paged)."""
        found: list[PendingUpload] = []
        params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.location.blobs}
        while True:
            page = await self._call(
                "list", functools.partial(self.client.list_multipart_uploads, **params)
            )
            for item in page.get("Uploads", []):
                found.append(PendingUpload(item["Key"], item["UploadId"], _time(item["Initiated"])))
            if not page.get("IsTruncated"):
                return found
            params["KeyMarker"] = page.get("NextKeyMarker", "")
            params["UploadIdMarker"] = page.get("NextUploadIdMarker", "")

    async def quarantine(self, digest: Digest) -> None:
        """Move a corrupt object aside (``cache verify``): a server-side copy to
        ``quarantine/`` (up to 5 GiB, CopyObject's limit), then delete it."""
        key = self.location.blob(digest)
        size = await self.head(key)
        if size is None:
            return
        if size <= 5 << 30:
            await self._call(
                "put",
                lambda: self.client.copy_object(
                    Bucket=self.bucket,
                    Key=self.location.quarantined(digest),
                    CopySource={"Bucket": self.bucket, "Key": key},
                ),
            )
        await self._call("delete", lambda: self.client.delete_object(Bucket=self.bucket, Key=key))

    def open_range_now(self, url: str, offset: int) -> BucketStream:
        """Thread side of a fill from the bucket (see ``tier.SharedTier.open_blob``)."""
        if not self.breaker.allow():
            raise StorageUnavailable(f"{self.describe()} is unavailable")
        try:
            stream = self.transfers.open_range(url, offset)
        except BlobUnknown:
            self.breaker.worked()
            raise
        except StorageUnavailable as exc:
            self.breaker.failed("get", exc.message.removeprefix(f"bucket {self.location.url} "))
            raise
        self.breaker.worked()
        return stream


def _read_all(fd: int, size: int) -> bytes:
    data = os.pread(fd, size, 0)
    if len(data) != size:
        raise StorageUnavailable(f"local file ended at {len(data)} of {size} bytes")
    return data


def _read_part(fd: int, offset: int, length: int, hasher: Hasher) -> tuple[bytes, str]:
    """A part, read from the local tier, hashed into the running digest, and its MD5
    (all in the thread: hashlib releases the GIL)."""
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise StorageUnavailable(f"local file ended at {offset + len(data)} bytes")
    hasher.update(data)
    return data, base64.b64encode(hashlib.md5(data).digest()).decode()


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "") or "")


def _time(value: Any) -> float:
    return value.timestamp() if isinstance(value, datetime) else float(value or 0)
