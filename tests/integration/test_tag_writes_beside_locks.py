"""Tags are answered while another process holds SQLite's write lock.

A tag past its TTL is confirmed upstream and its new ``checked_at`` written; a tag never
seen is fetched and its manifest, links and tag written. SQLite's writer waits up to
30 s for another process's lock (a long ``cache gc`` transaction, a ``sqlite3`` shell):
the answer does not depend on those writes, so the request waits for them one second
at most (index/front.py ``REQUEST_WRITE_WAIT``) and they land once the lock is gone.
Against a real docker-registry, with ``BEGIN IMMEDIATE`` held on the index file by
another connection for the whole of both requests.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import urllib3

from registry_cache.index.front import REQUEST_WRITE_WAIT
from tests.harness.cache import CacheServer
from tests.harness.images import build_image, push
from tests.harness.registry import UpstreamRegistry
from tests.harness.wait import eventually, tag_checked_at, wait_tag_expired

REPO = "library/locked"
TTL = 1.0
ACCEPT = "application/vnd.oci.image.manifest.v1+json"
# Well above the wait a request allows its writes, far below SQLite's 30 s busy timeout.
BOUND = REQUEST_WRITE_WAIT + 4.0


def test_tags_are_answered_while_the_index_is_locked_and_written_after(
    upstream: UpstreamRegistry, make_cache: Callable[..., CacheServer], tmp_path: Path
) -> None:
    first = push(upstream.url, REPO, "1", build_image("locked-1", workdir=tmp_path / "1"))
    second = push(upstream.url, REPO, "2", build_image("locked-2", workdir=tmp_path / "2"))
    cache = make_cache("--upstream", f"docker.io={upstream.url}", "--tag-ttl", f"{TTL:.0f}s")
    http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=60))

    def get(tag: str) -> tuple[urllib3.BaseHTTPResponse, float]:
        began = time.monotonic()
        url = f"{cache.url}/v2/{REPO}/manifests/{tag}"
        response = http.request("GET", url, headers={"Accept": ACCEPT})
        return response, time.monotonic() - began

    fetched, _ = get("1")
    assert fetched.status == 200 and fetched.headers["X-Registry-Cache"] == "MISS"
    checked = tag_checked_at(cache.data_dir, "docker.io", REPO, "1")
    wait_tag_expired(cache.data_dir, "docker.io", REPO, "1", TTL)

    index = cache.data_dir / "index.sqlite3"
    with closing(sqlite3.connect(index, isolation_level=None, timeout=30)) as other:
        other.execute("BEGIN IMMEDIATE")  # another process's write transaction
        try:
            confirmed, took_confirmed = get("1")
            new, took_new = get("2")
        finally:
            other.execute("ROLLBACK")
    assert confirmed.status == 200 and confirmed.headers["X-Registry-Cache"] == "REVALIDATED"
    assert confirmed.headers["Docker-Content-Digest"] == first.digest
    assert took_confirmed < BOUND, f"a tag past its TTL took {took_confirmed:.1f} s"
    assert new.status == 200 and new.headers["X-Registry-Cache"] == "MISS"
    assert new.headers["Docker-Content-Digest"] == second.digest
    assert took_new < BOUND, f"a new tag took {took_new:.1f} s"

    # The writes were not lost: they land once the lock is released.
    def written() -> bool:
        with closing(sqlite3.connect(f"file:{index}?mode=ro", uri=True, timeout=10)) as db:
            rows = dict(
                db.execute(
                    "SELECT tag, checked_at FROM tags WHERE upstream = 'docker.io' AND repo = ?",
                    (REPO,),
                ).fetchall()
            )
            stored = db.execute(
                "SELECT COUNT(*) FROM objects WHERE digest = ?", (second.digest,)
            ).fetchone()[0]
        return rows.get("1", 0.0) > checked and "2" in rows and stored == 1

    assert eventually(written, timeout=30.0), cache.log_text()[-3000:]
    assert "database is locked" not in cache.log_text()
    assert "an index write waits on a lock" in cache.log_text()
