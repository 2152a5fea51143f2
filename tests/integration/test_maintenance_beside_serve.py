"""Hits never wait on the index's locks (issue 10), over SQLite and PostgreSQL.

A real server in front of a real docker-registry serves an image it already holds
(a manifest by tag, a blob HEAD, two blob GETs), over a data directory that also
holds a lived-in synthetic cache (the big-cache benchmark's builder): every hit
must answer 200 with the right bytes, from the cache (``X-Registry-Cache: HIT``,
upstream never asked), well within ``HIT_BOUND``, far below the busy timeout
(SQLite's writer waits 30 s, a PostgreSQL statement 3 s)

- while another connection holds the write lock for as long as the test wants:
  SQLite's ``BEGIN IMMEDIATE`` on the index file (what one long transaction of a
  ``cache gc`` would do), or row locks on every row of the hit content in
  PostgreSQL while rows are "deleted" elsewhere all along (the generation bumped
  and notified, as a command's deletions do, so the server's memos keep being
  dropped and hits have to read the index); held across access-time flushes, so
  the server's own write is stuck behind it meanwhile;
- while the real ``cache gc --dry-run``, ``cache verify``, ``cache prune
  --older-than`` and ``cache gc`` run beside the server (each deleting rows the
  server then forgets its memos of).

Not timing luck: the locks are held for as long as the test says, across the
server's flush beats; a hit that waited for them would take seconds, and one the
index failed for would be answered from upstream (the status and upstream's
request log tell).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import urllib3

from benchmarks.bigcache.dataset import build
from registry_cache.index.base import Index
from registry_cache.index.postgres import BUMP, CHANNEL, PostgresIndex
from registry_cache.index.sqlite import SqliteIndex
from registry_cache.web.app import TOUCH_FLUSH_INTERVAL
from tests.harness.cache import CacheServer, cli_env, run_cli
from tests.harness.images import Image, build_image, push
from tests.harness.ports import free_port
from tests.harness.registry import UpstreamRegistry

HIT_BOUND = 1.0  # seconds; a hit that waited on a lock would take the lock's whole hold
HOLD = 2 * TOUCH_FLUSH_INTERVAL + 2.0  # across two flush beats (and a PostgreSQL timeout)
OBJECTS = 30_000  # synthetic rows beside the image (the commands take a while over them)
REPO, TAG = "library/hot", "1"
ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"
HTTP = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=60))


@dataclass
class Served:
    """The server, its index and what it holds."""

    cache: CacheServer
    upstream: UpstreamRegistry
    image: Image
    index_url: str | None  # None: SQLite in the data directory
    env: dict[str, str] = field(default_factory=dict)  # the CLI configured as the server

    def cli(self, *args: str) -> dict[str, Any]:
        done = run_cli("cache", *args, "--json", cwd=self.cache.cwd, timeout=300, env=self.env)
        assert done.returncode == 0, f"cache {' '.join(args)}: {done.stderr[-2000:]}"
        parsed: dict[str, Any] = json.loads(done.stdout)
        return parsed


@dataclass
class Answer:
    kind: str
    seconds: float
    problem: str | None  # None: 200, the right bytes, a hit


class Hits(threading.Thread):
    """The four hits, round after round, on one keep-alive connection, until stopped."""

    def __init__(self, served: Served) -> None:
        super().__init__(daemon=True)
        self.served = served
        self.answers: list[Answer] = []
        self.rounds = 0
        self._done = threading.Event()
        self._http = urllib3.HTTPConnectionPool(
            "127.0.0.1", served.cache.port, maxsize=1, retries=False, timeout=60.0
        )

    def run(self) -> None:
        image = self.served.image
        layer = image.layers[-1].blob.read()
        config = image.config.read()
        base = f"/v2/{REPO}"
        checks: list[tuple[str, str, str, Callable[[urllib3.BaseHTTPResponse], bool]]] = [
            (
                "manifest by tag",
                "GET",
                f"{base}/manifests/{TAG}",
                lambda r: r.data == image.manifest.read(),
            ),
            (
                "blob HEAD",
                "HEAD",
                f"{base}/blobs/{image.layers[-1].digest}",
                lambda r: r.headers.get("Content-Length") == str(len(layer)),
            ),
            (
                "blob GET",
                "GET",
                f"{base}/blobs/{image.layers[-1].digest}",
                lambda r: hashlib.sha256(r.data).digest() == hashlib.sha256(layer).digest(),
            ),
            (
                "config GET",
                "GET",
                f"{base}/blobs/{image.config.digest}",
                lambda r: r.data == config,
            ),
        ]
        while not self._done.is_set():
            for kind, method, path, right in checks:
                began = time.monotonic()
                try:
                    response = self._http.request(method, path, headers={"Accept": ACCEPT})
                except urllib3.exceptions.HTTPError as exc:
                    self.answers.append(Answer(kind, time.monotonic() - began, repr(exc)))
                    continue
                took = time.monotonic() - began
                status = response.headers.get("X-Registry-Cache")
                problem = None
                if response.status != 200:
                    problem = f"status {response.status}"
                elif not right(response):
                    problem = "wrong bytes"
                elif status != "HIT":
                    problem = f"X-Registry-Cache: {status}"
                self.answers.append(Answer(kind, took, problem))
            self.rounds += 1

    def stop(self) -> list[Answer]:
        self._done.set()
        self.join(timeout=120)
        assert not self.is_alive()
        return self.answers


@contextmanager
def hitting(served: Served) -> Iterator[Hits]:
    served.upstream.clear_request_log()
    hits = Hits(served)
    hits.start()
    try:
        yield hits
    finally:
        hits.stop()


def assert_all_hits(served: Served, hits: Hits, during: str) -> None:
    answers = hits.answers
    assert hits.rounds >= 3, f"{during}: only {hits.rounds} round(s) of hits"
    wrong = [a for a in answers if a.problem is not None]
    assert not wrong, f"{during}: {len(wrong)} of {len(answers)} not a good hit: {wrong[:8]}"
    slowest = max(answers, key=lambda a: a.seconds)
    assert slowest.seconds < HIT_BOUND, f"{during}: a hit took {slowest}"
    asked = [e for e in served.upstream.request_log() if REPO in e.path]
    assert not asked, f"{during}: upstream was asked: {asked[:5]}"


async def _synthetic(data_dir: Path, index_url: str | None, replica: str) -> None:
    index: Index
    if index_url is None:
        index = await SqliteIndex.open(data_dir / "index.sqlite3")
    else:
        index = await PostgresIndex.open(index_url, replica=replica)
    try:
        await build(data_dir, index, OBJECTS, now=time.time() - 120)
    finally:
        await index.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def served(
    request: pytest.FixtureRequest,
    upstream: UpstreamRegistry,
    make_cache: Callable[..., CacheServer],
    tmp_path: Path,
) -> Served:
    image = build_image("beside-serve", layers=2, layer_size=256 << 10, workdir=tmp_path)
    push(upstream.url, REPO, TAG, image)
    port = free_port()
    args = ["--upstream", f"docker.io={upstream.url}", "--tag-ttl", "1h"]
    env = cli_env()
    index_url = None
    if request.param == "postgresql":
        index_url = request.getfixturevalue("pg_database").url
        secret = tmp_path / "cluster-secret"
        secret.write_text(secrets.token_hex(16) + "\n")
        advertise = f"http://127.0.0.1:{port}"
        args += ["--index", index_url, "--advertise", advertise]
        args += ["--cluster-secret-file", str(secret)]
        env.update(
            REGISTRY_CACHE_INDEX=index_url,
            REGISTRY_CACHE_ADVERTISE=advertise,
            REGISTRY_CACHE_CLUSTER_SECRET_FILE=str(secret),
        )
    cache = make_cache(*args, port=port, start=False)
    env["REGISTRY_CACHE_DATA_DIR"] = str(cache.data_dir)
    cache.data_dir.mkdir(parents=True)
    asyncio.run(_synthetic(cache.data_dir, index_url, f"http://127.0.0.1:{port}"))
    cache.start()
    served = Served(cache, upstream, image, index_url, env)
    # Pulled once: from here on every one of these requests is a hit.
    for path in (
        f"/v2/{REPO}/manifests/{TAG}",
        f"/v2/{REPO}/blobs/{image.config.digest}",
        *(f"/v2/{REPO}/blobs/{layer.digest}" for layer in image.layers),
    ):
        response = HTTP.request("GET", cache.url + path, headers={"Accept": ACCEPT})
        assert response.status == 200, (path, response.status)
    for digest in (image.config.digest, *(layer.digest for layer in image.layers)):
        assert cache.wait_for_blob(digest, 10).exists()
    _wait_for_hits(served)
    return served


def _wait_for_hits(served: Served, timeout: float = 10.0) -> None:
    """Until every request is a hit (a fill's row lands a moment after its last byte)."""
    deadline = time.monotonic() + timeout
    while True:
        with hitting(served) as hits:
            while hits.rounds < 1:
                time.sleep(0.01)
        if all(a.problem is None for a in hits.answers):
            return
        assert time.monotonic() < deadline, hits.answers
        time.sleep(0.1)


def _memos_dropped(served: Served) -> int:
    return served.cache.log_text().count("remembered tags and links dropped")


def _wait_memos_dropped(served: Served, before: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while _memos_dropped(served) <= before:
        assert time.monotonic() < deadline, "the server never dropped its memos"
        time.sleep(0.05)


# ------------------------------------------------------------------ SQLite


def _hold_sqlite_write_lock(served: Served, seconds: float) -> None:
    path = served.cache.data_dir / "index.sqlite3"
    # Rows deleted elsewhere (as gc's deletions say it): the server drops its memos,
    # so the hits under the lock have to read the index.
    db = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        before = _memos_dropped(served)
        db.execute(
            "INSERT INTO meta (key, value) VALUES ('generation', '1') ON CONFLICT (key)"
            " DO UPDATE SET value = CAST(value AS INTEGER) + 1"
        )
        _wait_memos_dropped(served, before)
        db.execute("BEGIN IMMEDIATE")
        try:
            with hitting(served) as hits:
                time.sleep(seconds)  # the lock is the point: held this long, whatever happens
            assert_all_hits(served, hits, f"SQLite's write lock held {seconds:.0f} s")
        finally:
            db.execute("ROLLBACK")
    finally:
        db.close()


# -------------------------------------------------------------- PostgreSQL


class PostgresLocks:
    """Row locks on the hit content's rows, in a transaction held open on a thread of
    its own, and generation bumps with their notification all along."""

    def __init__(self, url: str, served: Served) -> None:
        self.url = url
        image = served.image
        self.digests = [
            image.digest,
            image.config.digest,
            *(layer.digest for layer in image.layers),
        ]
        self.bumps = 0

    async def hold(self, seconds: float) -> None:
        locker = await asyncpg.connect(self.url)
        bumper = await asyncpg.connect(self.url)
        try:
            await locker.execute("SET search_path = registry_cache")
            await bumper.execute("SET search_path = registry_cache")
            transaction = locker.transaction()
            await transaction.start()
            try:
                for table in ("objects", "holdings"):
                    locked = await locker.fetch(
                        f"SELECT digest FROM {table} WHERE digest = ANY($1::text[]) FOR UPDATE",
                        self.digests,
                    )
                    assert len(locked) >= len(self.digests), (table, locked)
                tags = await locker.fetch("SELECT tag FROM tags WHERE repo = $1 FOR UPDATE", REPO)
                assert tags, "the tag has no row"
                deadline = time.monotonic() + seconds
                while time.monotonic() < deadline:
                    async with bumper.transaction():
                        value = await bumper.fetchval(BUMP + " RETURNING value")
                        await bumper.execute("SELECT pg_notify($1, $2)", CHANNEL, value)
                    self.bumps += 1
                    await asyncio.sleep(0.2)
            finally:
                await transaction.rollback()
        finally:
            await bumper.close()
            await locker.close()


def _hold_postgres_row_locks(served: Served, seconds: float) -> None:
    assert served.index_url is not None
    locks = PostgresLocks(served.index_url, served)
    with hitting(served) as hits:
        asyncio.run(locks.hold(seconds))
    assert locks.bumps > 10
    assert_all_hits(served, hits, f"row locks held {seconds:.0f} s, rows deleted meanwhile")


# ------------------------------------------------------------------- tests


def test_hits_never_wait_for_a_lock_another_connection_holds(served: Served) -> None:
    if served.index_url is None:
        _hold_sqlite_write_lock(served, HOLD)
    else:
        _hold_postgres_row_locks(served, HOLD)


def test_hits_flow_while_gc_verify_and_prune_run_beside_the_server(served: Served) -> None:
    steps: list[tuple[str, tuple[str, ...], Callable[[dict[str, Any]], bool]]] = [
        ("gc --dry-run", ("gc", "--dry-run", "--grace", "0s"), lambda r: bool(r["orphans"])),
        ("verify", ("verify",), lambda r: r["ok"] and r["checked"] > OBJECTS // 2),
        (
            "prune",
            ("prune", "--older-than", "30d", "--grace", "0s"),
            lambda r: bool(r["tags"]) and bool(r["objects"]),
        ),
        ("gc", ("gc", "--grace", "0s"), lambda r: bool(r["orphans"])),
    ]
    for label, args, did in steps:
        with hitting(served) as hits:
            began = time.monotonic()
            report = served.cli(*args)
            took = time.monotonic() - began
        assert did(report), f"cache {label} did nothing: {str(report)[:500]}"
        assert_all_hits(served, hits, f"cache {label} ({took:.1f} s)")
    # The image is still whole and served from the cache.
    _wait_for_hits(served)
