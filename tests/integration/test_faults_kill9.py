"""Fault: ``kill -9`` at random moments while fills are running, again and again.

Five rounds: start the cache (alternately one process and two prefork workers),
pull several images at once through a bandwidth-limited upstream, SIGKILL the
whole process group at a random moment. After every crash nothing under
``blobs/`` is wrong; partials only ever live under ``fills/`` and the next
start resumes them with Range requests. At the end ``registry-cache cache
verify`` finds nothing wrong and every image pulls correctly with skopeo.

The seed of the random kill times is printed on failure; ``KILL9_SEED=<n>``
replays a run.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import urllib3

from tests.harness.cache import CacheServer, run_cli, safe_upstream_args
from tests.harness.clients import pulled_blobs, skopeo_available, skopeo_copy
from tests.harness.faults import FaultProxy, Rule
from tests.harness.images import build_image, push
from tests.harness.push import PushResult
from tests.harness.registry import UpstreamRegistry
from tests.harness.require import needs

MiB = 1 << 20
ROUNDS = 5
IMAGES = 3
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def pull_everything(cache: CacheServer, images: list[PushResult]) -> list[threading.Thread]:
    """Fetch every manifest and blob concurrently (results ignored: we will crash)."""
    http = urllib3.PoolManager(
        maxsize=16, retries=False, timeout=urllib3.Timeout(connect=2, read=20)
    )

    def fetch(path: str) -> None:
        try:
            response = http.request(
                "GET", cache.url + path, headers={"Accept": OCI_MANIFEST}, preload_content=False
            )
            for _ in response.stream(1 << 16):
                pass
        except urllib3.exceptions.HTTPError:
            pass

    paths = []
    for i, image in enumerate(images):
        repo = f"/v2/library/crash{i}"
        paths.append(f"{repo}/manifests/1")
        paths += [f"{repo}/blobs/{d}" for d in image.layer_digests]
        paths.append(f"{repo}/blobs/{image.artifact.config.digest}")  # type: ignore[union-attr]
    threads = [threading.Thread(target=fetch, args=(p,), daemon=True) for p in paths]
    for thread in threads:
        thread.start()
    return threads


def assert_blobs_intact(data: Path) -> int:
    """Every file under blobs/ is complete and hashes to its name; returns how many."""
    count = 0
    for path in (data / "blobs").rglob("*"):
        if path.is_file():
            assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name, path
            count += 1
    return count


def cache_verify(cache: CacheServer) -> dict[str, object]:
    """``registry-cache cache verify --json`` on the (stopped or running) cache's data."""
    verify = ["cache", "verify", "--json", "--data-dir", str(cache.data_dir)]
    result = run_cli(*verify, cwd=cache.cwd, timeout=60, env=cache.env())
    assert result.returncode == 0, result.stdout + result.stderr
    report: dict[str, object] = json.loads(result.stdout)
    return report


@needs(skopeo_available(), "skopeo missing")
def test_kill9_during_fills_in_a_loop_then_verify_and_pull_everything(
    upstream: UpstreamRegistry,
    proxy: FaultProxy,
    make_cache: Callable[..., CacheServer],
    tmp_path: Path,
) -> None:
    seed = int(os.environ.get("KILL9_SEED") or random.SystemRandom().randrange(1 << 30))
    rng = random.Random(seed)
    images = [
        push(
            upstream.url,
            f"library/crash{i}",
            "1",
            build_image(f"crash-{i}", layers=2, layer_size=3 * MiB, workdir=tmp_path),
        )
        for i in range(IMAGES)
    ]
    # ~3 MiB layers at 2 MiB/s each: every fill takes about 1.5 s.
    proxy.add(Rule(path="/blobs/", method="GET", rate=2 * MiB))
    base = ["--upstream", f"docker.io={proxy.url}"]
    cache = make_cache(*base, start=False)
    kills: list[float] = []
    for round_ in range(ROUNDS):
        cache.args = safe_upstream_args([*base, "--workers", str(1 + round_ % 2)])
        cache.start()
        threads = pull_everything(cache, images)
        moment = rng.uniform(0.05, 1.2)
        kills.append(round(moment, 2))
        time.sleep(moment)
        cache.kill9()
        for thread in threads:
            thread.join(timeout=10)
        where = f"seed {seed}, round {round_}, kills at {kills}"
        try:
            assert_blobs_intact(cache.data_dir)
        except AssertionError as exc:
            raise AssertionError(f"{where}: {exc}") from None

    # Resumed across restarts at least once (fills were cut in every round).
    resumed = [s for s in proxy.log if s.method == "GET" and s.range not in (None, "bytes=0-")]
    assert resumed, f"seed {seed}: no fill was ever resumed (kills at {kills})"

    proxy.clear()
    report = cache_verify(cache)
    assert report["ok"] is True and not report["corrupt"], report
    cache.args = safe_upstream_args([*base, "--workers", "2"])
    cache.start()
    for i, image in enumerate(images):
        dest = tmp_path / f"pulled-{i}"
        skopeo_copy(f"docker://{cache.host_port}/library/crash{i}:1", dest)
        config = image.artifact.config.digest  # type: ignore[union-attr]
        assert {*image.layer_digests, config} <= pulled_blobs(dest), f"seed {seed}"
    # Every partial was resumed and published (the rename may trail the last byte a bit).
    deadline = time.monotonic() + 5
    fills = cache.data_dir / "fills"
    while any(fills.glob("*.partial")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not list(fills.glob("*.partial"))
    assert assert_blobs_intact(cache.data_dir) == IMAGES * 4
    report = cache_verify(cache)
    assert report["ok"] is True and report["checked"] == IMAGES * 4, report
