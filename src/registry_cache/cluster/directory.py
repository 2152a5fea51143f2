"""Who is in the cluster, who holds what, and who fills what: leases on PostgreSQL.

- ``replicas``: every replica heartbeats its row (``HEARTBEAT`` s); one not seen
  for ``REPLICA_TTL`` s is gone.
- ``holdings`` (written by the index): which replica's local tier holds a digest;
  only live replicas are offered as sources.
- ``leases``: one owner per key (``blob:<digest>``, ``manifest:<upstream>/<repo>:<ref>``)
  until ``expires_at``, renewed by the owner's heartbeat; a dead owner's lease
  simply expires and the next ``acquire`` takes it over. Every time is the
  database's clock, so replicas' clocks never need to agree.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..index.pgclock import NOW

if TYPE_CHECKING:  # asyncpg is loaded only where a cluster opens its index
    from ..index.postgres import Conn, PostgresIndex

LEASE_TTL = 3.0  # seconds a lease lives without renewal
HEARTBEAT = 1.0  # how often owners renew leases and replicas announce themselves
REPLICA_TTL = 5.0  # a replica not seen for this long is gone


@dataclass(frozen=True, slots=True)
class Lease:
    key: str
    owner: str
    token: str
    mine: bool


@dataclass(frozen=True, slots=True)
class Replica:
    url: str
    started_at: float
    seen_ago: float  # seconds since its last heartbeat (database clock)
    info: dict[str, Any]
    objects: int = 0  # what its local tier holds (from the index)
    bytes: int = 0

    @property
    def alive(self) -> bool:
        return self.seen_ago < REPLICA_TTL


class ClusterDirectory(Protocol):
    me: str

    async def heartbeat(self, info: dict[str, Any]) -> None: ...

    async def replicas(self) -> list[Replica]:
        """Every replica that ever announced itself, with what its local tier holds."""

    async def holders(self, digest: str) -> list[str]:
        """Live replicas other than this one whose local tier holds ``digest``."""

    async def acquire(self, key: str) -> Lease:
        """This replica's lease on ``key`` if free or expired, else the current holder's."""

    async def renew(self, leases: list[Lease]) -> set[str]:
        """Extend these leases; the keys still ours."""

    async def release(self, lease: Lease) -> None: ...

    async def owner(self, key: str) -> str | None:
        """Who holds a live lease on ``key``, if anyone."""


class PostgresDirectory:
    """``ClusterDirectory`` over the PostgreSQL index's connection pool."""

    def __init__(self, index: PostgresIndex) -> None:
        self.index = index
        self.me = index.replica
        self._started_at: float | None = None

    async def heartbeat(self, info: dict[str, Any]) -> None:
        doc = json.dumps(info, separators=(",", ":"))
        await self.index.run(
            lambda conn: conn.execute(
                "INSERT INTO replicas (url, started_at, seen_at, info)"
                f" VALUES ($1, {NOW}, {NOW}, $2)"
                f" ON CONFLICT (url) DO UPDATE SET seen_at = {NOW}, info = excluded.info",
                self.me,
                doc,
            )
        )

    async def replicas(self) -> list[Replica]:
        rows = await self.index.run(
            lambda conn: conn.fetch(
                f"SELECT r.url, r.started_at, {NOW} - r.seen_at, r.info,"
                " COUNT(h.digest), COALESCE(SUM(h.size), 0)"
                " FROM replicas r LEFT JOIN holdings h ON h.replica = r.url"
                ' GROUP BY r.url ORDER BY r.url COLLATE "C"'
            )
        )
        return [
            Replica(r[0], r[1], max(0.0, r[2]), _info(r[3]), int(r[4]), int(r[5])) for r in rows
        ]

    async def holders(self, digest: str) -> list[str]:
        rows = await self.index.run(
            lambda conn: conn.fetch(
                "SELECT h.replica FROM holdings h JOIN replicas r ON r.url = h.replica"
                f" WHERE h.digest = $1 AND h.replica <> $2 AND r.seen_at > {NOW} - $3"
                " ORDER BY r.seen_at DESC",
                digest,
                self.me,
                REPLICA_TTL,
            )
        )
        return [r[0] for r in rows]

    async def acquire(self, key: str) -> Lease:
        token = secrets.token_hex(8)

        async def job(conn: Conn) -> Lease:
            row = await conn.fetchrow(
                "INSERT INTO leases (key, owner, token, expires_at)"
                f" VALUES ($1, $2, $3, {NOW} + $4)"
                " ON CONFLICT (key) DO UPDATE SET owner = excluded.owner,"
                " token = excluded.token, expires_at = excluded.expires_at"
                f" WHERE leases.expires_at < {NOW}"
                " RETURNING owner, token",
                key,
                self.me,
                token,
                LEASE_TTL,
            )
            if row is not None and row[1] == token:
                return Lease(key, self.me, token, True)
            held = await conn.fetchrow("SELECT owner, token FROM leases WHERE key = $1", key)
            if held is None:  # released between the two statements: try once more
                return Lease(key, "", "", False)
            return Lease(key, held[0], held[1], False)

        return await self.index.run(job)

    async def renew(self, leases: list[Lease]) -> set[str]:
        if not leases:
            return set()
        rows = await self.index.run(
            lambda conn: conn.fetch(
                f"UPDATE leases l SET expires_at = {NOW} + $3"
                " FROM unnest($1::text[], $2::text[]) AS v(k, t)"
                " WHERE l.key = v.k AND l.token = v.t RETURNING l.key",
                [lease.key for lease in leases],
                [lease.token for lease in leases],
                LEASE_TTL,
            )
        )
        return {r[0] for r in rows}

    async def release(self, lease: Lease) -> None:
        await self.index.run(
            lambda conn: conn.execute(
                "DELETE FROM leases WHERE key = $1 AND token = $2", lease.key, lease.token
            )
        )

    async def owner(self, key: str) -> str | None:
        value = await self.index.run(
            lambda conn: conn.fetchval(
                f"SELECT owner FROM leases WHERE key = $1 AND expires_at > {NOW}", key
            )
        )
        return str(value) if value is not None else None


def _info(text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}
