"""The ``BlobStore`` contract: one suite, run over every implementation.

Today the data directory (``FileBlobStore``); an object-store tier joins the
parameter list when it lands. Everything the proxy, fills, eviction and
maintenance rely on is asserted here.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from registry_cache.digest import Digest
from registry_cache.errors import DigestMismatch, StorageUnavailable
from registry_cache.store.blobs import BlobStore, FileBlobStore
from registry_cache.store.body import Body, FileBody, StreamBody
from registry_cache.store.layout import Layout


@pytest.fixture(params=["filesystem"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    layout = Layout(tmp_path / "data")
    layout.create()
    yield FileBlobStore(layout)


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
