"""The index on one machine: SQLite in WAL mode, shared by every worker process.

Nothing here runs on the event loop. Writes go to one writer thread with its own
connection (a long busy timeout is harmless there: only the awaiting coroutine
waits, never the loop); reads run on two reader threads, each with its own
connection, and in WAL mode never wait for a writer. A hit needs no query at all
(the front's memos answer it), and maintenance (``cache gc/prune/verify``, eviction)
deletes in short transactions, so another process's lock is held for milliseconds.

Schema versions: 1 (the first release), 2 (adds ``tags_by_digest``, without
which dropping the tags of an evicted manifest scanned every tag, and an LRU index
on ``(last_access, digest)`` for paged eviction walks), 3 (the shared tier: a
``shared`` table of what the bucket holds, and ``objects.held``, 1 while the data
directory holds the object: a row the bucket still holds outlives its local copy)
and 4 (``refs``: what each stored manifest lists, so ``cache ls/du/gc`` parse no
manifest; ``objects.refs_known``; ``totals``: the number and bytes of each tier's
rows, the local tier's (``held = 1``) and the bucket's (``shared``), kept by
triggers instead of a SUM over every row per fill). Opening migrates forward, from
any earlier version; to 4 costs one scan of ``objects`` and ``shared`` (the
totals), and the references of manifests stored before are parsed from their
files by the first maintenance command that needs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

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

T = TypeVar("T")
log = logging.getLogger("registry_cache.index")

SCHEMA_VERSION = 4
# One statement per item (a trigger's body has semicolons of its own). A new file
# gets every column here; an older one gets those it lacks from COLUMNS first.
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS objects (
        digest      TEXT PRIMARY KEY,
        size        INTEGER NOT NULL,
        media_type  TEXT,
        created     REAL NOT NULL,
        last_access REAL NOT NULL,
        held        INTEGER NOT NULL DEFAULT 1,
        refs_known  INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS tags (
        upstream    TEXT NOT NULL,
        repo        TEXT NOT NULL,
        tag         TEXT NOT NULL,
        digest      TEXT NOT NULL,
        checked_at  REAL NOT NULL,
        last_pulled REAL NOT NULL,
        PRIMARY KEY (upstream, repo, tag)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS links (
        upstream    TEXT NOT NULL,
        repo        TEXT NOT NULL,
        digest      TEXT NOT NULL,
        PRIMARY KEY (upstream, repo, digest)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID""",
    # 3: what the bucket holds (its catalog rows are in objects, held or not).
    """CREATE TABLE IF NOT EXISTS shared (
        digest      TEXT PRIMARY KEY,
        size        INTEGER NOT NULL,
        stored      REAL NOT NULL
    ) WITHOUT ROWID""",
    # 4: what manifests list (child: a manifest of an index). Rows count only while
    # their manifest has an object row; those of manifests gone are left to prune_refs
    # (cache gc): deleting them with every evicted manifest tripled a pass's writes.
    """CREATE TABLE IF NOT EXISTS refs (
        manifest TEXT NOT NULL,
        digest   TEXT NOT NULL,
        child    INTEGER NOT NULL,
        PRIMARY KEY (manifest, digest)
    ) WITHOUT ROWID""",
    # 4: the running totals of each tier: eviction asks for them before every fill
    # (the bucket's before every upload), and SUM(size) over a million rows takes a
    # tenth of a second.
    """CREATE TABLE IF NOT EXISTS totals (
        tier    TEXT PRIMARY KEY CHECK (tier IN ('local', 'shared')),
        objects INTEGER NOT NULL,
        bytes   INTEGER NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS links_by_digest ON links (digest)",
    "CREATE INDEX IF NOT EXISTS tags_by_digest ON tags (digest)",
    "DROP INDEX IF EXISTS objects_by_access",
    "CREATE INDEX IF NOT EXISTS objects_lru ON objects (last_access, digest)",
    "CREATE INDEX IF NOT EXISTS refs_by_digest ON refs (digest)",
    "CREATE INDEX IF NOT EXISTS objects_manifests ON objects (digest) WHERE media_type IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS objects_unparsed ON objects (digest)"
    " WHERE media_type IS NOT NULL AND refs_known = 0",
    # The local tier is the rows the data directory holds (held = 1): a row the
    # bucket keeps after its file went (held = 0) counts there, not here.
    """CREATE TRIGGER IF NOT EXISTS objects_added AFTER INSERT ON objects
    WHEN NEW.held = 1 BEGIN
        UPDATE totals SET objects = objects + 1, bytes = bytes + NEW.size WHERE tier = 'local';
    END""",
    """CREATE TRIGGER IF NOT EXISTS objects_removed AFTER DELETE ON objects
    WHEN OLD.held = 1 BEGIN
        UPDATE totals SET objects = objects - 1, bytes = bytes - OLD.size WHERE tier = 'local';
    END""",
    """CREATE TRIGGER IF NOT EXISTS objects_changed AFTER UPDATE OF size, held ON objects
    WHEN NEW.size != OLD.size OR NEW.held != OLD.held BEGIN
        UPDATE totals SET objects = objects + NEW.held - OLD.held,
            bytes = bytes + NEW.held * NEW.size - OLD.held * OLD.size
        WHERE tier = 'local';
    END""",
    """CREATE TRIGGER IF NOT EXISTS shared_added AFTER INSERT ON shared BEGIN
        UPDATE totals SET objects = objects + 1, bytes = bytes + NEW.size WHERE tier = 'shared';
    END""",
    """CREATE TRIGGER IF NOT EXISTS shared_removed AFTER DELETE ON shared BEGIN
        UPDATE totals SET objects = objects - 1, bytes = bytes - OLD.size WHERE tier = 'shared';
    END""",
    """CREATE TRIGGER IF NOT EXISTS shared_resized AFTER UPDATE OF size ON shared
    WHEN NEW.size != OLD.size BEGIN
        UPDATE totals SET bytes = bytes + NEW.size - OLD.size WHERE tier = 'shared';
    END""",
)
# Columns later versions added to objects (ALTER TABLE before SCHEMA runs): rows of
# earlier releases were all the data directory's (3), and their manifests'
# references are parsed once, by the first maintenance command that needs them (4,
# see unparsed_manifests).
COLUMNS = (
    ("held", "INTEGER NOT NULL DEFAULT 1"),
    ("refs_known", "INTEGER NOT NULL DEFAULT 0"),
)
# Deletes and inserts are cut into transactions of this many rows: each holds the
# write lock for a few milliseconds, so other processes' writes wait no longer.
BATCH = 500
IMPORT_BATCH = 5000  # rows per transaction of a bulk import (inserts only: cheap)
BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})  # primary result codes
WRITE_BUSY_TIMEOUT = 30.0  # the writer thread may wait this long for another process
READ_BUSY_TIMEOUT = 2.0
WAL_CHECKPOINT_PAGES = 10_000  # 40 MB of WAL between checkpoints (the default is 1,000)
POLL_INTERVAL = 5.0  # how often generation() is asked by wait_changed
OBJECT_COLUMNS = "digest, size, media_type, created, last_access"
# ``inventory.closure`` of a page of manifests (a JSON array), in the database: walk
# what each root reaches through stored manifests (a root, or a manifest reached as
# an index's child), then count each (root, digest) once. A node carries its row's
# size (NULL: not stored), so each costs one lookup. Per root: its media type, the
# bytes and number of stored objects, the blobs listed but not stored, and the
# root's children (platforms), all and stored.
IMAGE_STATS = f"""
WITH RECURSIVE
walk(root, digest, depth, child, size, media_type) AS (
    SELECT r.value, r.value, 0, 1, o.size, o.media_type FROM json_each(?1) r
    LEFT JOIN objects o ON o.digest = r.value AND o.held = 1
    UNION ALL
    SELECT w.root, f.digest, w.depth + 1, f.child, o.size, NULL FROM walk w
    JOIN refs f ON f.manifest = w.digest
    LEFT JOIN objects o ON o.digest = f.digest AND o.held = 1
    WHERE w.child AND w.size IS NOT NULL AND w.depth < {CLOSURE_DEPTH}
),
nodes AS (
    SELECT root, size, MAX(media_type) AS media_type,
        MAX(depth > 0 AND NOT child) AS blob, MAX(depth = 1 AND child) AS platform
    FROM walk GROUP BY root, digest
)
SELECT root, MAX(media_type), COALESCE(SUM(size), 0), COUNT(size),
    SUM(blob AND size IS NULL), SUM(platform), SUM(platform AND size IS NOT NULL)
FROM nodes GROUP BY root
"""
# An object row ``o`` that no tag, link or stored manifest names (what gc removes).
UNREFERENCED = (
    "NOT EXISTS (SELECT 1 FROM tags t WHERE t.digest = o.digest)"
    " AND NOT EXISTS (SELECT 1 FROM links l WHERE l.digest = o.digest)"
    " AND NOT EXISTS (SELECT 1 FROM refs r JOIN objects m ON m.digest = r.manifest"
    " WHERE r.digest = o.digest AND m.held = 1)"
)


class SqliteIndex:
    """``Index`` over ``DATA/index.sqlite3``. Create with ``await SqliteIndex.open(path)``."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="index-write")
        self._readers = ThreadPoolExecutor(2, thread_name_prefix="index-read")
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        self._seen_generation: int | None = None

    @classmethod
    async def open(cls, path: Path, *, readonly: bool = False) -> SqliteIndex:
        index = cls(path, readonly=readonly)
        try:
            if readonly:
                await index._read(_check_current)
            else:
                await index._write(_migrate)
        except BaseException:
            await index.close()
            raise
        return index

    # -------------------------------------------------------------- plumbing

    def _uri(self) -> str:
        if not self.readonly:
            return f"file:{self.path}"
        # A read-only copy (another user's, a backup, a read-only mount) has no -shm
        # we may create: immutable tells SQLite nobody writes it while we read.
        directory_writable = os.access(self.path.parent, os.W_OK)
        return f"file:{self.path}?mode=ro" + ("" if directory_writable else "&immutable=1")

    def _connection(self, *, write: bool) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            timeout = WRITE_BUSY_TIMEOUT if write else READ_BUSY_TIMEOUT
            conn = sqlite3.connect(
                self._uri(),
                uri=True,
                isolation_level=None,
                check_same_thread=False,
                timeout=timeout,
            )
            conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            if write and not self.readonly:
                conn.execute("PRAGMA journal_mode = WAL")
                # WAL + NORMAL is durable against process crashes; the blob files are the truth.
                conn.execute("PRAGMA synchronous = NORMAL")
                # A checkpoint fsyncs twice: at the default (every 1,000 pages) an
                # eviction pass deleting rows in 500-row transactions checkpointed after
                # nearly every one, and spent most of its time in fsync.
                conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
            else:
                conn.execute("PRAGMA query_only = 1")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    async def _run(self, pool: ThreadPoolExecutor, job: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise IndexUnavailable(f"index {self.path} is closed")
        write = pool is self._writer

        def call() -> T:
            db = self._connection(write=write)
            for attempt in (1, 2):
                try:
                    result = job(db)
                    if isinstance(result, sqlite3.Cursor):
                        # A cursor must end on the thread that owns its connection: one
                        # dropped later on the loop thread resets its statement while this
                        # thread runs the next job on the same connection (the likely
                        # source of the SQLITE_MISUSE below; CPython gh-118172).
                        result.close()
                    return result
                except sqlite3.OperationalError as exc:
                    if "full" in str(exc):
                        raise  # the middleware makes a full disk a 507
                    if (exc.sqlite_errorcode & 0xFF) in BUSY_CODES:
                        # Another process held the lock past the busy timeout: the
                        # index answers, this one job is lost (as PostgreSQL's
                        # lock_timeout): not an outage.
                        raise IndexBusy(f"index {self.path}: {exc}") from None
                    raise IndexUnavailable(f"index {self.path}: {exc}") from None
                except sqlite3.InterfaceError as exc:
                    # SQLITE_MISUSE ("bad parameter or other API misuse") came twice from a
                    # plain INSERT OR IGNORE on the writer thread during heavy disk
                    # writeback; the cause is not known. The job's transaction was rolled
                    # back: run it once more, then the index counts as unavailable (a
                    # request's best-effort write is then lost, the request is not).
                    if db.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            db.execute("ROLLBACK")
                    if attempt == 2:
                        raise IndexUnavailable(f"index {self.path}: {exc}") from None
                    log.warning("index %s: %s; trying once more", self.path, exc)
                except sqlite3.DatabaseError as exc:
                    raise IndexUnavailable(f"index {self.path}: {exc}") from None
            raise AssertionError("unreachable")  # the loop returns or raises

        return await asyncio.get_running_loop().run_in_executor(pool, call)

    async def _read(self, job: Callable[[sqlite3.Connection], T]) -> T:
        return await self._run(self._readers, job)

    async def _write(self, job: Callable[[sqlite3.Connection], T]) -> T:
        if self.readonly:
            raise IndexUnavailable(f"index {self.path} is open read-only")
        return await self._run(self._writer, lambda db: _transaction(db, job))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        for pool in (self._writer, self._readers):
            await loop.run_in_executor(None, pool.shutdown, True)
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()

    async def ping(self) -> None:
        await self._read(lambda db: db.execute("SELECT value FROM meta WHERE key = 'schema'"))

    async def generation(self) -> int:
        def query(db: sqlite3.Connection) -> int:
            row = db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
            return int(row[0]) if row else 0

        return await self._read(query)

    async def wait_changed(self, within: float) -> bool:
        if self._seen_generation is None:
            self._seen_generation = await self.generation()
        await asyncio.sleep(min(within, POLL_INTERVAL))
        current = await self.generation()
        changed, self._seen_generation = current != self._seen_generation, current
        return changed

    # ------------------------------------------------------------------ tags

    async def get_tag(self, upstream: str, repo: str, tag: str) -> TagRow | None:
        def query(db: sqlite3.Connection) -> TagRow | None:
            row = db.execute(
                "SELECT digest, checked_at, last_pulled FROM tags"
                " WHERE upstream = ? AND repo = ? AND tag = ?",
                (upstream, repo, tag),
            ).fetchone()
            return TagRow(*row) if row else None

        return await self._read(query)

    async def set_tag(
        self, upstream: str, repo: str, tag: str, digest: str, checked_at: float
    ) -> None:
        await self._write(
            lambda db: db.execute(
                "INSERT INTO tags (upstream, repo, tag, digest, checked_at, last_pulled)"
                " VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (upstream, repo, tag) DO UPDATE SET"
                " digest = excluded.digest, checked_at = excluded.checked_at,"
                " last_pulled = MAX(tags.last_pulled, excluded.last_pulled)",
                (upstream, repo, tag, digest, checked_at, checked_at),
            )
        )

    async def delete_tag(self, upstream: str, repo: str, tag: str) -> None:
        await self._write(
            lambda db: db.execute(
                "DELETE FROM tags WHERE upstream = ? AND repo = ? AND tag = ?",
                (upstream, repo, tag),
            )
        )

    async def list_tags(self, upstream: str, repo: str) -> list[str]:
        def query(db: sqlite3.Connection) -> list[str]:
            rows = db.execute(
                "SELECT tag FROM tags WHERE upstream = ? AND repo = ? ORDER BY tag",
                (upstream, repo),
            ).fetchall()
            return [r[0] for r in rows]

        return await self._read(query)

    async def all_tags(self) -> list[TagEntry]:
        def query(db: sqlite3.Connection) -> list[TagEntry]:
            rows = db.execute(
                "SELECT upstream, repo, tag, digest, last_pulled FROM tags"
                " ORDER BY upstream, repo, tag"
            ).fetchall()
            return [TagEntry(*r) for r in rows]

        return await self._read(query)

    async def prune_tags(self, entries: Sequence[TagEntry]) -> int:
        deleted = 0
        for chunk in _chunks(entries):

            def job(db: sqlite3.Connection, chunk: Sequence[TagEntry] = chunk) -> int:
                cursor = db.executemany(
                    "DELETE FROM tags WHERE upstream = ? AND repo = ? AND tag = ?"
                    " AND last_pulled <= ?",
                    [(t.upstream, t.repo, t.tag, t.last_pulled) for t in chunk],
                )
                _bump_generation(db)
                return max(0, cursor.rowcount)

            deleted += await self._write(job)
        return deleted

    # --------------------------------------------------------------- objects

    async def add_object(self, digest: str, size: int, media_type: str | None, now: float) -> None:
        await self._write(
            lambda db: db.execute(
                "INSERT INTO objects (digest, size, media_type, created, last_access, held)"
                " VALUES (?, ?, ?, ?, ?, 1)"
                " ON CONFLICT (digest) DO UPDATE SET size = excluded.size, held = 1,"
                " media_type = COALESCE(excluded.media_type, objects.media_type),"
                " last_access = MAX(objects.last_access, excluded.last_access)",
                (digest, size, media_type, now, now),
            )
        )

    async def adopt_objects(self, rows: Sequence[ObjectRow]) -> None:
        for chunk in _chunks(rows):

            def job(db: sqlite3.Connection, chunk: Sequence[ObjectRow] = chunk) -> None:
                # A row the bucket kept (held = 0) is this file's: held again, else kept.
                db.executemany(
                    "INSERT INTO objects (digest, size, media_type, created, last_access, held)"
                    " VALUES (?, ?, ?, ?, ?, 1) ON CONFLICT (digest) DO UPDATE SET held = 1",
                    [(r.digest, r.size, r.media_type, r.created, r.last_access) for r in chunk],
                )

            await self._write(job)

    async def get_object(self, digest: str) -> ObjectRow | None:
        def query(db: sqlite3.Connection) -> ObjectRow | None:
            row = db.execute(
                f"SELECT {OBJECT_COLUMNS} FROM objects WHERE digest = ?",
                (digest,),
            ).fetchone()
            return ObjectRow(*row) if row else None

        return await self._read(query)

    async def total_size(self) -> int:
        return await self._read(
            lambda db: int(
                db.execute("SELECT bytes FROM totals WHERE tier = 'local'").fetchone()[0]
            )
        )

    async def count_objects(self) -> int:
        return await self._read(
            lambda db: int(
                db.execute("SELECT objects FROM totals WHERE tier = 'local'").fetchone()[0]
            )
        )

    async def get_objects(self, digests: Sequence[str]) -> list[ObjectRow]:
        def query(db: sqlite3.Connection) -> list[ObjectRow]:
            rows: list[ObjectRow] = []
            for chunk in _chunks(list(dict.fromkeys(digests))):
                marks = ",".join("?" * len(chunk))
                rows += [
                    ObjectRow(*r)
                    for r in db.execute(
                        f"SELECT {OBJECT_COLUMNS} FROM objects"
                        f" WHERE digest IN ({marks}) AND held = 1",
                        tuple(chunk),
                    )
                ]
            return rows

        return await self._read(query)

    async def objects_page(self, after: Cursor | None, limit: int) -> list[ObjectRow]:
        def query(db: sqlite3.Connection) -> list[ObjectRow]:
            columns = f"SELECT {OBJECT_COLUMNS} FROM objects WHERE held = 1"
            if after is None:
                rows = db.execute(
                    f"{columns} ORDER BY last_access, digest LIMIT ?", (limit,)
                ).fetchall()
            else:
                rows = db.execute(
                    f"{columns} AND (last_access, digest) > (?, ?)"
                    " ORDER BY last_access, digest LIMIT ?",
                    (after[0], after[1], limit),
                ).fetchall()
            return [ObjectRow(*r) for r in rows]

        return await self._read(query)

    async def forget(self, digests: Sequence[str]) -> None:
        for chunk in _chunks(digests):

            def job(db: sqlite3.Connection, chunk: Sequence[str] = chunk) -> None:
                rows = [(d,) for d in chunk]
                # What the bucket holds stays in the catalog, with its tags.
                db.executemany(
                    "UPDATE objects SET held = 0 WHERE digest = ?"
                    " AND EXISTS (SELECT 1 FROM shared s WHERE s.digest = objects.digest)",
                    rows,
                )
                db.executemany("DELETE FROM objects WHERE digest = ? AND held = 1", rows)
                _drop_unheld_tags(db, rows)
                _bump_generation(db)

            await self._write(job)

    # ------------------------------------------------------ the shared tier

    async def add_shared(self, digest: str, size: int, now: float) -> None:
        def job(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT OR IGNORE INTO objects (digest, size, media_type, created, last_access,"
                " held) VALUES (?, ?, NULL, ?, ?, 0)",
                (digest, size, now, now),
            )
            db.execute(
                "INSERT INTO shared (digest, size, stored) VALUES (?, ?, ?)"
                " ON CONFLICT (digest) DO UPDATE SET size = excluded.size",
                (digest, size, now),
            )

        await self._write(job)

    async def is_shared(self, digest: str) -> bool:
        return await self._read(
            lambda db: (
                db.execute("SELECT 1 FROM shared WHERE digest = ?", (digest,)).fetchone()
                is not None
            )
        )

    async def shared_totals(self) -> tuple[int, int]:
        def query(db: sqlite3.Connection) -> tuple[int, int]:
            row = db.execute("SELECT objects, bytes FROM totals WHERE tier = 'shared'").fetchone()
            return int(row[0]), int(row[1])

        return await self._read(query)

    async def shared_page(self, after: Cursor | None, limit: int) -> list[ObjectRow]:
        def query(db: sqlite3.Connection) -> list[ObjectRow]:
            columns = (
                "SELECT o.digest, s.size, o.media_type, o.created, o.last_access"
                " FROM objects o JOIN shared s ON s.digest = o.digest"
            )
            order = " ORDER BY o.last_access, o.digest LIMIT ?"
            if after is None:
                rows = db.execute(columns + order, (limit,)).fetchall()
            else:
                rows = db.execute(
                    f"{columns} WHERE (o.last_access, o.digest) > (?, ?){order}",
                    (after[0], after[1], limit),
                ).fetchall()
            return [ObjectRow(*r) for r in rows]

        return await self._read(query)

    async def forget_shared(self, digests: Sequence[str]) -> None:
        for chunk in _chunks(digests):

            def job(db: sqlite3.Connection, chunk: Sequence[str] = chunk) -> None:
                rows = [(d,) for d in chunk]
                db.executemany("DELETE FROM shared WHERE digest = ?", rows)
                db.executemany("DELETE FROM objects WHERE digest = ? AND held = 0", rows)
                _drop_unheld_tags(db, rows)
                _bump_generation(db)

            await self._write(job)

    # ------------------------------------------------------------ references

    async def record_refs(self, refs: Mapping[str, ManifestRefs]) -> None:
        items = list(refs.items())
        for chunk in _chunks(items):

            def job(
                db: sqlite3.Connection, chunk: Sequence[tuple[str, ManifestRefs]] = chunk
            ) -> None:
                _record_refs(db, chunk)

            await self._write(job)

    async def unparsed_manifests(self, after: str | None, limit: int) -> list[str]:
        def query(db: sqlite3.Connection) -> list[str]:
            rows = db.execute(
                "SELECT digest FROM objects INDEXED BY objects_unparsed"
                " WHERE media_type IS NOT NULL AND refs_known = 0 AND held = 1 AND digest > ?"
                " ORDER BY digest LIMIT ?",
                (after or "", limit),
            ).fetchall()
            return [r[0] for r in rows]

        return await self._read(query)

    async def refs_of(self, manifests: Sequence[str]) -> dict[str, ManifestRefs]:
        def query(db: sqlite3.Connection) -> dict[str, ManifestRefs]:
            found: dict[str, tuple[list[str], list[str]]] = {}
            for chunk in _chunks(list(dict.fromkeys(manifests))):
                marks = ",".join("?" * len(chunk))
                # Known references of stored manifests (refs rows go with the row).
                for digest in db.execute(
                    f"SELECT digest FROM objects WHERE digest IN ({marks})"
                    " AND refs_known = 1 AND held = 1",
                    tuple(chunk),
                ):
                    found[digest[0]] = ([], [])
                for manifest, digest, child in db.execute(
                    f"SELECT manifest, digest, child FROM refs WHERE manifest IN ({marks})"
                    " ORDER BY manifest, digest",
                    tuple(chunk),
                ):
                    if manifest in found:
                        found[manifest][1 if child else 0].append(digest)
            return {m: ManifestRefs(tuple(b), tuple(c)) for m, (b, c) in found.items()}

        return await self._read(query)

    async def prune_refs(self) -> int:
        # Found by a read (a reader's connection, no lock), deleted BATCH manifests per
        # transaction: one DELETE over them all held the write lock for 0.9 s at 200k
        # objects, and every other process's write (the server's) waited as long. Each
        # delete checks again that its manifest is still gone (stored again meanwhile:
        # its rows are current).
        def query(db: sqlite3.Connection) -> list[str]:
            return [
                r[0]
                for r in db.execute(
                    "SELECT DISTINCT manifest FROM refs r"
                    " WHERE NOT EXISTS (SELECT 1 FROM objects o WHERE o.digest = r.manifest)"
                )
            ]

        deleted = 0
        for chunk in _chunks(await self._read(query)):

            def job(db: sqlite3.Connection, chunk: Sequence[str] = chunk) -> int:
                before = db.total_changes
                db.executemany(
                    "DELETE FROM refs WHERE manifest = ?1"
                    " AND NOT EXISTS (SELECT 1 FROM objects o WHERE o.digest = ?1)",
                    [(m,) for m in chunk],
                )
                return db.total_changes - before

            deleted += await self._write(job)
        return deleted

    async def digest_range(self, lo: str, hi: str | None) -> DigestRange:
        def within(column: str) -> str:
            return f"{column} >= ?" + ("" if hi is None else f" AND {column} < ?")

        where = within("digest")
        args = (lo,) if hi is None else (lo, hi)

        def query(db: sqlite3.Connection) -> DigestRange:
            db.execute("BEGIN")  # one snapshot for the four queries
            try:
                objects = [
                    ObjectRow(*r)
                    for r in db.execute(
                        f"SELECT {OBJECT_COLUMNS} FROM objects WHERE {where} AND held = 1"
                        " ORDER BY digest",
                        args,
                    )
                ]
                tagged = {r[0] for r in db.execute(f"SELECT digest FROM tags WHERE {where}", args)}
                linked = {r[0] for r in db.execute(f"SELECT digest FROM links WHERE {where}", args)}
                listed = {
                    r[0]
                    for r in db.execute(
                        "SELECT r.digest FROM refs r JOIN objects m ON m.digest = r.manifest"
                        f" WHERE {within('r.digest')} AND m.held = 1",
                        args,
                    )
                }
            finally:
                db.execute("COMMIT")
            return DigestRange(objects, frozenset(tagged | linked | listed), frozenset(tagged))

        return await self._read(query)

    # --------------------------------------------------------------- listing

    async def tags_page(self, after: TagKey | None, limit: int) -> list[TagEntry]:
        def query(db: sqlite3.Connection) -> list[TagEntry]:
            columns = "SELECT upstream, repo, tag, digest, last_pulled FROM tags"
            if after is None:
                rows = db.execute(
                    f"{columns} ORDER BY upstream, repo, tag LIMIT ?", (limit,)
                ).fetchall()
            else:
                rows = db.execute(
                    f"{columns} WHERE (upstream, repo, tag) > (?, ?, ?)"
                    " ORDER BY upstream, repo, tag LIMIT ?",
                    (*after, limit),
                ).fetchall()
            return [TagEntry(*r) for r in rows]

        return await self._read(query)

    async def untagged_manifests(self) -> list[UntaggedManifest]:
        def query(db: sqlite3.Connection) -> list[UntaggedManifest]:
            rows = db.execute(
                "SELECT l.upstream, l.repo, o.digest, o.last_access"
                # From the manifests (a fifth of the rows), not from every link.
                " FROM objects o INDEXED BY objects_manifests"
                " CROSS JOIN links l ON l.digest = o.digest"
                " WHERE o.media_type IS NOT NULL AND o.held = 1"
                " AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.upstream = l.upstream"
                " AND t.repo = l.repo AND t.digest = o.digest)"
                " AND NOT EXISTS (SELECT 1 FROM refs r JOIN objects p ON p.digest = r.manifest"
                " WHERE r.digest = o.digest AND r.child AND p.held = 1)"
                " ORDER BY l.upstream, l.repo, o.digest"
            ).fetchall()
            return [UntaggedManifest(*r) for r in rows]

        return await self._read(query)

    async def image_stats(self, roots: Sequence[str]) -> dict[str, ImageStats]:
        names = list(dict.fromkeys(roots))

        def query(db: sqlite3.Connection) -> dict[str, ImageStats]:
            found = {
                root: ImageStats(media_type if objects else None, size, objects, *rest)
                for root, media_type, size, objects, *rest in db.execute(
                    IMAGE_STATS, (json.dumps(names),)
                )
            }
            return {root: found.get(root, NO_IMAGE) for root in names}

        return await self._read(query)

    async def usage_summary(self) -> UsageSummary:
        return await self._read(_usage_summary)

    async def range_usage(self, lo: str, hi: str | None) -> RangeUsage:
        where = "o.digest >= ?" + ("" if hi is None else " AND o.digest < ?")
        args = (lo,) if hi is None else (lo, hi)

        def query(db: sqlite3.Connection) -> RangeUsage:
            db.execute("BEGIN")  # one snapshot for both
            try:
                digests = [
                    r[0]
                    for r in db.execute(
                        f"SELECT o.digest FROM objects o WHERE {where} AND o.held = 1"
                        " ORDER BY o.digest",
                        args,
                    )
                ]
                loose = db.execute(
                    f"SELECT COUNT(*), COALESCE(SUM(o.size), 0) FROM objects o WHERE {where}"
                    f" AND o.held = 1 AND {UNREFERENCED}",
                    args,
                ).fetchone()
            finally:
                db.execute("COMMIT")
            return RangeUsage(digests, loose[0], loose[1])

        return await self._read(query)

    # ----------------------------------------------------------------- links

    async def is_linked(self, upstream: str, repo: str, digest: str) -> bool:
        def query(db: sqlite3.Connection) -> bool:
            return (
                db.execute(
                    "SELECT 1 FROM links WHERE upstream = ? AND repo = ? AND digest = ?",
                    (upstream, repo, digest),
                ).fetchone()
                is not None
            )

        return await self._read(query)

    async def link(self, upstream: str, repo: str, digests: Sequence[str]) -> None:
        rows = [(upstream, repo, d) for d in digests]
        if rows:
            await self._write(
                lambda db: db.executemany(
                    "INSERT OR IGNORE INTO links (upstream, repo, digest) VALUES (?, ?, ?)", rows
                )
            )

    async def unlink(self, upstream: str, repo: str, digests: Sequence[str] | None) -> None:
        if digests is None:

            def everything(db: sqlite3.Connection) -> None:
                db.execute("DELETE FROM links WHERE upstream = ? AND repo = ?", (upstream, repo))
                _bump_generation(db)

            await self._write(everything)
            return
        for chunk in _chunks(digests):

            def some(db: sqlite3.Connection, chunk: Sequence[str] = chunk) -> None:
                db.executemany(
                    "DELETE FROM links WHERE upstream = ? AND repo = ? AND digest = ?",
                    [(upstream, repo, d) for d in chunk],
                )
                _bump_generation(db)

            await self._write(some)

    async def repositories(self, upstream: str | None = None) -> list[RepoKey]:
        where = " WHERE upstream = ?" if upstream else ""
        query_text = (
            f"SELECT DISTINCT upstream, repo FROM links{where}"
            f" UNION SELECT DISTINCT upstream, repo FROM tags{where} ORDER BY 1, 2"
        )
        params: tuple[str, ...] = (upstream, upstream) if upstream else ()
        return await self._read(
            lambda db: [(r[0], r[1]) for r in db.execute(query_text, params).fetchall()]
        )

    async def links_of(self, upstream: str, repo: str) -> list[str]:
        return await self._read(
            lambda db: [
                r[0]
                for r in db.execute(
                    "SELECT digest FROM links WHERE upstream = ? AND repo = ? ORDER BY digest",
                    (upstream, repo),
                ).fetchall()
            ]
        )

    async def holders(self, digests: Sequence[str]) -> dict[str, frozenset[RepoKey]]:
        def query(db: sqlite3.Connection) -> dict[str, frozenset[RepoKey]]:
            found: dict[str, set[RepoKey]] = {}
            for chunk in _chunks(list(dict.fromkeys(digests))):
                marks = ",".join("?" * len(chunk))
                for digest, upstream, repo in db.execute(
                    f"SELECT digest, upstream, repo FROM links WHERE digest IN ({marks})",
                    tuple(chunk),
                ):
                    found.setdefault(digest, set()).add((upstream, repo))
            return {d: frozenset(r) for d, r in found.items()}

        return await self._read(query)

    # ---------------------------------------------------------- access times

    async def record_access(
        self, objects: Mapping[str, float], tags: Mapping[TagKey, float]
    ) -> None:
        if not objects and not tags:
            return

        def job(db: sqlite3.Connection) -> None:
            db.executemany(
                "UPDATE objects SET last_access = MAX(last_access, ?) WHERE digest = ?",
                [(t, d) for d, t in objects.items()],
            )
            db.executemany(
                "UPDATE tags SET last_pulled = MAX(last_pulled, ?)"
                " WHERE upstream = ? AND repo = ? AND tag = ?",
                [(t, u, r, g) for (u, r, g), t in tags.items()],
            )

        await self._write(job)

    # ------------------------------------------------------------------- bulk

    async def import_rows(
        self,
        objects: Sequence[ObjectRow] = (),
        tags: Sequence[TagImport] = (),
        links: Sequence[LinkKey] = (),
        refs: Mapping[str, ManifestRefs] | None = None,
    ) -> None:
        statements: list[tuple[str, list[tuple[object, ...]]]] = [
            (
                # Files of the data directory (a row the bucket kept is held again).
                "INSERT INTO objects (digest, size, media_type, created, last_access, held)"
                " VALUES (?, ?, ?, ?, ?, 1) ON CONFLICT (digest) DO UPDATE SET held = 1",
                [(r.digest, r.size, r.media_type, r.created, r.last_access) for r in objects],
            ),
            (
                "INSERT OR IGNORE INTO tags"
                " (upstream, repo, tag, digest, checked_at, last_pulled) VALUES (?, ?, ?, ?, ?, ?)",
                [(t.upstream, t.repo, t.tag, t.digest, t.checked_at, t.last_pulled) for t in tags],
            ),
            ("INSERT OR IGNORE INTO links (upstream, repo, digest) VALUES (?, ?, ?)", list(links)),
        ]
        for sql, rows in statements:
            for chunk in _chunks(rows, IMPORT_BATCH):

                def job(
                    db: sqlite3.Connection,
                    sql: str = sql,
                    chunk: Sequence[tuple[object, ...]] = chunk,
                ) -> None:
                    db.executemany(sql, chunk)

                await self._write(job)
        if refs:
            await self.record_refs(refs)


def _record_refs(db: sqlite3.Connection, items: Sequence[tuple[str, ManifestRefs]]) -> None:
    """Inside a write transaction: references of stored manifests (others are skipped)."""
    stored = [m for m, _ in items]
    marks = ",".join("?" * len(stored))
    have = {
        r[0]
        for r in db.execute(
            f"SELECT digest FROM objects WHERE digest IN ({marks}) AND media_type IS NOT NULL",
            stored,
        )
    }
    rows = [
        (manifest, digest, child)
        for manifest, refs in items
        if manifest in have
        for child, digests in ((1, refs.children), (0, refs.blobs))  # a child first
        for digest in digests
    ]
    db.executemany("INSERT OR IGNORE INTO refs (manifest, digest, child) VALUES (?, ?, ?)", rows)
    db.executemany(
        "UPDATE objects SET refs_known = 1 WHERE digest = ? AND refs_known = 0",
        [(m,) for m in have],
    )


def _usage_summary(db: sqlite3.Connection) -> UsageSummary:
    db.execute("BEGIN")  # one snapshot
    try:
        # Distinct names in the order of each table's primary key, and each
        # (upstream, digest) in the order of the by-digest indexes: no temporary
        # B-tree of a million rows (usage_summary took 5 s at 1M objects).
        repos = dict(
            db.execute(
                "SELECT upstream, COUNT(*) FROM (SELECT upstream, repo FROM links NOT INDEXED"
                " GROUP BY upstream, repo UNION SELECT upstream, repo FROM tags NOT INDEXED"
                " GROUP BY upstream, repo) GROUP BY upstream"
            ).fetchall()
        )
        tags = dict(db.execute("SELECT upstream, COUNT(*) FROM tags GROUP BY upstream").fetchall())
        owned = {
            u: (n, b)
            for u, n, b in db.execute(
                "SELECT x.upstream, COUNT(*), SUM(o.size) FROM (SELECT l.digest AS digest,"
                " l.upstream AS upstream FROM links l INDEXED BY links_by_digest"
                " GROUP BY l.digest, l.upstream UNION ALL SELECT t.digest, t.upstream"
                " FROM tags t INDEXED BY tags_by_digest WHERE NOT EXISTS (SELECT 1 FROM links l"
                " WHERE l.digest = t.digest AND l.upstream = t.upstream)"
                " GROUP BY t.digest, t.upstream) x"
                " JOIN objects o ON o.digest = x.digest AND o.held = 1 GROUP BY x.upstream"
            )
        }
        total = db.execute("SELECT objects, bytes FROM totals WHERE tier = 'local'").fetchone()
        shared = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(o.size), 0) FROM (SELECT digest FROM links"
            " GROUP BY digest HAVING COUNT(*) > 1) s JOIN objects o ON o.digest = s.digest"
            " AND o.held = 1"
        ).fetchone()
    finally:
        db.execute("COMMIT")
    upstreams = tuple(
        UpstreamUsage(u, repos[u], tags.get(u, 0), *owned.get(u, (0, 0))) for u in sorted(repos)
    )
    return UsageSummary(upstreams, total[0], total[1], shared[0], shared[1])


def _transaction(db: sqlite3.Connection, job: Callable[[sqlite3.Connection], T]) -> T:
    db.execute("BEGIN IMMEDIATE")
    try:
        result = job(db)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return result


def _migrate(db: sqlite3.Connection) -> None:
    """Create or upgrade the schema (inside the writer's transaction)."""
    row = None
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    except sqlite3.OperationalError:
        pass  # a new file: no meta table yet
    found = int(row[0]) if row else 0
    if found > SCHEMA_VERSION:
        raise IndexUnavailable(
            f"index schema {found} is newer than this registry-cache understands"
            f" ({SCHEMA_VERSION}): upgrade registry-cache"
        )
    present = {row[1] for row in db.execute("PRAGMA table_info(objects)")}  # none: new
    for name, ddl in COLUMNS:
        if present and name not in present:
            db.execute(f"ALTER TABLE objects ADD COLUMN {name} {ddl}")
    if found < 4:
        # The totals are rebuilt below. A pre-release build of 4 numbered itself 3
        # and kept one total over every row: its triggers and table go first.
        for trigger in ("objects_added", "objects_removed", "objects_resized"):
            db.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        db.execute("DROP TABLE IF EXISTS totals")
    for statement in SCHEMA:
        db.execute(statement)
    if found < 4:
        # Under the write lock, with the triggers in place: exact from here on.
        db.execute(
            "INSERT OR REPLACE INTO totals (tier, objects, bytes)"
            " SELECT 'local', COUNT(*), COALESCE(SUM(size), 0) FROM objects WHERE held = 1"
        )
        db.execute(
            "INSERT OR REPLACE INTO totals (tier, objects, bytes)"
            " SELECT 'shared', COUNT(*), COALESCE(SUM(size), 0) FROM shared"
        )
    db.execute(
        "INSERT INTO meta (key, value) VALUES ('schema', ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (str(SCHEMA_VERSION),),
    )


def _drop_unheld_tags(db: sqlite3.Connection, rows: Sequence[tuple[str]]) -> None:
    """Tags naming content no tier holds any more (no object row left)."""
    db.executemany(
        "DELETE FROM tags WHERE digest = ?1"
        " AND NOT EXISTS (SELECT 1 FROM objects o WHERE o.digest = ?1)",
        rows,
    )


def _check_current(db: sqlite3.Connection) -> None:
    """A read-only index cannot be migrated: it must already have this release's schema."""
    row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    found = int(row[0]) if row else 0
    if found != SCHEMA_VERSION:
        raise IndexUnavailable(
            f"index schema {found} is not this release's ({SCHEMA_VERSION}) and the index is"
            " read-only here: open it writable once (serve or any cache command migrates it)"
        )


def _bump_generation(db: sqlite3.Connection) -> None:
    """Inside a transaction that deleted rows: memos everywhere are dropped soon after."""
    db.execute(
        "INSERT INTO meta (key, value) VALUES ('generation', '1') ON CONFLICT(key)"
        " DO UPDATE SET value = CAST(value AS INTEGER) + 1"
    )


def _chunks(items: Sequence[T], size: int = BATCH) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
