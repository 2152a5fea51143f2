"""``prune_refs`` (``cache gc``'s last step) deletes the references of manifests gone from
the index in short write transactions, found by a read: another process's writer (the
server's, filling a miss or flushing access times) never waits for the whole deletion.

One DELETE over every stale row held SQLite's write lock for 0.9 s at 200k objects
with a fifth of the manifests evicted (43,576 rows), and here (a million rows) for
3-4 s: the other writer gave up. In batches it waited 0.34 s at most (SQLite's busy
handler polls, so a waiting writer can miss a gap between two batches)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from registry_cache.index.sqlite import SqliteIndex

STALE_MANIFESTS = 200_000
REFS_EACH = 5
OTHER_BUSY_TIMEOUT = 1.0  # the other writer gives up after this long


def _digest(kind: str, n: int) -> str:
    return f"sha256:{kind}{n:0{63 - len(kind)}d}"


def _fill(path: Path) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("BEGIN")
        db.execute(
            "INSERT INTO objects (digest, size, media_type, created, last_access)"
            " VALUES (?, 1, 'application/vnd.oci.image.manifest.v1+json', 0, 0)",
            (_digest("kept", 0),),
        )
        rows = [(_digest("kept", 0), _digest("blob", i), 0) for i in range(REFS_EACH)]
        rows += [
            (_digest("gone", m), _digest("blob", m * REFS_EACH + i), 0)
            for m in range(STALE_MANIFESTS)
            for i in range(REFS_EACH)
        ]
        db.executemany("INSERT INTO refs (manifest, digest, child) VALUES (?, ?, ?)", rows)
        db.execute("COMMIT")
    finally:
        db.close()


class OtherWriter(threading.Thread):
    """Short write transactions, back to back, on a connection of its own (as another
    process would), each allowed to wait ``OTHER_BUSY_TIMEOUT`` for the lock."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.done = threading.Event()
        self.failures: list[str] = []
        self.longest = 0.0
        self.writes = 0

    def run(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, timeout=OTHER_BUSY_TIMEOUT)
        try:
            while not self.done.is_set():
                began = time.monotonic()
                try:
                    db.execute("BEGIN IMMEDIATE")
                    db.execute(
                        "INSERT INTO meta (key, value) VALUES ('other', '1') ON CONFLICT (key)"
                        " DO UPDATE SET value = CAST(value AS INTEGER) + 1"
                    )
                    db.execute("COMMIT")
                    self.writes += 1
                except sqlite3.OperationalError as exc:
                    self.failures.append(str(exc))
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                self.longest = max(self.longest, time.monotonic() - began)
                time.sleep(0.002)
        finally:
            db.close()


async def test_prune_refs_never_holds_the_write_lock_for_long(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    index = await SqliteIndex.open(path)
    try:
        _fill(path)
        other = OtherWriter(path)
        other.start()
        try:
            deleted = await index.prune_refs()
        finally:
            other.done.set()
            other.join(timeout=30)
        assert deleted == STALE_MANIFESTS * REFS_EACH
        assert await index.prune_refs() == 0
    finally:
        await index.close()
    assert other.writes > 0
    assert not other.failures, f"{len(other.failures)} writes gave up: {other.failures[0]}"
    assert other.longest < OTHER_BUSY_TIMEOUT
    db = sqlite3.connect(path)
    try:
        left = db.execute("SELECT COUNT(*) FROM refs WHERE manifest = ?", (_digest("kept", 0),))
        assert left.fetchone()[0] == REFS_EACH
    finally:
        db.close()
