"""The ``BlobStore`` contract: one suite, run over every implementation.

The data directory (``FileBlobStore``) and the shared tier (``S3BlobStore``) over
both real S3 engines, SeaweedFS and Ceph RGW (one engine per module, a fresh key
prefix per test). Everything the proxy, fills, eviction and maintenance rely on
is asserted here.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from registry_cache.bucket.store import S3BlobStore
from registry_cache.config import build_settings
from registry_cache.digest import Digest
from registry_cache.errors import DigestMismatch, StorageUnavailable
from registry_cache.store.blobs import BlobStore, FileBlobStore
from registry_cache.store.body import Body, FileBody, StreamBody
from registry_cache.store.layout import Layout
from tests.harness.bucket import aws_env
from tests.harness.ports import free_port
from tests.harness.s3engine import S3Engine

_prefixes = itertools.count()


@pytest.fixture(scope="module")
def engines(request: pytest.FixtureRequest) -> Iterator[dict[str, S3Engine]]:
    """Each S3 engine started once for the module (on first use), closed at its end."""
    from tests.integration.conftest import _make_engine

    started: dict[str, S3Engine] = {}

    class Lazy(dict[str, S3Engine]):
        def __missing__(self, name: str) -> S3Engine:
            engine = _make_engine(name).start()
            started[name] = engine
            self[name] = engine
            return engine

    try:
        yield Lazy()
    finally:
        for engine in started.values():
            engine.close()


async def s3_store(engine: S3Engine, monkeypatch: pytest.MonkeyPatch, **extra: str) -> S3BlobStore:
    for key, value in aws_env(engine).items():
        monkeypatch.setenv(key, value)
    environ = {
        "REGISTRY_CACHE_STORAGE": f"s3://{engine.bucket}/contract-{next(_prefixes)}",
        "REGISTRY_CACHE_S3_ENDPOINT": engine.endpoint_url,
        **extra,
    }
    return await S3BlobStore.connect(build_settings(environ=environ, dotenv=None))


@pytest.fixture(params=["filesystem", "seaweedfs", "rgw"])
async def store(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    engines: dict[str, S3Engine],
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[BlobStore]:
    if request.param == "filesystem":
        layout = Layout(tmp_path / "data")
        layout.create()
        yield FileBlobStore(layout)
        return
    bucket = await s3_store(engines[request.param], monkeypatch)
    try:
        yield bucket
    finally:
        await bucket.close()


async def body_bytes(body: Body) -> bytes:
    try:
        if isinstance(body, FileBody):
            return os.pread(body.file.fileno(), body.size, 0)
        assert isinstance(body, StreamBody)
        return b"".join([chunk async for chunk in body.chunks])
    finally:
        await body.close()


async def test_put_then_stat_open_read(store: BlobStore) -> None:
    data = os.urandom(100_000)
    digest = Digest.of(data)
    assert await store.stat(digest) is None
    assert await store.open(digest) is None and await store.read(digest) is None
    await store.put(digest, data)
    assert await store.stat(digest) == len(data)
    assert await store.read(digest) == data
    body = await store.open(digest)
    assert body is not None and body.size == len(data)
    assert await body_bytes(body) == data


async def test_put_refuses_bytes_that_do_not_match_and_stores_nothing(store: BlobStore) -> None:
    digest = Digest.of(b"the real thing")
    with pytest.raises(DigestMismatch):
        await store.put(digest, b"an impostor")
    assert await store.stat(digest) is None
    assert [d async for d, _ in store.walk()] == []


async def test_put_twice_and_concurrently_keeps_one_object(store: BlobStore) -> None:
    data = b"x" * 4096
    digest = Digest.of(data)
    await asyncio.gather(*(store.put(digest, data) for _ in range(5)))
    await store.put(digest, data)
    assert [item async for item in store.walk()] == [(digest, len(data))]


async def test_delete_frees_and_is_idempotent(store: BlobStore) -> None:
    data = b"y" * 1000
    digest = Digest.of(data)
    await store.put(digest, data)
    assert await store.delete(digest) == 1000
    assert await store.delete(digest) == 0
    assert await store.stat(digest) is None


async def test_an_open_body_survives_deletion(store: BlobStore) -> None:
    """A response in progress finishes even if eviction removes the object meanwhile."""
    data = os.urandom(50_000)
    digest = Digest.of(data)
    await store.put(digest, data)
    body = await store.open(digest)
    assert body is not None
    await store.delete(digest)
    assert await body_bytes(body) == data


async def test_walk_lists_every_object_with_its_size(store: BlobStore) -> None:
    blobs = {Digest.of(bytes([i]) * (i + 1)): i + 1 for i in range(40)}
    for digest, size in blobs.items():
        await store.put(digest, bytes([size - 1]) * size)
    assert {d: s async for d, s in store.walk()} == blobs


async def test_check_and_describe(store: BlobStore, tmp_path: Path) -> None:
    await store.check()
    assert store.describe()


async def test_check_fails_on_a_tier_that_takes_no_new_objects(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "gone")
    store = FileBlobStore(layout)  # never created: nowhere to write
    with pytest.raises(StorageUnavailable):
        await store.check()


@pytest.mark.parametrize("engine_name", ["seaweedfs", "rgw"])
async def test_a_bucket_that_does_not_exist_or_answer_fails_the_check_quickly(
    engine_name: str, engines: dict[str, S3Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = engines[engine_name]
    missing = await s3_store(
        engine, monkeypatch, REGISTRY_CACHE_STORAGE="s3://no-such-bucket-here/x"
    )
    nobody = await s3_store(
        engine, monkeypatch, REGISTRY_CACHE_S3_ENDPOINT=f"http://127.0.0.1:{free_port()}"
    )
    try:
        for store in (missing, nobody):
            started = time.monotonic()
            with pytest.raises(StorageUnavailable) as caught:
                await store.check()
            assert time.monotonic() - started < 5.0
            assert engine.secret_key not in str(caught.value)
            assert store.breaker.down  # the next requests do not wait for it again
    finally:
        await missing.close()
        await nobody.close()


@pytest.mark.parametrize("engine_name", ["seaweedfs", "rgw"])
async def test_a_big_object_is_one_verified_multipart_upload_and_streams_back(
    engine_name: str, engines: dict[str, S3Engine], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Bigger than a part: several parts, each MD5-checked by the bucket; readable by range."""
    store = await s3_store(engines[engine_name], monkeypatch)
    data = os.urandom(20 << 20)
    digest = Digest.of(data)
    path = tmp_path / "blob"
    path.write_bytes(data)
    started: list[str] = []
    fd = os.open(path, os.O_RDONLY)
    try:
        await store.upload(digest, fd, len(data), started=lambda key, upload: started.append(key))
        assert started == [store.location.blob(digest)]  # a multipart upload
        assert await store.stat(digest) == len(data)
        assert await store.pending_uploads() == []
        url = await store.presign_get(digest)
        stream = await asyncio.to_thread(store.open_range_now, url, 5 << 20)
        try:
            assert (stream.start, stream.size) == (5 << 20, len(data))
            buffer = bytearray(len(data))
            view, got = memoryview(buffer), 0
            while count := await asyncio.to_thread(stream.readinto, view[got:]):
                got += count
            assert bytes(buffer[:got]) == data[5 << 20 :]
        finally:
            stream.close()
    finally:
        os.close(fd)
        await store.close()


@pytest.mark.parametrize("engine_name", ["seaweedfs", "rgw"])
async def test_an_upload_whose_bytes_do_not_match_leaves_nothing_behind(
    engine_name: str, engines: dict[str, S3Engine], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    store = await s3_store(engines[engine_name], monkeypatch)
    for size in (1 << 20, 18 << 20):  # one PUT; several parts
        data = os.urandom(size)
        claimed = Digest.of(b"something else" + data[:10])
        path = tmp_path / f"wrong-{size}"
        path.write_bytes(data)
        fd = os.open(path, os.O_RDONLY)
        try:
            with pytest.raises(DigestMismatch):
                await store.upload(claimed, fd, size)
        finally:
            os.close(fd)
        assert await store.stat(claimed) is None
    assert await store.pending_uploads() == []  # the multipart one was aborted
    assert [d async for d, _ in store.walk()] == []
    await store.close()


@pytest.mark.parametrize("engine_name", ["seaweedfs", "rgw"])
async def test_a_part_refused_mid_upload_ends_it_with_nothing_behind(
    engine_name: str, engines: dict[str, S3Engine], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Parts go up while the next is read: when the bucket refuses one (here the second
    of five, while the first may still be on its way), the upload fails, the parts in
    flight end before the abort, and the bucket is left with no object and no pending
    upload. The real engine takes every other part."""
    store = await s3_store(engines[engine_name], monkeypatch)
    data = os.urandom(36 << 20)  # five parts of 8 MiB (the last 4 MiB)
    digest = Digest.of(data)
    path = tmp_path / "blob"
    path.write_bytes(data)
    real_put = store.transfers.put
    sent: list[str] = []

    def put(url: str, body: bytes, md5: str) -> str:
        number = url.split("partNumber=", 1)[1].split("&", 1)[0]
        sent.append(number)
        if number == "2":
            raise StorageUnavailable("bucket test answered HTTP 500 InternalError")
        return real_put(url, body, md5)

    monkeypatch.setattr(store.transfers, "put", put)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(StorageUnavailable):
            await store.upload(digest, fd, len(data))
    finally:
        os.close(fd)
    assert "2" in sent and len(sent) < 5  # it stopped early
    assert await store.stat(digest) is None
    assert await store.pending_uploads() == []
    store.breaker.worked()  # the failure opened the breaker: reset for the next upload
    monkeypatch.setattr(store.transfers, "put", real_put)
    fd = os.open(path, os.O_RDONLY)
    try:
        await store.upload(digest, fd, len(data))  # and the same blob goes up whole after
    finally:
        os.close(fd)
    assert await store.stat(digest) == len(data)
    await store.close()
