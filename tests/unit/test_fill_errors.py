"""How a fill's failure is classified for the client (store.fill._storage_error)."""

from __future__ import annotations

import errno
import hashlib
from pathlib import Path

import pytest

from registry_cache.digest import Digest
from registry_cache.errors import BadGateway, InsufficientStorage, Unavailable
from registry_cache.index.front import IndexFront
from registry_cache.index.sqlite import SqliteIndex
from registry_cache.store.blobs import FileBlobStore
from registry_cache.store.fill import FillFailed, LocalFills, Origin
from registry_cache.store.layout import Layout

DIGEST = Digest("sha256", hashlib.sha256(b"x").hexdigest())


class Failing:
    """An opener whose source cannot even start: it raises ``error``."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __call__(self, offset: int) -> object:
        raise self.error


async def manager(tmp_path: Path) -> LocalFills:
    layout = Layout(tmp_path)
    layout.create()
    return LocalFills(FileBlobStore(layout), IndexFront(await SqliteIndex.open(layout.index)))


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (ValueError("a bug somewhere below"), BadGateway),  # unforeseen: still upstream's 502
        (KeyError("x"), BadGateway),
        (OSError(errno.ENOSPC, "No space left on device"), InsufficientStorage),
        (Unavailable("upstream down"), Unavailable),  # already a registry error: kept
    ],
)
async def test_a_failed_fill_is_a_registry_error_for_the_client(
    tmp_path: Path, raised: BaseException, expected: type[Exception]
) -> None:
    fills = await manager(tmp_path)
    joined = await fills.join_or_start(DIGEST, Origin("u", "r"), Failing(raised))  # type: ignore[arg-type]
    assert joined is not None
    reader = joined[0]
    with pytest.raises(FillFailed) as info:
        await reader.wait_size()
    reader.detach()
    assert type(info.value.error) is expected
    assert info.value.error.status in (502, 503, 507)  # type: ignore[attr-defined]
