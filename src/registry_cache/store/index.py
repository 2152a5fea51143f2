"""The index: SQLite in WAL mode, shared by every worker process.

It holds what the blob files cannot say about themselves: which tag points at
which digest and when that was last checked, which repository may see which
digest, manifest media types, sizes and last access. Blob *presence* is decided
by the file system (a verified file under ``blobs/``), so a crash between a
rename and an index write loses metadata at worst, never correctness.

One connection per process, used from the event-loop thread: reads take
microseconds, writes are single short statements, and ``busy_timeout`` absorbs
another worker's write. Access times are batched (``touch``) and flushed
periodically so a hit never waits on a write lock.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..lru import Lru

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    digest      TEXT PRIMARY KEY,
    size        INTEGER NOT NULL,
    media_type  TEXT,              -- set for manifests, NULL for blobs
    created     REAL NOT NULL,
    last_access REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tags (
    upstream    TEXT NOT NULL,
    repo        TEXT NOT NULL,
    tag         TEXT NOT NULL,
    digest      TEXT NOT NULL,
    checked_at  REAL NOT NULL,     -- last time upstream confirmed (or gave) this digest
    last_pulled REAL NOT NULL,
    PRIMARY KEY (upstream, repo, tag)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS links (
    upstream    TEXT NOT NULL,
    repo        TEXT NOT NULL,
    digest      TEXT NOT NULL,
    PRIMARY KEY (upstream, repo, digest)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS links_by_digest ON links (digest);
CREATE INDEX IF NOT EXISTS objects_by_access ON objects (last_access);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
"""


@dataclass(frozen=True, slots=True)
class TagRow:
    digest: str
    checked_at: float
    last_pulled: float


@dataclass(frozen=True, slots=True)
class ObjectRow:
    digest: str
    size: int
    media_type: str | None
    created: float
    last_access: float


class Index:
    def __init__(self, path: Path, *, readonly: bool = False, immutable: bool = False) -> None:
        self.path = path
        uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
        if readonly and immutable:  # a read-only directory: SQLite cannot make -shm there
            uri += "&immutable=1"
        self._db = sqlite3.connect(
            uri, uri=True, isolation_level=None, check_same_thread=False, timeout=10.0
        )
        self._db.execute("PRAGMA busy_timeout = 10000")
        if not readonly:
            self._db.execute("PRAGMA journal_mode = WAL")
            # WAL + NORMAL is durable against process crashes; the blob files are the truth.
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.executescript(SCHEMA)
            self._db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)",
                (str(SCHEMA_VERSION),),
            )
        self._lock = threading.Lock()
        # Links are only ever added while serving (prune/gc run as separate commands),
        # so remembering the positive answers skips a query on every hit.
        self._linked: Lru[tuple[str, str, str], bool] = Lru(1 << 16)
        self._tags: Lru[tuple[str, str, str], TagRow] = Lru(1 << 14)
        self._touched: dict[str, float] = {}
        self._pulled: dict[tuple[str, str, str], float] = {}
        self._generation = self.generation()

    # ----------------------------------------------------- memo invalidation

    @staticmethod
    def bump_generation(db: sqlite3.Connection) -> None:
        """Call inside a transaction that deleted rows: every process's memos of
        tags and links are dropped at its next ``refresh_memos`` (within seconds)."""
        db.execute(
            "INSERT INTO meta (key, value) VALUES ('generation', '1') ON CONFLICT(key)"
            " DO UPDATE SET value = CAST(value AS INTEGER) + 1"
        )

    def generation(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(row[0]) if row else 0

    def refresh_memos(self) -> bool:
        """Forget remembered tags and links if rows were deleted since the last look
        (``cache prune``/``gc``/``verify`` run as other processes, eviction in others)."""
        current = self.generation()
        if current == self._generation:
            return False
        self._generation = current
        self._linked.clear()
        self._tags.clear()
        return True

    def ping(self) -> None:
        """A query that needs the database file (readiness checks)."""
        with self._lock:
            self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()

    def close(self) -> None:
        self.flush_touches()
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # ------------------------------------------------------------------ tags

    def get_tag(self, upstream: str, repo: str, tag: str, *, max_age: float = 0.0) -> TagRow | None:
        """The tag's row; one this process saw checked less than ``max_age`` ago
        comes from memory (another worker can only have made it fresher)."""
        key = (upstream, repo, tag)
        if max_age > 0:
            remembered = self._tags.get(key)
            if remembered is not None and 0 <= time.time() - remembered.checked_at < max_age:
                return remembered
        found = self._db.execute(
            "SELECT digest, checked_at, last_pulled FROM tags"
            " WHERE upstream = ? AND repo = ? AND tag = ?",
            key,
        ).fetchone()
        if not found:
            self._tags.pop(key)
            return None
        row = TagRow(*found)
        self._tags.put(key, row)
        return row

    def set_tag(
        self, upstream: str, repo: str, tag: str, digest: str, now: float | None = None
    ) -> None:
        now = time.time() if now is None else now
        self._tags.put((upstream, repo, tag), TagRow(digest, now, now))
        with self._lock:
            self._db.execute(
                "INSERT INTO tags (upstream, repo, tag, digest, checked_at, last_pulled)"
                " VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (upstream, repo, tag) DO UPDATE SET"
                " digest = excluded.digest, checked_at = excluded.checked_at,"
                " last_pulled = excluded.last_pulled",
                (upstream, repo, tag, digest, now, now),
            )

    def delete_tag(self, upstream: str, repo: str, tag: str) -> None:
        self._tags.pop((upstream, repo, tag))
        with self._lock:
            self._db.execute(
                "DELETE FROM tags WHERE upstream = ? AND repo = ? AND tag = ?",
                (upstream, repo, tag),
            )

    def list_tags(self, upstream: str, repo: str) -> list[str]:
        rows = self._db.execute(
            "SELECT tag FROM tags WHERE upstream = ? AND repo = ? ORDER BY tag",
            (upstream, repo),
        ).fetchall()
        return [r[0] for r in rows]

    def all_tags(self) -> list[tuple[str, str, str, str, float]]:
        """(upstream, repo, tag, digest, last_pulled) for every tag."""
        return list(
            self._db.execute(
                "SELECT upstream, repo, tag, digest, last_pulled FROM tags"
                " ORDER BY upstream, repo, tag"
            ).fetchall()
        )

    # --------------------------------------------------------------- objects

    def add_object(self, digest: str, size: int, media_type: str | None = None) -> None:
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT INTO objects (digest, size, media_type, created, last_access)"
                " VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (digest) DO UPDATE SET size = excluded.size,"
                " media_type = COALESCE(excluded.media_type, objects.media_type),"
                " last_access = excluded.last_access",
                (digest, size, media_type, now, now),
            )

    def get_object(self, digest: str) -> ObjectRow | None:
        row = self._db.execute(
            "SELECT digest, size, media_type, created, last_access FROM objects WHERE digest = ?",
            (digest,),
        ).fetchone()
        return ObjectRow(*row) if row else None

    def remove_objects(self, digests: Iterable[str]) -> None:
        with self._lock:
            self._db.executemany("DELETE FROM objects WHERE digest = ?", [(d,) for d in digests])

    def objects_by_age(self) -> list[ObjectRow]:
        """Every object, least recently used first (eviction order)."""
        self.flush_touches()
        rows = self._db.execute(
            "SELECT digest, size, media_type, created, last_access FROM objects"
            " ORDER BY last_access"
        ).fetchall()
        return [ObjectRow(*r) for r in rows]

    def total_size(self) -> int:
        row = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM objects").fetchone()
        return int(row[0])

    # ----------------------------------------------------------------- links

    def is_linked(self, upstream: str, repo: str, digest: str) -> bool:
        key = (upstream, repo, digest)
        if self._linked.get(key):
            return True
        row = self._db.execute(
            "SELECT 1 FROM links WHERE upstream = ? AND repo = ? AND digest = ?", key
        ).fetchone()
        if row is not None:
            self._linked.put(key, True)
        return row is not None

    def link(self, upstream: str, repo: str, digests: Iterable[str]) -> None:
        rows = [(upstream, repo, d) for d in digests]
        if not rows:
            return
        for row in rows:
            self._linked.put(row, True)
        with self._lock:
            self._db.executemany(
                "INSERT OR IGNORE INTO links (upstream, repo, digest) VALUES (?, ?, ?)", rows
            )

    def repositories(self, upstream: str | None = None) -> list[tuple[str, str]]:
        """Every (upstream, repo) the cache holds anything for, sorted."""
        query = (
            "SELECT DISTINCT upstream, repo FROM links"
            + (" WHERE upstream = ?" if upstream else "")
            + " UNION SELECT DISTINCT upstream, repo FROM tags"
            + (" WHERE upstream = ?" if upstream else "")
            + " ORDER BY 1, 2"
        )
        params: tuple[str, ...] = (upstream, upstream) if upstream else ()
        return [(r[0], r[1]) for r in self._db.execute(query, params).fetchall()]

    def links_of(self, upstream: str, repo: str) -> list[str]:
        rows = self._db.execute(
            "SELECT digest FROM links WHERE upstream = ? AND repo = ?", (upstream, repo)
        ).fetchall()
        return [r[0] for r in rows]

    # ---------------------------------------------------------- access times

    def touch(self, digest: str, when: float | None = None) -> None:
        """Record an access; written to disk by ``flush_touches`` (batched)."""
        self._touched[digest] = time.time() if when is None else when

    def touch_tag(self, upstream: str, repo: str, tag: str) -> None:
        self._pulled[(upstream, repo, tag)] = time.time()

    def flush_touches(self) -> None:
        touched, self._touched = self._touched, {}
        pulled, self._pulled = self._pulled, {}
        if not touched and not pulled:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "UPDATE objects SET last_access = MAX(last_access, ?) WHERE digest = ?",
                    [(t, d) for d, t in touched.items()],
                )
                self._db.executemany(
                    "UPDATE tags SET last_pulled = MAX(last_pulled, ?)"
                    " WHERE upstream = ? AND repo = ? AND tag = ?",
                    [(t, u, r, g) for (u, r, g), t in pulled.items()],
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
