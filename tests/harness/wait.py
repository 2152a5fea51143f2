"""Wait on a condition instead of sleeping and hoping.

- ``until(predicate, within=5.0)``: async; yields to the event loop (and lets
  threads run) until ``predicate()`` is true; AssertionError naming it on timeout.
- ``wait_until(predicate, timeout=5.0, interval=0.01)``: the same for plain code,
  polling ``predicate`` (a condition on another process or a thread).
- ``eventually(predicate, timeout=20.0)``: polls the same way (every 50 ms) and says
  whether it came true in time, for ``assert eventually(...), context`` (the message
  then shows what the test chose to show, such as a log).
- ``wait_tag_expired(data_dir, upstream, repo, tag, ttl)``: until a running cache
  counts a tag's TTL as over, from the ``checked_at`` it wrote.
- ``wait_unused_for(data_dir, seconds, digests, tags)``: until objects and tags were
  last used more than ``seconds`` ago (eviction grace, ``prune --older-than``).
- ``wait_for_log(server, text)``: until a server's log holds ``text``; returns the log.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterable
from contextlib import closing
from pathlib import Path
from typing import Protocol

POLL = 0.005
Tag = tuple[str, str, str]  # (upstream, repository, tag)


async def until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s: {predicate}")
        await asyncio.sleep(POLL)


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {predicate}")
        time.sleep(interval)


def eventually(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


# -- a running cache's clocks, as its index records them -----------------------------
# Across processes there is no clock to inject: a test waits for the moment the cache
# itself will count as past a TTL or grace, computed from the timestamps it wrote
# (wall clock, like the cache's own comparisons), never for a guessed margin.


def _index(data_dir: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{data_dir / 'index.sqlite3'}?mode=ro", uri=True, timeout=10)


def tag_checked_at(data_dir: Path, upstream: str, repo: str, tag: str) -> float:
    """When upstream last confirmed ``tag`` (what the tag TTL counts from)."""
    with closing(_index(data_dir)) as db:
        row = db.execute(
            "SELECT checked_at FROM tags WHERE upstream = ? AND repo = ? AND tag = ?",
            (upstream, repo, tag),
        ).fetchone()
    assert row is not None, f"{upstream}/{repo}:{tag} is not in the index"
    return float(row[0])


def wait_tag_expired(data_dir: Path, upstream: str, repo: str, tag: str, ttl: float) -> None:
    """Until the cache counts ``tag``'s TTL as over (its next request revalidates)."""
    expires = tag_checked_at(data_dir, upstream, repo, tag) + ttl
    wait_until(lambda: time.time() >= expires, timeout=ttl + 10)


def last_used(data_dir: Path, digests: Iterable[str] = (), tags: Iterable[Tag] = ()) -> float:
    """The latest ``last_access`` of ``digests`` and ``last_pulled`` of ``tags``."""
    moments: list[float] = []
    with closing(_index(data_dir)) as db:
        for digest in digests:
            row = db.execute("SELECT last_access FROM objects WHERE digest = ?", (digest,))
            found = row.fetchone()
            assert found is not None, f"{digest} is not in the index"
            moments.append(float(found[0]))
        for upstream, repo, tag in tags:
            row = db.execute(
                "SELECT last_pulled FROM tags WHERE upstream = ? AND repo = ? AND tag = ?",
                (upstream, repo, tag),
            )
            found = row.fetchone()
            assert found is not None, f"{upstream}/{repo}:{tag} is not in the index"
            moments.append(float(found[0]))
    return max(moments)


def wait_unused_for(
    data_dir: Path, seconds: float, digests: Iterable[str] = (), tags: Iterable[Tag] = ()
) -> None:
    """Until every one of ``digests``/``tags`` was last used more than ``seconds`` ago."""
    since = last_used(data_dir, list(digests), list(tags)) + seconds
    wait_until(lambda: time.time() > since, timeout=seconds + 10)


class _Logs(Protocol):
    def log_text(self) -> str: ...


def wait_for_log(server: _Logs, text: str, within: float = 5.0) -> str:
    """The server's log once it holds ``text`` (access lines are written once per event
    loop turn, a moment after the response went out); the log text is returned."""
    wait_until(lambda: text in server.log_text(), timeout=within)
    return server.log_text()
