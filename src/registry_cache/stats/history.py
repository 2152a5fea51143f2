"""``DATA/stats.sqlite3``: the dashboard's history, shared by every worker process.

Its own small SQLite file (WAL), never the index. Each worker adds its deltas
every few seconds in one short transaction (``INSERT … ON CONFLICT DO UPDATE SET
n = n + excluded.n``), so rows are totals over all workers and survive restarts;
a reader sums rows and needs no knowledge of who wrote them.

Tables and retention (pruned at most once a minute):

- ``minutes`` (t = start of the minute, upstream): the counters of
  ``recorder.COUNTERS``; kept 26 hours.
- ``hours``: the same per hour; kept 31 days.
- ``repos`` (hour, upstream, repository): pulls and bytes served; kept 8 days.
- ``upstreams``: per upstream the latest success, latest error (kind, message,
  time) and ``ratelimit-remaining``; the newest event wins whoever wrote it.
- ``events``: the latest pulls and errors (200 of each).
- ``fills``, ``workers``: what each live worker last reported (its fills in
  flight with their repository; its pid and when it last flushed).

Stats are disposable: a file of another schema version is emptied, a corrupt
one is moved aside (``stats.sqlite3.corrupt``) and started again.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..store.progress import FillProgress
from .recorder import COUNTERS, Event, Pending

log = logging.getLogger("registry_cache.stats")

SCHEMA_VERSION = 1
MINUTES_KEPT = 26 * 3600
HOURS_KEPT = 31 * 86400
REPOS_KEPT = 8 * 86400
EVENTS_KEPT = 200
WORKERS_KEPT = 3600
PRUNE_EVERY = 60.0

_COLS = ", ".join(COUNTERS)
_ADD = ", ".join(f"{c} = {c} + excluded.{c}" for c in COUNTERS)
_COUNTER_DEFS = ", ".join(f"{c} INTEGER NOT NULL DEFAULT 0" for c in COUNTERS)
_MARKS = ", ".join("?" for _ in COUNTERS)

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS minutes (t INTEGER NOT NULL, upstream TEXT NOT NULL, {_COUNTER_DEFS},
    PRIMARY KEY (t, upstream)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hours (t INTEGER NOT NULL, upstream TEXT NOT NULL, {_COUNTER_DEFS},
    PRIMARY KEY (t, upstream)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS repos (hour INTEGER NOT NULL, upstream TEXT NOT NULL,
    repository TEXT NOT NULL, pulls INTEGER NOT NULL DEFAULT 0, bytes INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, upstream, repository)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS upstreams (upstream TEXT PRIMARY KEY, ok_at REAL, error_at REAL,
    error_kind TEXT, error TEXT, ratelimit TEXT, ratelimit_at REAL);
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL,
    at REAL NOT NULL, method TEXT, upstream TEXT, repository TEXT, reference TEXT,
    status INTEGER, cache TEXT, bytes INTEGER, duration_ms REAL, error TEXT, message TEXT);
CREATE INDEX IF NOT EXISTS events_by_kind ON events (kind, id);
CREATE TABLE IF NOT EXISTS fills (pid INTEGER NOT NULL, digest TEXT NOT NULL, upstream TEXT,
    repository TEXT, started_at REAL, followers INTEGER, size INTEGER, written INTEGER,
    updated_at REAL NOT NULL, PRIMARY KEY (pid, digest));
CREATE TABLE IF NOT EXISTS workers (pid INTEGER PRIMARY KEY, started_at REAL NOT NULL,
    updated_at REAL NOT NULL);
"""
TABLES = ("minutes", "hours", "repos", "upstreams", "events", "fills", "workers")


@dataclass(frozen=True, slots=True)
class UpstreamRow:
    upstream: str
    ok_at: float | None
    error_at: float | None
    error_kind: str | None
    error: str | None
    ratelimit: str | None
    ratelimit_at: float | None


@dataclass(frozen=True, slots=True)
class FillRow:
    pid: int
    progress: FillProgress
    updated_at: float


class StatsDB:
    """Thread-safe (one connection behind a lock); every call is short."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._pruned_at = 0.0
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as exc:
            log.warning("stats file %s unreadable (%s): starting a new one", path, exc)
            for suffix in ("", "-wal", "-shm"):
                part = Path(f"{path}{suffix}")
                if part.exists():
                    os.replace(part, f"{path}.corrupt{suffix}")
            self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=5.0)
        db.execute("PRAGMA busy_timeout = 5000")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")  # losing the last seconds of stats is fine
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            for table in TABLES:
                db.execute(f"DROP TABLE IF EXISTS {table}")
        db.executescript(SCHEMA)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        return db

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------ writing

    def apply(
        self,
        pending: Pending,
        *,
        pid: int,
        started_at: float,
        now: float,
        ratelimits: Mapping[str, str],
        fills: Iterable[FillProgress],
    ) -> None:
        """Add one worker's deltas and replace what it reports as live, atomically."""
        hours: dict[tuple[int, str], list[int]] = {}
        for (t, upstream), counts in pending.minutes.items():
            key = (t - t % 3600, upstream)
            total = hours.setdefault(key, [0] * len(COUNTERS))
            for i, value in enumerate(counts):
                total[i] += value
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                for table, rows in (("minutes", pending.minutes), ("hours", hours)):
                    db.executemany(
                        f"INSERT INTO {table} (t, upstream, {_COLS}) VALUES (?, ?, {_MARKS})"
                        f" ON CONFLICT (t, upstream) DO UPDATE SET {_ADD}",
                        [(t, u, *c) for (t, u), c in rows.items()],
                    )
                db.executemany(
                    "INSERT INTO repos (hour, upstream, repository, pulls, bytes)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (hour, upstream, repository)"
                    " DO UPDATE SET pulls = pulls + excluded.pulls, bytes = bytes + excluded.bytes",
                    [(h, u, r, p, b) for (h, u, r), (p, b) in pending.repos.items()],
                )
                self._upstream_events(db, pending, now, ratelimits)
                db.executemany(
                    "INSERT INTO events (kind, at, method, upstream, repository, reference,"
                    " status, cache, bytes, duration_ms, error, message)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [_event_row(e) for e in pending.events],
                )
                db.execute("DELETE FROM fills WHERE pid = ?", (pid,))
                db.executemany(
                    "INSERT INTO fills (pid, digest, upstream, repository, started_at, followers,"
                    " size, written, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (pid, f.digest, f.upstream, f.repository, f.started_at, f.followers,
                         f.size, f.written, now)
                        for f in fills
                    ],
                )  # fmt: skip
                db.execute(
                    "INSERT INTO workers (pid, started_at, updated_at) VALUES (?, ?, ?)"
                    " ON CONFLICT (pid) DO UPDATE SET updated_at = excluded.updated_at,"
                    " started_at = excluded.started_at",
                    (pid, started_at, now),
                )
                if now - self._pruned_at >= PRUNE_EVERY:
                    self._prune(db, now)
                    self._pruned_at = now
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    @staticmethod
    def _upstream_events(
        db: sqlite3.Connection, pending: Pending, now: float, ratelimits: Mapping[str, str]
    ) -> None:
        rows = [
            (name, e.ok_at, e.error_at, e.error_kind, e.error)
            for name, e in pending.upstreams.items()
        ]
        db.executemany(
            "INSERT INTO upstreams (upstream, ok_at, error_at, error_kind, error)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (upstream) DO UPDATE SET"
            " ok_at = MAX(COALESCE(ok_at, 0), COALESCE(excluded.ok_at, 0)),"
            " error_kind = CASE WHEN COALESCE(excluded.error_at, 0) > COALESCE(error_at, 0)"
            "   THEN excluded.error_kind ELSE error_kind END,"
            " error = CASE WHEN COALESCE(excluded.error_at, 0) > COALESCE(error_at, 0)"
            "   THEN excluded.error ELSE error END,"
            " error_at = MAX(COALESCE(error_at, 0), COALESCE(excluded.error_at, 0))",
            rows,
        )
        db.executemany(
            "INSERT INTO upstreams (upstream, ratelimit, ratelimit_at) VALUES (?, ?, ?)"
            " ON CONFLICT (upstream) DO UPDATE SET ratelimit = excluded.ratelimit,"
            " ratelimit_at = excluded.ratelimit_at",
            [(name, value, now) for name, value in ratelimits.items()],
        )

    @staticmethod
    def _prune(db: sqlite3.Connection, now: float) -> None:
        db.execute("DELETE FROM minutes WHERE t < ?", (now - MINUTES_KEPT,))
        db.execute("DELETE FROM hours WHERE t < ?", (now - HOURS_KEPT,))
        db.execute("DELETE FROM repos WHERE hour < ?", (now - REPOS_KEPT,))
        db.execute("DELETE FROM workers WHERE updated_at < ?", (now - WORKERS_KEPT,))
        db.execute("DELETE FROM fills WHERE updated_at < ?", (now - WORKERS_KEPT,))
        for kind in ("pull", "error"):
            db.execute(
                "DELETE FROM events WHERE kind = ? AND id <= COALESCE((SELECT id FROM events"
                " WHERE kind = ? ORDER BY id DESC LIMIT 1 OFFSET ?), -1)",
                (kind, kind, EVENTS_KEPT),
            )

    # ------------------------------------------------------------ reading

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def totals(self, since: float) -> dict[str, list[int]]:
        """Upstream ("" for none) -> counters summed over minutes from ``since``."""
        sums = ", ".join(f"SUM({c})" for c in COUNTERS)
        rows = self._rows(
            f"SELECT upstream, {sums} FROM minutes WHERE t >= ? GROUP BY upstream", (since,)
        )
        return {r[0]: [int(v or 0) for v in r[1:]] for r in rows}

    def long_totals(self, since: float) -> dict[str, list[int]]:
        """Like ``totals`` from the hourly table (for ranges beyond a day)."""
        sums = ", ".join(f"SUM({c})" for c in COUNTERS)
        rows = self._rows(
            f"SELECT upstream, {sums} FROM hours WHERE t >= ? GROUP BY upstream", (since,)
        )
        return {r[0]: [int(v or 0) for v in r[1:]] for r in rows}

    def series(self, table: str, since: float) -> dict[int, list[int]]:
        """Bucket start -> counters summed over upstreams (``minutes`` or ``hours``)."""
        if table not in ("minutes", "hours"):
            raise ValueError(table)
        sums = ", ".join(f"SUM({c})" for c in COUNTERS)
        rows = self._rows(f"SELECT t, {sums} FROM {table} WHERE t >= ? GROUP BY t", (since,))
        return {int(r[0]): [int(v or 0) for v in r[1:]] for r in rows}

    def upstreams(self) -> dict[str, UpstreamRow]:
        rows = self._rows(
            "SELECT upstream, ok_at, error_at, error_kind, error, ratelimit, ratelimit_at"
            " FROM upstreams"
        )
        return {
            r[0]: UpstreamRow(r[0], r[1] or None, r[2] or None, r[3], r[4], r[5], r[6])
            for r in rows
        }

    def top(self, since: float, by: str, limit: int) -> list[tuple[str, str, int, int]]:
        """(upstream, repository, pulls, bytes), largest ``by`` (pulls or bytes) first."""
        order = {"pulls": "pulls DESC, bytes DESC", "bytes": "bytes DESC, pulls DESC"}[by]
        rows = self._rows(
            "SELECT upstream, repository, SUM(pulls) AS pulls, SUM(bytes) AS bytes FROM repos"
            f" WHERE hour >= ? GROUP BY upstream, repository HAVING {by} > 0"
            f" ORDER BY {order}, upstream, repository LIMIT ?",
            (since, limit),
        )
        return [(r[0], r[1], int(r[2]), int(r[3])) for r in rows]

    def events(self, kind: str, limit: int) -> list[Event]:
        rows = self._rows(
            "SELECT kind, at, method, upstream, repository, reference, status, cache, bytes,"
            " duration_ms, error, message FROM events WHERE kind = ? ORDER BY id DESC LIMIT ?",
            (kind, limit),
        )
        return [Event(*r) for r in rows]

    def fills(self) -> list[FillRow]:
        rows = self._rows(
            "SELECT pid, digest, upstream, repository, started_at, followers, size, written,"
            " updated_at FROM fills"
        )
        return [
            FillRow(r[0], FillProgress(r[1], r[6], r[7] or 0, r[5] or 0, r[2], r[3], r[4]), r[8])
            for r in rows
        ]

    def workers(self) -> list[tuple[int, float, float]]:
        """(pid, started_at, updated_at) of every worker that flushed in the last hour."""
        return [
            (int(r[0]), float(r[1]), float(r[2]))
            for r in self._rows("SELECT pid, started_at, updated_at FROM workers")
        ]


def _event_row(e: Event) -> tuple[Any, ...]:
    return (
        e.kind, e.at, e.method, e.upstream, e.repository, e.reference, e.status, e.cache,
        e.bytes, e.duration_ms, e.error, e.message,
    )  # fmt: skip
