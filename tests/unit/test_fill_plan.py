"""Where a fill's bytes come from: the one decision, in ``ClusterFills.plan``."""

from __future__ import annotations

from typing import Any, cast

import pytest
from prometheus_client import REGISTRY

from registry_cache.cluster.directory import Lease, Replica
from registry_cache.cluster.fills import BUCKET, ClusterFills, Plan
from registry_cache.cluster.leases import LeaseKeeper
from registry_cache.cluster.solo import SoloDirectory
from registry_cache.digest import Digest
from registry_cache.errors import IndexUnavailable
from registry_cache.store.fill import LocalFills

DIGEST = Digest.parse("sha256:" + "1" * 64)
ME, PEER, FILLER = "http://me:5000", "http://holder:5000", "http://filler:5000"


class Directory:
    me = ME

    def __init__(self, *, holders: list[str], owner: str | None, down: bool = False) -> None:
        self._holders = holders
        self._owner = owner
        self.down = down

    def _check(self) -> None:
        if self.down:
            raise IndexUnavailable("index down")

    async def heartbeat(self, info: dict[str, Any]) -> None: ...

    async def replicas(self) -> list[Replica]:
        return []

    async def holders(self, digest: str) -> list[str]:
        self._check()
        return self._holders

    async def owner(self, key: str) -> str | None:
        self._check()
        return self._owner

    async def acquire(self, key: str) -> Lease:
        self._check()
        if self._owner is not None:
            return Lease(key, self._owner, "t", False)
        return Lease(key, ME, "mine", True)

    async def renew(self, leases: list[Lease]) -> set[str]:
        return set()

    async def release(self, lease: Lease) -> None: ...


class Shared:
    def __init__(self, up: bool = True) -> None:
        self.up = up

    def available(self) -> bool:
        return self.up


def fills(directory: Any, shared: Shared | None) -> ClusterFills:
    local = cast(LocalFills, object())  # plan() never touches the local fills
    return ClusterFills(local, directory, None, LeaseKeeper(directory), cast(Any, shared))


async def test_with_a_bucket_a_fill_in_flight_comes_first_then_the_bucket() -> None:
    plan = fills(Directory(holders=[PEER], owner=FILLER), Shared()).plan
    assert await plan(DIGEST, set(), None) == Plan(peer=FILLER)
    assert await plan(DIGEST, {FILLER}, None) == Plan(bucket=True)
    # The bucket lacks it: a replica holding it, then the lease (held by the filler).
    assert await plan(DIGEST, {FILLER, BUCKET}, None) == Plan(peer=PEER)
    assert (await plan(DIGEST, {FILLER, BUCKET, PEER}, None)).wait


async def test_nobody_has_it_the_bucket_then_upstream_under_our_lease() -> None:
    plan = fills(Directory(holders=[], owner=None), Shared()).plan
    assert await plan(DIGEST, set(), None) == Plan(bucket=True)
    chosen = await plan(DIGEST, {BUCKET}, None)
    assert chosen.lease is not None and chosen.lease.mine


async def test_without_a_bucket_the_order_is_unchanged() -> None:
    plan = fills(Directory(holders=[PEER], owner=None), None).plan
    assert await plan(DIGEST, set(), None) == Plan(peer=PEER)


def bypasses() -> float:
    value = REGISTRY.get_sample_value("registry_cache_bucket_bypasses_total", {"kind": "read"})
    return value or 0.0


async def test_a_bucket_that_is_down_is_skipped_and_counted() -> None:
    before = bypasses()
    plan = fills(Directory(holders=[], owner=None), Shared(up=False)).plan
    failed: set[str] = set()
    chosen = await plan(DIGEST, failed, None)
    assert chosen.lease is not None and BUCKET in failed
    assert bypasses() == before + 1


async def test_the_index_down_still_asks_the_bucket_before_going_unshared() -> None:
    plan = fills(Directory(holders=[], owner=None, down=True), Shared()).plan
    assert await plan(DIGEST, set(), None) == Plan(bucket=True)
    assert await plan(DIGEST, {BUCKET}, None) == Plan(unshared=True)


@pytest.mark.parametrize("shared", [Shared(), None])
async def test_one_machine_plans_bucket_then_upstream(shared: Shared | None) -> None:
    plan = fills(SoloDirectory(), shared).plan
    first = await plan(DIGEST, set(), None)
    if shared is not None:
        assert first == Plan(bucket=True)
        first = await plan(DIGEST, {BUCKET}, None)
    assert first.lease is not None and first.lease.mine
