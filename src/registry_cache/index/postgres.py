"""The index for a cluster: PostgreSQL, shared by every replica (asyncpg).

``objects`` is the cluster's catalog (size, media type, last access anywhere);
``holdings`` says which replica's local tier holds what, and which objects the
shared tier (the bucket) holds: its rows carry the bucket's name
(``s3://BUCKET/PREFIX``) where a replica's carry its URL, and since the bucket
never heartbeats it is never offered as a peer. The object methods of the
``Index`` contract are about *this* replica's local tier (what it evicts,
verifies and lists), as they are for SQLite on one machine: ``forget`` drops this
replica's holdings, and catalog rows (with the tags naming them) only once no
replica and no bucket holds the content any more.

Tables live in their own schema (``registry_cache``), created and migrated at
start under an advisory lock, so replicas starting together do not race. Schema
versions: 1 (the first release of cluster mode; the bucket's holdings need no
change of it) and 2 (``MIGRATE_TO_2``: bytewise columns, ``refs``, per-tier
running totals). Rows
deleted anywhere bump a generation counter and ``NOTIFY registry_cache_changes``
in the same transaction: every replica's front drops its memos at once
(``wait_changed``) instead of polling.

PostgreSQL down or restarted: every call raises ``IndexUnavailable`` within
``QUERY_TIMEOUT`` at worst, and for ``RETRY_AFTER`` after a failure at once,
without trying (a request never waits for a dead server twice); the pool then
reconnects by itself, and a pooled connection the restart left stuck in asyncpg's
error state is dropped and the call run once more on a fresh one. The password is
passed apart from the URL and never appears in a message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import asyncpg

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Conn = PoolConnectionProxy[Any]  # what jobs are given (a pooled connection)
else:
    Conn = Any

from ..errors import IndexBusy
from .base import (
    CLOSURE_DEPTH,
    NO_IMAGE,
    Cursor,
    DigestRange,
    ImageStats,
    IndexUnavailable,
    LinkKey,
    ManifestRefs,
    ObjectRow,
    RangeUsage,
    RepoKey,
    TagEntry,
    TagImport,
    TagKey,
    TagRow,
    UntaggedManifest,
    UpstreamUsage,
    UsageSummary,
)

log = logging.getLogger("registry_cache.index")

T = TypeVar("T")

SCHEMA_VERSION = 2
CHANNEL = "registry_cache_changes"
MIGRATION_LOCK = 0x7263_0001  # pg_advisory_xact_lock key: one migrating replica at a time
CONNECT_TIMEOUT = 3.0
QUERY_TIMEOUT = 3.0
RETRY_AFTER = 1.0
# A statement waits this long for a row another transaction locked, then fails with
# lock_not_available: well before QUERY_TIMEOUT, whose TimeoutError means "unreachable"
# (RETRY_AFTER of failing at once, memos or upstream instead of the index, for every
# request). A long transaction elsewhere (a maintenance command) costs one write.
LOCK_TIMEOUT = 1.0
# Maintenance aggregations over every row (``cache ls/du/gc``) may take this long;
# the serving path keeps QUERY_TIMEOUT.
SLOW_QUERY_TIMEOUT = 600.0
IMPORT_BATCH = 10_000  # rows per statement of a bulk import
SCHEMA = """
CREATE SCHEMA IF NOT EXISTS registry_cache;
CREATE TABLE IF NOT EXISTS registry_cache.meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS registry_cache.objects (
    digest      TEXT PRIMARY KEY,
    size        BIGINT NOT NULL,
    media_type  TEXT,
    created     DOUBLE PRECISION NOT NULL,
    last_access DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS objects_lru ON registry_cache.objects (last_access, digest);
CREATE TABLE IF NOT EXISTS registry_cache.tags (
    upstream    TEXT NOT NULL,
    repo        TEXT NOT NULL,
    tag         TEXT NOT NULL,
    digest      TEXT NOT NULL,
    checked_at  DOUBLE PRECISION NOT NULL,
    last_pulled DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (upstream, repo, tag)
);
CREATE INDEX IF NOT EXISTS tags_by_digest ON registry_cache.tags (digest);
CREATE TABLE IF NOT EXISTS registry_cache.links (
    upstream    TEXT NOT NULL,
    repo        TEXT NOT NULL,
    digest      TEXT NOT NULL,
    PRIMARY KEY (upstream, repo, digest)
);
CREATE INDEX IF NOT EXISTS links_by_digest ON registry_cache.links (digest);
CREATE TABLE IF NOT EXISTS registry_cache.holdings (
    replica     TEXT NOT NULL,
    digest      TEXT NOT NULL,
    size        BIGINT NOT NULL,
    last_access DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (replica, digest)
);
CREATE INDEX IF NOT EXISTS holdings_lru ON registry_cache.holdings (replica, last_access, digest);
CREATE INDEX IF NOT EXISTS holdings_by_digest ON registry_cache.holdings (digest);
CREATE TABLE IF NOT EXISTS registry_cache.leases (
    key         TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    token       TEXT NOT NULL,
    expires_at  DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS registry_cache.replicas (
    url         TEXT PRIMARY KEY,
    started_at  DOUBLE PRECISION NOT NULL,
    seen_at     DOUBLE PRECISION NOT NULL,
    info        TEXT NOT NULL DEFAULT '{}'
);
"""
# Version 2: names and digests compare bytewise (``COLLATE "C"`` columns: the order
# every listing already used, and digest ranges that match the fan-out directories;
# with the database's collation on the indexes, a range query scanned the table);
# what manifests list (``refs``; ``objects.refs_known`` says whose were
# recorded: those stored before are parsed from their files by the first maintenance
# command that needs them; rows of manifests no longer in the catalog are left to
# ``prune_refs``), and each replica's running totals of its holdings
# (``tier_totals``, kept by triggers: no SUM over every row per fill).
MIGRATE_TO_2 = """
ALTER TABLE registry_cache.objects
    ADD COLUMN IF NOT EXISTS refs_known BOOLEAN NOT NULL DEFAULT false,
    ALTER COLUMN digest TYPE TEXT COLLATE "C";
ALTER TABLE registry_cache.holdings
    ALTER COLUMN replica TYPE TEXT COLLATE "C", ALTER COLUMN digest TYPE TEXT COLLATE "C";
ALTER TABLE registry_cache.links
    ALTER COLUMN upstream TYPE TEXT COLLATE "C", ALTER COLUMN repo TYPE TEXT COLLATE "C",
    ALTER COLUMN digest TYPE TEXT COLLATE "C";
ALTER TABLE registry_cache.tags
    ALTER COLUMN upstream TYPE TEXT COLLATE "C", ALTER COLUMN repo TYPE TEXT COLLATE "C",
    ALTER COLUMN tag TYPE TEXT COLLATE "C", ALTER COLUMN digest TYPE TEXT COLLATE "C";
CREATE TABLE IF NOT EXISTS registry_cache.refs (
    manifest    TEXT COLLATE "C" NOT NULL,
    digest      TEXT COLLATE "C" NOT NULL,
    child       BOOLEAN NOT NULL,
    PRIMARY KEY (manifest, digest)
);
CREATE INDEX IF NOT EXISTS refs_by_digest ON registry_cache.refs (digest);
CREATE INDEX IF NOT EXISTS objects_manifests ON registry_cache.objects (digest)
    WHERE media_type IS NOT NULL;
CREATE INDEX IF NOT EXISTS objects_unparsed ON registry_cache.objects (digest)
    WHERE media_type IS NOT NULL AND NOT refs_known;
CREATE TABLE IF NOT EXISTS registry_cache.tier_totals (
    replica     TEXT PRIMARY KEY,
    objects     BIGINT NOT NULL,
    bytes       BIGINT NOT NULL
);
CREATE OR REPLACE FUNCTION registry_cache.holdings_added() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO registry_cache.tier_totals AS t (replica, objects, bytes)
    SELECT replica, count(*), sum(size) FROM added GROUP BY replica
    ON CONFLICT (replica) DO UPDATE
    SET objects = t.objects + excluded.objects, bytes = t.bytes + excluded.bytes;
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION registry_cache.holdings_removed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE registry_cache.tier_totals t SET objects = t.objects - r.n, bytes = t.bytes - r.b
    FROM (SELECT replica, count(*) AS n, sum(size) AS b FROM removed GROUP BY replica) r
    WHERE t.replica = r.replica;
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION registry_cache.holdings_resized() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE registry_cache.tier_totals SET bytes = bytes + NEW.size - OLD.size
    WHERE replica = NEW.replica;
    RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER holdings_added AFTER INSERT ON registry_cache.holdings
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT
    EXECUTE FUNCTION registry_cache.holdings_added();
CREATE OR REPLACE TRIGGER holdings_removed AFTER DELETE ON registry_cache.holdings
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT
    EXECUTE FUNCTION registry_cache.holdings_removed();
CREATE OR REPLACE TRIGGER holdings_resized AFTER UPDATE OF size ON registry_cache.holdings
    FOR EACH ROW WHEN (OLD.size IS DISTINCT FROM NEW.size)
    EXECUTE FUNCTION registry_cache.holdings_resized();
"""
# Under the migration's lock, with no holdings written meanwhile: exact from then on.
FILL_TOTALS = """
LOCK TABLE registry_cache.holdings IN SHARE ROW EXCLUSIVE MODE;
DELETE FROM registry_cache.tier_totals;
INSERT INTO registry_cache.tier_totals (replica, objects, bytes)
SELECT replica, count(*), sum(size) FROM registry_cache.holdings GROUP BY replica;
"""
C = 'COLLATE "C"'  # bytewise order and ranges, whatever the database's collation
# This replica's local tier, as object rows (its holdings, with the catalog's columns).
LOCAL_OBJECTS = (
    "SELECT h.digest, h.size, o.media_type, COALESCE(o.created, h.last_access),"
    " h.last_access FROM holdings h LEFT JOIN objects o ON o.digest = h.digest"
    " WHERE h.replica = $1"
)
# ``inventory.closure`` of a page of manifests, in the server (as SQLite's
# IMAGE_STATS): what each root reaches through manifests this replica holds, each
# (root, digest) once; a node carries its holding's size (NULL: not held here).
# The planner, which cannot tell how far a walk goes, hashed all of refs and objects
# for every page: each step is a lateral lookup instead (OFFSET 0 keeps it one).
IMAGE_STATS = f"""
WITH RECURSIVE
walk(root, digest, depth, child, size) AS (
    SELECT r.d {C}, r.d {C}, 0, true, h.size FROM unnest($2::text[]) AS r(d)
    LEFT JOIN holdings h ON h.replica = $1 AND h.digest = r.d
    UNION ALL
    SELECT w.root, f.digest, w.depth + 1, f.child, f.size FROM walk w
    CROSS JOIN LATERAL (
        SELECT f.digest, f.child, h.size FROM refs f
        LEFT JOIN holdings h ON h.replica = $1 AND h.digest = f.digest
        WHERE f.manifest = w.digest OFFSET 0
    ) f
    WHERE w.child AND w.size IS NOT NULL AND w.depth < {CLOSURE_DEPTH}
),
nodes AS (
    SELECT root, max(size) AS size, bool_or(depth > 0 AND NOT child) AS blob,
        bool_or(depth = 1 AND child) AS platform
    FROM walk GROUP BY root, digest
)
SELECT n.root, (SELECT o.media_type FROM objects o WHERE o.digest = n.root),
    COALESCE(sum(n.size), 0), count(n.size),
    count(*) FILTER (WHERE n.blob AND n.size IS NULL), count(*) FILTER (WHERE n.platform),
    count(*) FILTER (WHERE n.platform AND n.size IS NOT NULL)
FROM nodes n GROUP BY n.root
"""


def _unreferenced(within: Callable[[str], str]) -> str:
    """Count and bytes of the holdings ``within`` a digest range that no tag, link or
    manifest this replica holds names (gc's orphans). The range is repeated on each
    table (the planner otherwise hashed all of ``tags`` for every range), and the
    manifests are asked of last, for the few rows left (OFFSET 0 keeps them apart):
    checking every reference in the range against the holdings took most of the time."""
    return (
        "SELECT count(*), COALESCE(sum(h.size), 0) FROM (SELECT h.digest, h.size"
        f" FROM holdings h WHERE h.replica = $1 AND {within('h.digest')}"
        f" AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.digest = h.digest"
        f" AND {within('t.digest')})"
        " AND NOT EXISTS (SELECT 1 FROM links l WHERE l.digest = h.digest"
        f" AND {within('l.digest')}) OFFSET 0) h"
        " WHERE NOT EXISTS (SELECT 1 FROM refs r JOIN holdings p ON p.replica = $1"
        " AND p.digest = r.manifest WHERE r.digest = h.digest)"
    )


BUMP = (
    "INSERT INTO meta (key, value) VALUES ('generation', '1') ON CONFLICT (key)"
    " DO UPDATE SET value = (meta.value::bigint + 1)::text"
)


def describe(url: str) -> str:
    """The URL without any password, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    user = f"{parts.username}@" if parts.username else ""
    return f"postgresql://{user}{host}{port}{parts.path}"


class PostgresIndex:
    """``Index`` over PostgreSQL. Create with ``await PostgresIndex.open(url, password)``."""

    def __init__(
        self, url: str, password: str | None, replica: str, shared: str | None = None
    ) -> None:
        self.url = url
        self.replica = replica  # this replica's advertised URL: its holdings' key
        self.shared = shared  # the bucket's name (its holdings' key), if there is one
        self.name = describe(url)
        self._password = password
        self._pool: asyncpg.Pool | None = None
        self._retry_at = 0.0
        self._listener: asyncpg.Connection | None = None
        self._changed = asyncio.Event()
        self._seen_generation: int | None = None
        self._closed = False
        self._migrated = False

    @classmethod
    async def open(
        cls,
        url: str,
        password: str | None = None,
        *,
        replica: str = "local",
        shared: str | None = None,
        wait: bool = True,
    ) -> PostgresIndex:
        """Connect and migrate the schema. ``wait=False``: a server unreachable now is
        fine (a replica starts degraded); the first query that reaches it migrates."""
        index = cls(url, password, replica, shared)
        try:
            await index.run(lambda conn: conn.fetchval("SELECT 1"))
        except IndexUnavailable as exc:
            if wait:
                raise
            log.warning("starting without the index for now: %s", exc.message)
        return index

    # -------------------------------------------------------------- plumbing

    async def _connect_kwargs(self) -> dict[str, Any]:
        return {
            "dsn": self.url,
            "password": self._password,
            "timeout": CONNECT_TIMEOUT,
            "command_timeout": QUERY_TIMEOUT,
            "server_settings": {
                "search_path": "registry_cache",
                "application_name": "registry-cache",
                "lock_timeout": str(int(LOCK_TIMEOUT * 1000)),
                # JIT compiling paid off for no query here: a page of ``cache ls``
                # (IMAGE_STATS, a few thousand index lookups) took 0.1 s to run and
                # 0.24 s to compile, the plan's cost being a guess at a recursive walk.
                "jit": "off",
            },
        }

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                min_size=0, max_size=8, **(await self._connect_kwargs())
            )
        return self._pool

    async def run(self, job: Callable[[Conn], Awaitable[T]], *, budget: float = QUERY_TIMEOUT) -> T:
        """``job`` on a pooled connection, given ``budget`` seconds; a statement that
        may take more than QUERY_TIMEOUT (the pool's default) passes ``timeout=``."""
        if self._closed:
            raise IndexUnavailable(f"index {self.name} is closed")
        if time.monotonic() < self._retry_at:
            raise IndexUnavailable(f"index {self.name} is unreachable (retrying shortly)")
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT + budget):
                pool = await self._get_pool()
                try:
                    return await self._on_connection(pool, job)
                except asyncpg.exceptions.InternalClientError as exc:
                    # A pooled connection the server ended mid-operation (a restart)
                    # can come back stuck in asyncpg's error state: its next statement
                    # fails before it is sent. That one is dropped; a fresh one runs it.
                    log.info("index %s: dropped a stale connection (%s)", self.name, _reason(exc))
                    return await self._on_connection(pool, job)
        except asyncpg.exceptions.LockNotAvailableError as exc:
            raise IndexBusy(f"index {self.name}: {_reason(exc)}") from None  # reachable
        except (
            OSError,
            TimeoutError,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            asyncpg.exceptions.InternalClientError,
        ) as exc:
            if isinstance(exc, asyncpg.PostgresError) and _is_bug(exc):
                raise  # a wrong statement is a bug, not an outage
            self._retry_at = time.monotonic() + RETRY_AFTER
            raise IndexUnavailable(f"index {self.name}: {_reason(exc)}") from None

    async def _on_connection(self, pool: asyncpg.Pool, job: Callable[[Conn], Awaitable[T]]) -> T:
        async with pool.acquire() as conn:
            try:
                if not self._migrated:
                    await _migrate(conn)
                    self._migrated = True
                return await job(conn)
            except asyncpg.exceptions.InternalClientError:
                conn.terminate()  # never back into the pool in that state
                raise

    async def close(self) -> None:
        self._closed = True
        if self._listener is not None:
            listener, self._listener = self._listener, None
            try:
                await asyncio.wait_for(listener.close(), QUERY_TIMEOUT)
            except Exception:
                listener.terminate()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), QUERY_TIMEOUT)
            except Exception:
                pool.terminate()

    async def ping(self) -> None:
        await self.run(lambda conn: conn.fetchval("SELECT 1"))

    async def generation(self) -> int:
        async def job(conn: Conn) -> int:
            value = await conn.fetchval("SELECT value FROM meta WHERE key = 'generation'")
            return int(value) if value is not None else 0

        return await self.run(job)

    async def wait_changed(self, within: float) -> bool:
        if self._listener is None or self._listener.is_closed():
            await self._listen()
        try:
            await asyncio.wait_for(self._changed.wait(), within)
        except TimeoutError:
            return False
        self._changed.clear()
        return True

    async def _listen(self) -> None:
        """(Re)connect the LISTEN connection; rows deleted while we were deaf count
        as a change (the generation tells)."""
        try:
            conn = await asyncpg.connect(**(await self._connect_kwargs()))
            await conn.add_listener(CHANNEL, self._notified)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise IndexUnavailable(f"index {self.name}: {_reason(exc)}") from None
        self._listener = conn
        current = await self.generation()
        if self._seen_generation is not None and current != self._seen_generation:
            self._changed.set()
        self._seen_generation = current

    def _notified(self, *_: object) -> None:
        self._changed.set()

    async def _deleting(self, conn: Conn, statements: Sequence[tuple[str, Any]]) -> None:
        """Run deletions with the generation bump and the notification, atomically."""
        async with conn.transaction():
            for query, args in statements:
                await conn.execute(query, *args)
            generation = await conn.fetchval(BUMP + " RETURNING value")
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, generation)
        self._seen_generation = int(generation)

    # ------------------------------------------------------------------ tags

    async def get_tag(self, upstream: str, repo: str, tag: str) -> TagRow | None:
        row = await self.run(
            lambda conn: conn.fetchrow(
                "SELECT digest, checked_at, last_pulled FROM tags"
                " WHERE upstream = $1 AND repo = $2 AND tag = $3",
                upstream,
                repo,
                tag,
            )
        )
        return TagRow(row[0], row[1], row[2]) if row else None

    async def set_tag(
        self, upstream: str, repo: str, tag: str, digest: str, checked_at: float
    ) -> None:
        await self.run(
            lambda conn: conn.execute(
                "INSERT INTO tags (upstream, repo, tag, digest, checked_at, last_pulled)"
                " VALUES ($1, $2, $3, $4, $5, $5)"
                " ON CONFLICT (upstream, repo, tag) DO UPDATE SET"
                " digest = excluded.digest, checked_at = excluded.checked_at,"
                " last_pulled = GREATEST(tags.last_pulled, excluded.last_pulled)",
                upstream,
                repo,
                tag,
                digest,
                checked_at,
            )
        )

    async def delete_tag(self, upstream: str, repo: str, tag: str) -> None:
        await self.run(
            lambda conn: conn.execute(
                "DELETE FROM tags WHERE upstream = $1 AND repo = $2 AND tag = $3",
                upstream,
                repo,
                tag,
            )
        )

    async def list_tags(self, upstream: str, repo: str) -> list[str]:
        rows = await self.run(
            lambda conn: conn.fetch(
                'SELECT tag FROM tags WHERE upstream = $1 AND repo = $2 ORDER BY tag COLLATE "C"',
                upstream,
                repo,
            )
        )
        return [r[0] for r in rows]

    async def all_tags(self) -> list[TagEntry]:
        rows = await self.run(
            lambda conn: conn.fetch(
                "SELECT upstream, repo, tag, digest, last_pulled FROM tags"
                ' ORDER BY upstream COLLATE "C", repo COLLATE "C", tag COLLATE "C"'
            )
        )
        return [TagEntry(*r) for r in rows]

    async def prune_tags(self, entries: Sequence[TagEntry]) -> int:
        if not entries:
            return 0

        async def job(conn: Conn) -> int:
            async with conn.transaction():
                status = await conn.execute(
                    "DELETE FROM tags t USING unnest($1::text[], $2::text[], $3::text[],"
                    " $4::float8[]) AS v(u, r, g, p)"
                    " WHERE t.upstream = v.u AND t.repo = v.r AND t.tag = v.g"
                    " AND t.last_pulled <= v.p",
                    [e.upstream for e in entries],
                    [e.repo for e in entries],
                    [e.tag for e in entries],
                    [e.last_pulled for e in entries],
                )
                generation = await conn.fetchval(BUMP + " RETURNING value")
                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, generation)
            return int(status.split()[-1])

        return await self.run(job)

    # --------------------------------------------------------------- objects

    async def add_object(self, digest: str, size: int, media_type: str | None, now: float) -> None:
        async def job(conn: Conn) -> None:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO objects (digest, size, media_type, created, last_access)"
                    " VALUES ($1, $2, $3, $4, $4)"
                    " ON CONFLICT (digest) DO UPDATE SET size = excluded.size,"
                    " media_type = COALESCE(excluded.media_type, objects.media_type),"
                    " last_access = GREATEST(objects.last_access, excluded.last_access)",
                    digest,
                    size,
                    media_type,
                    now,
                )
                await conn.execute(
                    "INSERT INTO holdings (replica, digest, size, last_access)"
                    " VALUES ($1, $2, $3, $4) ON CONFLICT (replica, digest) DO UPDATE SET"
                    " size = excluded.size,"
                    " last_access = GREATEST(holdings.last_access, excluded.last_access)",
                    self.replica,
                    digest,
                    size,
                    now,
                )

        await self.run(job)

    async def adopt_objects(self, rows: Sequence[ObjectRow]) -> None:
        if not rows:
            return
        columns = (
            [r.digest for r in rows],
            [r.size for r in rows],
            [r.media_type for r in rows],
            [r.created for r in rows],
            [r.last_access for r in rows],
        )

        async def job(conn: Conn) -> None:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO objects (digest, size, media_type, created, last_access)"
                    " SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::float8[],"
                    " $5::float8[]) ON CONFLICT (digest) DO NOTHING",
                    *columns,
                )
                await conn.execute(
                    "INSERT INTO holdings (replica, digest, size, last_access)"
                    " SELECT $1, d, s, a FROM unnest($2::text[], $3::bigint[], $4::float8[])"
                    " AS v(d, s, a) ON CONFLICT (replica, digest) DO NOTHING",
                    self.replica,
                    columns[0],
                    columns[1],
                    columns[4],
                )

        await self.run(job)

    async def get_object(self, digest: str) -> ObjectRow | None:
        row = await self.run(
            lambda conn: conn.fetchrow(
                "SELECT digest, size, media_type, created, last_access FROM objects"
                " WHERE digest = $1",
                digest,
            )
        )
        return ObjectRow(*row) if row else None

    async def total_size(self) -> int:
        value = await self.run(
            lambda conn: conn.fetchval(
                "SELECT bytes FROM tier_totals WHERE replica = $1", self.replica
            )
        )
        return int(value or 0)

    async def count_objects(self) -> int:
        value = await self.run(
            lambda conn: conn.fetchval(
                "SELECT objects FROM tier_totals WHERE replica = $1", self.replica
            )
        )
        return int(value or 0)

    async def get_objects(self, digests: Sequence[str]) -> list[ObjectRow]:
        """Rows of this replica's local tier (as ``objects_page`` gives them)."""
        names = list(dict.fromkeys(digests))

        async def job(conn: Conn) -> list[ObjectRow]:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                held = await conn.fetch(
                    "SELECT digest, size, last_access FROM holdings"
                    " WHERE replica = $1 AND digest = ANY($2::text[])",
                    self.replica,
                    names,
                    timeout=SLOW_QUERY_TIMEOUT,
                )
                catalog = await conn.fetch(
                    "SELECT digest, media_type, created FROM objects"
                    " WHERE digest = ANY($1::text[])",
                    [r[0] for r in held],
                    timeout=SLOW_QUERY_TIMEOUT,
                )
            columns: dict[str, tuple[str | None, float]] = {r[0]: (r[1], r[2]) for r in catalog}
            rows = []
            for digest, size, accessed in held:
                media_type, created = columns.get(digest, (None, accessed))
                rows.append(ObjectRow(digest, size, media_type, created, accessed))
            return rows

        return await self.run(job, budget=SLOW_QUERY_TIMEOUT)

    async def objects_page(self, after: Cursor | None, limit: int) -> list[ObjectRow]:
        columns = LOCAL_OBJECTS
        order = ' ORDER BY h.last_access, h.digest COLLATE "C" LIMIT'
        if after is None:
            rows = await self.run(
                lambda conn: conn.fetch(f"{columns}{order} $2", self.replica, limit)
            )
        else:
            rows = await self.run(
                lambda conn: conn.fetch(
                    f'{columns} AND (h.last_access, h.digest COLLATE "C") > ($2, $3){order} $4',
                    self.replica,
                    after[0],
                    after[1],
                    limit,
                )
            )
        return [ObjectRow(*r) for r in rows]

    async def forget(self, digests: Sequence[str]) -> None:
        if not digests:
            return
        names = list(digests)
        await self.run(
            lambda conn: self._deleting(
                conn,
                [
                    (
                        "DELETE FROM holdings WHERE replica = $1 AND digest = ANY($2::text[])",
                        (self.replica, names),
                    ),
                    *_unheld(names),
                ],
            )
        )

    # ------------------------------------------------------ the shared tier

    def _bucket(self) -> str:
        if self.shared is None:
            raise ValueError("this index was opened without a shared tier")
        return self.shared

    async def add_shared(self, digest: str, size: int, now: float) -> None:
        bucket = self._bucket()

        async def job(conn: Conn) -> None:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO objects (digest, size, media_type, created, last_access)"
                    " VALUES ($1, $2, NULL, $3, $3) ON CONFLICT (digest) DO NOTHING",
                    digest,
                    size,
                    now,
                )
                await conn.execute(
                    "INSERT INTO holdings (replica, digest, size, last_access)"
                    " VALUES ($1, $2, $3, $4) ON CONFLICT (replica, digest) DO UPDATE SET"
                    " size = excluded.size",
                    bucket,
                    digest,
                    size,
                    now,
                )

        await self.run(job)

    async def is_shared(self, digest: str) -> bool:
        bucket = self._bucket()
        found = await self.run(
            lambda conn: conn.fetchval(
                "SELECT 1 FROM holdings WHERE replica = $1 AND digest = $2", bucket, digest
            )
        )
        return found is not None

    async def shared_totals(self) -> tuple[int, int]:
        bucket = self._bucket()
        # The bucket's holdings have running totals like a replica's (tier_totals).
        row = await self.run(
            lambda conn: conn.fetchrow(
                "SELECT objects, bytes FROM tier_totals WHERE replica = $1", bucket
            )
        )
        return (int(row[0]), int(row[1])) if row else (0, 0)

    async def shared_page(self, after: Cursor | None, limit: int) -> list[ObjectRow]:
        bucket = self._bucket()
        columns = (
            "SELECT o.digest, h.size, o.media_type, o.created, o.last_access"
            " FROM holdings h JOIN objects o ON o.digest = h.digest WHERE h.replica = $1"
        )
        order = ' ORDER BY o.last_access, o.digest COLLATE "C" LIMIT'
        if after is None:
            rows = await self.run(lambda conn: conn.fetch(f"{columns}{order} $2", bucket, limit))
        else:
            rows = await self.run(
                lambda conn: conn.fetch(
                    f'{columns} AND (o.last_access, o.digest COLLATE "C") > ($2, $3){order} $4',
                    bucket,
                    after[0],
                    after[1],
                    limit,
                )
            )
        return [ObjectRow(*r) for r in rows]

    async def forget_shared(self, digests: Sequence[str]) -> None:
        if not digests:
            return
        bucket, names = self._bucket(), list(digests)
        await self.run(
            lambda conn: self._deleting(
                conn,
                [
                    (
                        "DELETE FROM holdings WHERE replica = $1 AND digest = ANY($2::text[])",
                        (bucket, names),
                    ),
                    *_unheld(names),
                ],
            )
        )

    # ------------------------------------------------------------ references

    async def record_refs(self, refs: Mapping[str, ManifestRefs]) -> None:
        items = list(refs.items())
        for start in range(0, len(items), IMPORT_BATCH):
            chunk = items[start : start + IMPORT_BATCH]
            rows = [
                (manifest, digest, child)
                for manifest, found in chunk
                for child, digests in ((True, found.children), (False, found.blobs))
                for digest in digests
            ]

            async def job(
                conn: Conn,
                chunk: list[tuple[str, ManifestRefs]] = chunk,
                rows: list[tuple[str, str, bool]] = rows,
            ) -> None:
                async with conn.transaction():
                    await conn.execute(
                        "INSERT INTO refs (manifest, digest, child)"
                        " SELECT v.m, v.d, v.c FROM unnest($1::text[], $2::text[], $3::bool[])"
                        " AS v(m, d, c) JOIN objects o"
                        " ON o.digest = v.m AND o.media_type IS NOT NULL"
                        " ON CONFLICT DO NOTHING",
                        [r[0] for r in rows],
                        [r[1] for r in rows],
                        [r[2] for r in rows],
                    )
                    await conn.execute(
                        "UPDATE objects SET refs_known = true WHERE digest = ANY($1::text[])"
                        " AND media_type IS NOT NULL AND NOT refs_known",
                        [m for m, _ in chunk],
                    )

            await self.run(job)

    async def unparsed_manifests(self, after: str | None, limit: int) -> list[str]:
        rows = await self.run(
            lambda conn: conn.fetch(
                "SELECT o.digest FROM objects o JOIN holdings h"
                " ON h.replica = $1 AND h.digest = o.digest"
                f" WHERE o.media_type IS NOT NULL AND NOT o.refs_known AND o.digest {C} > $2"
                f" ORDER BY o.digest {C} LIMIT $3",
                self.replica,
                after or "",
                limit,
                timeout=SLOW_QUERY_TIMEOUT,
            ),
            budget=SLOW_QUERY_TIMEOUT,
        )
        return [r[0] for r in rows]

    async def refs_of(self, manifests: Sequence[str]) -> dict[str, ManifestRefs]:
        async def job(conn: Conn) -> dict[str, ManifestRefs]:
            names = list(dict.fromkeys(manifests))
            known = await conn.fetch(
                "SELECT o.digest FROM objects o JOIN holdings h"
                " ON h.replica = $1 AND h.digest = o.digest"
                " WHERE o.digest = ANY($2::text[]) AND o.refs_known",
                self.replica,
                names,
                timeout=SLOW_QUERY_TIMEOUT,
            )
            found: dict[str, tuple[list[str], list[str]]] = {r[0]: ([], []) for r in known}
            rows = await conn.fetch(
                "SELECT manifest, digest, child FROM refs WHERE manifest = ANY($1::text[])"
                f" ORDER BY manifest {C}, digest {C}",
                list(found),
                timeout=SLOW_QUERY_TIMEOUT,
            )
            for manifest, digest, child in rows:
                found[manifest][1 if child else 0].append(digest)
            return {m: ManifestRefs(tuple(b), tuple(c)) for m, (b, c) in found.items()}

        return await self.run(job, budget=SLOW_QUERY_TIMEOUT)

    async def prune_refs(self) -> int:
        status = await self.run(
            lambda conn: conn.execute(
                "DELETE FROM refs r WHERE NOT EXISTS"
                " (SELECT 1 FROM objects o WHERE o.digest = r.manifest)",
                timeout=SLOW_QUERY_TIMEOUT,
            ),
            budget=SLOW_QUERY_TIMEOUT,
        )
        return int(status.split()[-1])

    async def digest_range(self, lo: str, hi: str | None) -> DigestRange:
        def within(column: str, first: int) -> str:
            bound = f"{column} {C} >= ${first}"
            return bound if hi is None else f"{bound} AND {column} {C} < ${first + 1}"

        bounds = (lo,) if hi is None else (lo, hi)
        slow = SLOW_QUERY_TIMEOUT

        # Range scans of single indexes, joined here: a join in the server preferred
        # hashing a whole table, once per range. Each name comes back once, though: a
        # base layer most images are built on is listed by most manifests (in the 1M
        # benchmark one by 100,238), and fetching its range's (digest, manifest) pairs
        # (118,832) and then the holdings of those manifests (109,046) took 45 MB at
        # once, of which the allocator kept much: gc and verify peaked at 171 MB, 100
        # MB since. So the server answers, per digest in the range, whether a manifest
        # this replica holds lists it (the first one found will do). OFFSET 0 keeps
        # each a lookup per row: per digest its references, per reference one primary-
        # key probe of the holding. As a join, a prepared plan without statistics
        # (a table just filled) scanned every holding of the replica per reference:
        # minutes for 30k objects.
        async def job(conn: Conn) -> DigestRange:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                held = await conn.fetch(
                    "SELECT digest, size, last_access FROM holdings"
                    f" WHERE replica = $1 AND {within('digest', 2)} ORDER BY digest {C}",
                    self.replica,
                    *bounds,
                    timeout=slow,
                )
                catalog = await conn.fetch(
                    f"SELECT digest, media_type, created FROM objects WHERE {within('digest', 1)}",
                    *bounds,
                    timeout=slow,
                )
                tagged = await conn.fetch(
                    f"SELECT DISTINCT digest FROM tags WHERE {within('digest', 1)}",
                    *bounds,
                    timeout=slow,
                )
                linked = await conn.fetch(
                    f"SELECT DISTINCT digest FROM links WHERE {within('digest', 1)}",
                    *bounds,
                    timeout=slow,
                )
                listed = await conn.fetch(
                    "SELECT d.digest FROM (SELECT DISTINCT digest FROM refs"
                    f" WHERE {within('digest', 2)}) d WHERE EXISTS (SELECT 1 FROM refs r"
                    " WHERE r.digest = d.digest AND EXISTS (SELECT 1 FROM holdings p"
                    " WHERE p.replica = $1 AND p.digest = r.manifest OFFSET 0) OFFSET 0)",
                    self.replica,
                    *bounds,
                    timeout=slow,
                )
            columns = {r[0]: (r[1], r[2]) for r in catalog}
            objects = []
            for digest, size, accessed in held:
                media_type, created = columns.get(digest, (None, accessed))
                objects.append(ObjectRow(digest, size, media_type, created, accessed))
            names = {r[0] for rows in (tagged, linked, listed) for r in rows}
            return DigestRange(objects, frozenset(names), frozenset(r[0] for r in tagged))

        return await self.run(job, budget=SLOW_QUERY_TIMEOUT)

    # --------------------------------------------------------------- listing

    async def tags_page(self, after: TagKey | None, limit: int) -> list[TagEntry]:
        columns = "SELECT upstream, repo, tag, digest, last_pulled FROM tags"
        order = f" ORDER BY upstream {C}, repo {C}, tag {C}"
        if after is None:
            rows = await self.run(lambda conn: conn.fetch(f"{columns}{order} LIMIT $1", limit))
        else:
            rows = await self.run(
                lambda conn: conn.fetch(
                    f"{columns} WHERE (upstream {C}, repo {C}, tag {C}) > ($1, $2, $3)"
                    f"{order} LIMIT $4",
                    *after,
                    limit,
                )
            )
        return [TagEntry(*r) for r in rows]

    async def untagged_manifests(self) -> list[UntaggedManifest]:
        rows = await self.run(
            lambda conn: conn.fetch(
                "SELECT l.upstream, l.repo, o.digest, h.last_access FROM objects o"
                " JOIN holdings h ON h.replica = $1 AND h.digest = o.digest"
                " JOIN links l ON l.digest = o.digest"
                " WHERE o.media_type IS NOT NULL"
                " AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.upstream = l.upstream"
                " AND t.repo = l.repo AND t.digest = o.digest)"
                " AND NOT EXISTS (SELECT 1 FROM refs r JOIN holdings p ON p.replica = $1"
                " AND p.digest = r.manifest WHERE r.digest = o.digest AND r.child)"
                f" ORDER BY l.upstream {C}, l.repo {C}, o.digest {C}",
                self.replica,
                timeout=SLOW_QUERY_TIMEOUT,
            ),
            budget=SLOW_QUERY_TIMEOUT,
        )
        return [UntaggedManifest(*r) for r in rows]

    async def image_stats(self, roots: Sequence[str]) -> dict[str, ImageStats]:
        names = list(dict.fromkeys(roots))
        rows = await self.run(
            lambda conn: conn.fetch(IMAGE_STATS, self.replica, names, timeout=SLOW_QUERY_TIMEOUT),
            budget=SLOW_QUERY_TIMEOUT,
        )
        found = {
            root: ImageStats(
                media_type if objects else None,
                int(size),
                int(objects),
                int(missing),
                int(platforms),
                int(cached),
            )
            for root, media_type, size, objects, missing, platforms, cached in rows
        }
        return {root: found.get(root, NO_IMAGE) for root in names}

    async def range_usage(self, lo: str, hi: str | None) -> RangeUsage:
        def within(column: str) -> str:
            return f"{column} {C} >= $2" + ("" if hi is None else f" AND {column} {C} < $3")

        bounds = (lo,) if hi is None else (lo, hi)
        slow = SLOW_QUERY_TIMEOUT

        async def job(conn: Conn) -> RangeUsage:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                digests = await conn.fetch(
                    f"SELECT h.digest FROM holdings h WHERE h.replica = $1 AND {within('h.digest')}"
                    f" ORDER BY h.digest {C}",
                    self.replica,
                    *bounds,
                    timeout=slow,
                )
                loose = await conn.fetchrow(
                    _unreferenced(within), self.replica, *bounds, timeout=slow
                )
            assert loose is not None  # an aggregate: always one row
            return RangeUsage([r[0] for r in digests], int(loose[0]), int(loose[1]))

        return await self.run(job, budget=SLOW_QUERY_TIMEOUT)

    async def usage_summary(self) -> UsageSummary:
        async def job(conn: Conn) -> UsageSummary:
            slow = SLOW_QUERY_TIMEOUT
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                repos = await conn.fetch(
                    # Grouped first: each from its primary key's order, not a sort of
                    # every link on disk (0.9 s at 1M objects, then 0.3 s).
                    "SELECT upstream, count(*) FROM (SELECT upstream, repo FROM links"
                    " GROUP BY upstream, repo UNION SELECT upstream, repo FROM tags"
                    " GROUP BY upstream, repo) r GROUP BY upstream",
                    timeout=slow,
                )
                tags = await conn.fetch(
                    "SELECT upstream, count(*) FROM tags GROUP BY upstream", timeout=slow
                )
                owned = await conn.fetch(
                    "SELECT x.upstream, count(*), sum(h.size) FROM (SELECT upstream, digest"
                    " FROM links UNION SELECT upstream, digest FROM tags) x"
                    " JOIN holdings h ON h.replica = $1 AND h.digest = x.digest"
                    " GROUP BY x.upstream",
                    self.replica,
                    timeout=slow,
                )
                total = await conn.fetchrow(
                    "SELECT objects, bytes FROM tier_totals WHERE replica = $1", self.replica
                )
                shared = await conn.fetchrow(
                    "SELECT count(*), COALESCE(sum(h.size), 0) FROM (SELECT digest FROM links"
                    " GROUP BY digest HAVING count(*) > 1) s"
                    " JOIN holdings h ON h.replica = $1 AND h.digest = s.digest",
                    self.replica,
                    timeout=slow,
                )
            per_repo = {r[0]: int(r[1]) for r in repos}
            per_tag = {r[0]: int(r[1]) for r in tags}
            per_owner = {r[0]: (int(r[1]), int(r[2])) for r in owned}
            upstreams = tuple(
                UpstreamUsage(u, per_repo[u], per_tag.get(u, 0), *per_owner.get(u, (0, 0)))
                for u in sorted(per_repo)
            )
            objects, size = (int(total[0]), int(total[1])) if total else (0, 0)
            assert shared is not None  # an aggregate: always one row
            return UsageSummary(upstreams, objects, size, int(shared[0]), int(shared[1]))

        return await self.run(job, budget=SLOW_QUERY_TIMEOUT)

    # ----------------------------------------------------------------- links

    async def is_linked(self, upstream: str, repo: str, digest: str) -> bool:
        row = await self.run(
            lambda conn: conn.fetchval(
                "SELECT 1 FROM links WHERE upstream = $1 AND repo = $2 AND digest = $3",
                upstream,
                repo,
                digest,
            )
        )
        return row is not None

    async def link(self, upstream: str, repo: str, digests: Sequence[str]) -> None:
        if not digests:
            return
        await self.run(
            lambda conn: conn.execute(
                "INSERT INTO links (upstream, repo, digest)"
                " SELECT $1, $2, d FROM unnest($3::text[]) AS d ON CONFLICT DO NOTHING",
                upstream,
                repo,
                list(digests),
            )
        )

    async def unlink(self, upstream: str, repo: str, digests: Sequence[str] | None) -> None:
        statement: tuple[str, tuple[Any, ...]]
        if digests is None:
            statement = (
                "DELETE FROM links WHERE upstream = $1 AND repo = $2",
                (upstream, repo),
            )
        else:
            statement = (
                "DELETE FROM links WHERE upstream = $1 AND repo = $2 AND digest = ANY($3::text[])",
                (upstream, repo, list(digests)),
            )
        await self.run(lambda conn: self._deleting(conn, [statement]))

    async def repositories(self, upstream: str | None = None) -> list[RepoKey]:
        where = " WHERE upstream = $1" if upstream else ""
        query = (
            f"SELECT * FROM (SELECT upstream, repo FROM links{where}"
            f" UNION SELECT upstream, repo FROM tags{where}) AS r"
            ' ORDER BY upstream COLLATE "C", repo COLLATE "C"'
        )
        args = (upstream,) if upstream else ()
        rows = await self.run(lambda conn: conn.fetch(query, *args))
        return [(r[0], r[1]) for r in rows]

    async def links_of(self, upstream: str, repo: str) -> list[str]:
        rows = await self.run(
            lambda conn: conn.fetch(
                "SELECT digest FROM links WHERE upstream = $1 AND repo = $2"
                ' ORDER BY digest COLLATE "C"',
                upstream,
                repo,
            )
        )
        return [r[0] for r in rows]

    async def holders(self, digests: Sequence[str]) -> dict[str, frozenset[RepoKey]]:
        rows = await self.run(
            lambda conn: conn.fetch(
                "SELECT digest, upstream, repo FROM links WHERE digest = ANY($1::text[])",
                list(dict.fromkeys(digests)),
            )
        )
        found: dict[str, set[RepoKey]] = {}
        for digest, upstream, repo in rows:
            found.setdefault(digest, set()).add((upstream, repo))
        return {d: frozenset(r) for d, r in found.items()}

    # ---------------------------------------------------------- access times

    async def record_access(
        self, objects: Mapping[str, float], tags: Mapping[TagKey, float]
    ) -> None:
        if not objects and not tags:
            return

        async def job(conn: Conn) -> None:
            async with conn.transaction():
                if objects:
                    await conn.execute(
                        "UPDATE objects o SET last_access = GREATEST(o.last_access, v.t)"
                        " FROM unnest($1::text[], $2::float8[]) AS v(d, t) WHERE o.digest = v.d",
                        list(objects),
                        list(objects.values()),
                    )
                    await conn.execute(
                        "UPDATE holdings h SET last_access = GREATEST(h.last_access, v.t)"
                        " FROM unnest($2::text[], $3::float8[]) AS v(d, t)"
                        " WHERE h.replica = $1 AND h.digest = v.d",
                        self.replica,
                        list(objects),
                        list(objects.values()),
                    )
                if tags:
                    keys = list(tags)
                    await conn.execute(
                        "UPDATE tags g SET last_pulled = GREATEST(g.last_pulled, v.t)"
                        " FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[])"
                        " AS v(u, r, n, t)"
                        " WHERE g.upstream = v.u AND g.repo = v.r AND g.tag = v.n",
                        [k[0] for k in keys],
                        [k[1] for k in keys],
                        [k[2] for k in keys],
                        list(tags.values()),
                    )

        await self.run(job)

    # ------------------------------------------------------------------- bulk

    async def import_rows(
        self,
        objects: Sequence[ObjectRow] = (),
        tags: Sequence[TagImport] = (),
        links: Sequence[LinkKey] = (),
        refs: Mapping[str, ManifestRefs] | None = None,
    ) -> None:
        for start in range(0, len(objects), IMPORT_BATCH):
            await self.adopt_objects(objects[start : start + IMPORT_BATCH])
        if refs:
            await self.record_refs(refs)
        tag_columns = [
            (t.upstream, t.repo, t.tag, t.digest, t.checked_at, t.last_pulled) for t in tags
        ]
        await self._insert_columns(
            "INSERT INTO tags (upstream, repo, tag, digest, checked_at, last_pulled)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],"
            " $5::float8[], $6::float8[]) ON CONFLICT DO NOTHING",
            tag_columns,
        )
        await self._insert_columns(
            "INSERT INTO links (upstream, repo, digest)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) ON CONFLICT DO NOTHING",
            list(links),
        )

    async def _insert_columns(self, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
        """``sql`` takes one array per column (``unnest``): rows in statements of a bounded size."""
        for start in range(0, len(rows), IMPORT_BATCH):
            columns = [
                list(column) for column in zip(*rows[start : start + IMPORT_BATCH], strict=True)
            ]

            async def job(conn: Conn, columns: list[list[Any]] = columns) -> None:
                await conn.execute(sql, *columns)

            await self.run(job)


async def _migrate(conn: Conn) -> None:
    """Create or upgrade the schema: one replica at a time (advisory lock)."""
    async with conn.transaction():
        # Another replica's migration is waited for (within QUERY_TIMEOUT), not LOCK_TIMEOUT.
        await conn.execute("SET LOCAL lock_timeout = 0")
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(SCHEMA)
        row = await conn.fetchval("SELECT value FROM meta WHERE key = 'schema'")
        found = int(row) if row is not None else 0
        if found > SCHEMA_VERSION:
            raise IndexUnavailable(
                f"index schema {found} is newer than this registry-cache understands"
                f" ({SCHEMA_VERSION}): upgrade registry-cache"
            )
        if found < 2:
            await conn.execute(MIGRATE_TO_2)
            await conn.execute(FILL_TOTALS)
        await conn.execute(
            "INSERT INTO meta (key, value) VALUES ('schema', $1)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            str(SCHEMA_VERSION),
        )


def _unheld(names: list[str]) -> list[tuple[str, tuple[Any, ...]]]:
    """Content no replica and no bucket holds any more leaves the catalog, with its tags."""
    return [
        (
            "DELETE FROM objects o WHERE o.digest = ANY($1::text[])"
            " AND NOT EXISTS (SELECT 1 FROM holdings h WHERE h.digest = o.digest)",
            (names,),
        ),
        (
            "DELETE FROM tags t WHERE t.digest = ANY($1::text[])"
            " AND NOT EXISTS (SELECT 1 FROM holdings h WHERE h.digest = t.digest)",
            (names,),
        ),
    ]


def _is_bug(exc: asyncpg.PostgresError) -> bool:
    """SQL errors that no retry can fix (a syntax error, a missing column)."""
    state = getattr(exc, "sqlstate", "") or ""
    return state.startswith(("42", "22", "23"))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
