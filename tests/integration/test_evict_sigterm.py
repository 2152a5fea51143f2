"""SIGTERM during a big eviction pass: ``serve`` exits within ``--shutdown-grace``,
and the pass it cut short leaves no index row without its file.

The data directory is a lived-in cache of 20,000 objects (the big-cache
benchmark's builder, rows through ``Index.import_rows``); a cap at a tenth of its
content makes the pass at start-up evict most of it, which takes seconds here.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from benchmarks.bigcache.dataset import build
from registry_cache.index.sqlite import SqliteIndex
from tests.harness.cache import CacheServer, run_cli
from tests.harness.ports import free_port

OBJECTS = 20_000
GRACE = 2.0


async def _build(data: Path) -> int:
    index = await SqliteIndex.open(data / "index.sqlite3")
    try:
        await build(data, index, OBJECTS, now=time.time() - 3600)
        return await index.total_size()
    finally:
        await index.close()


def _wait_for(cache: CacheServer, text: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in cache.log_text():
            return True
        time.sleep(0.02)
    return False


def test_sigterm_mid_pass_exits_within_grace_and_keeps_rows_and_files_agreeing(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    total = asyncio.run(_build(data))
    dead = f"http://127.0.0.1:{free_port()}"  # no upstream is asked for anything
    upstreams = [a for n in ("a", "b", "c") for a in ("--upstream", f"registry-{n}.test={dead}")]
    args = [
        *upstreams,
        *("--upstream", "docker.io=none", "--upstream", "ghcr.io=none"),
        *("--upstream", "quay.io=none", "--default-upstream", "none"),
        *("--max-size", str(total // 10), "--shutdown-grace", f"{GRACE:g}s"),
    ]
    cache = CacheServer(tmp_path, args)
    cache.start()
    try:
        assert _wait_for(cache, "eviction pass:", 20), cache.log_text()[-3000:]
        began = time.monotonic()
        cache.send_signal(signal.SIGTERM)
        code = cache.wait(GRACE + 10)
        took = time.monotonic() - began
    finally:
        cache.stop()
    log = cache.log_text()
    assert code == 0 and took <= GRACE, (code, took)
    assert "evicted " not in log  # it was cut short, not finished
    where = ["--data-dir", str(data)]
    verify = run_cli("cache", "verify", *where, cwd=tmp_path, timeout=300)
    assert verify.returncode == 0, verify.stdout[-2000:] + verify.stderr
