"""The cluster directory of one machine: what a single replica with a bucket plans with.

``ClusterFills`` is the one place that decides where a fill's bytes come from
(a fill in flight elsewhere → the bucket → a peer holding it → upstream under a
lease). On one machine there are no peers and no one else to lease from: every
lease is this machine's at once (the fill's ``flock`` already makes one fill per
digest across its worker processes), so the plan reduces to bucket → upstream.
"""

from __future__ import annotations

from typing import Any

from .directory import Lease, Replica

ME = "local"


class SoloDirectory:
    me = ME

    async def heartbeat(self, info: dict[str, Any]) -> None:
        pass

    async def replicas(self) -> list[Replica]:
        return []

    async def holders(self, digest: str) -> list[str]:
        return []

    async def acquire(self, key: str) -> Lease:
        return Lease(key, ME, "", True)

    async def renew(self, leases: list[Lease]) -> set[str]:
        return {lease.key for lease in leases}

    async def release(self, lease: Lease) -> None:
        pass

    async def owner(self, key: str) -> str | None:
        return None
