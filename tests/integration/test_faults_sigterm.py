"""Fault: SIGTERM (``kill <pid>``, ``systemctl stop``, ``docker stop``) during a download.

The cache stops accepting at once (new connections are refused, so clients and
load balancers move on), lets in-flight responses finish within
``shutdown_grace``, and exits 0; with one process or with prefork workers. When
the grace runs out it exits 0 anyway, and the fill it cut short is resumed from
its partial file after the restart.
"""

from __future__ import annotations

import hashlib
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import urllib3

from tests.harness.cache import CacheServer
from tests.harness.faults import FaultProxy, Rule
from tests.harness.images import build_image, push
from tests.harness.metrics import scrape
from tests.harness.registry import UpstreamRegistry

MiB = 1 << 20


@dataclass
class Download:
    """A blob GET streamed on a thread."""

    url: str
    status: int = 0
    received: int = 0
    digest: str = ""
    complete: bool = False
    finished_at: float = 0.0

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=30))
        hasher = hashlib.sha256()
        try:
            response = http.request("GET", self.url, preload_content=False)
            self.status = response.status
            for chunk in response.stream(1 << 16):
                hasher.update(chunk)
                self.received += len(chunk)
            self.complete = True
        except urllib3.exceptions.HTTPError:
            pass
        finally:
            self.digest = "sha256:" + hasher.hexdigest()
            self.finished_at = time.monotonic()

    def wait_bytes(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.received < count:
            assert time.monotonic() < deadline, f"only {self.received} bytes arrived"
            time.sleep(0.02)


def refused(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
    return False


def make_config(tmp_path: Path, grace: str) -> Path:
    path = tmp_path / f"grace-{grace}.yaml"
    path.write_text(f"shutdown_grace: {grace}\n")
    return path


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_refuses_new_connections_finishes_inflight_exits_0(
    workers: int,
    upstream: UpstreamRegistry,
    proxy: FaultProxy,
    make_cache: Callable[..., CacheServer],
    tmp_path: Path,
) -> None:
    image = build_image("drain", layers=1, layer_size=6 * MiB, workdir=tmp_path)
    layer = push(upstream.url, "library/drain", "1", image).layer_digests[0]
    proxy.add(Rule(path=f"/blobs/{layer}", method="GET", rate=2 * MiB))  # ~3 s
    cache = make_cache(
        "--upstream",
        f"docker.io={proxy.url}",
        "--config",
        str(make_config(tmp_path, "5s")),
        "--workers",
        str(workers),
    )
    download = Download(f"{cache.url}/v2/library/drain/blobs/{layer}")
    download.wait_bytes(MiB // 2)  # 2.5+ s to go: more than half the grace (see server.py)

    cache.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    while not refused(cache.port):  # stops accepting at once
        assert time.monotonic() - signalled < 1.0, "still accepting 1 s after SIGTERM"
        time.sleep(0.02)
    assert not download.complete
    code = cache.wait(timeout=10.0)
    exited = time.monotonic()

    assert code == 0
    assert not cache.left_behind  # no worker outlived the parent
    download.thread.join(timeout=5)
    assert download.complete and download.status == 200
    assert (download.digest, download.received) == (layer, image.layers[0].size)
    assert download.finished_at <= exited  # it finished before the process left
    assert exited - signalled < 6.0  # the download's ~3 s, within the 5 s grace (+ slack)
    log = cache.log_text()
    assert "shutting down" in log and "Traceback" not in log


def test_sigterm_grace_exceeded_exits_0_anyway_then_fill_resumes(
    upstream: UpstreamRegistry,
    proxy: FaultProxy,
    make_cache: Callable[..., CacheServer],
    tmp_path: Path,
) -> None:
    image = build_image("slowdrain", layers=1, layer_size=8 * MiB, workdir=tmp_path)
    layer = push(upstream.url, "library/slowdrain", "1", image).layer_digests[0]
    rule = proxy.add(Rule(path=f"/blobs/{layer}", method="GET", rate=MiB // 2))  # ~16 s
    cache = make_cache(
        "--upstream",
        f"docker.io={proxy.url}",
        "--config",
        str(make_config(tmp_path, "2s")),
    )
    url = f"{cache.url}/v2/library/slowdrain/blobs/{layer}"
    download = Download(url)
    download.wait_bytes(MiB // 2)

    cache.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    code = cache.wait(timeout=10.0)
    took = time.monotonic() - signalled

    assert code == 0
    # The grace, plus slack for a loaded machine; the download had ~15 s to go.
    assert 1.5 <= took < 6.0, f"exited {took:.1f}s after SIGTERM with a 2s grace"
    download.thread.join(timeout=5)
    assert not download.complete and download.received < image.layers[0].size
    partial = cache.data_dir / "fills" / f"sha256-{layer[7:]}.partial"
    assert partial.exists() and partial.stat().st_size > 0

    proxy.rules.remove(rule)
    cache.start()
    http = urllib3.PoolManager(retries=False)
    again = http.request("GET", url)
    assert again.status == 200
    assert "sha256:" + hashlib.sha256(again.data).hexdigest() == layer
    assert scrape(cache.url).value("registry_cache_fill_resumes_total", reason="partial") == 1
    last = [s for s in proxy.log if s.method == "GET" and layer in s.path][-1]
    assert last.range is not None and int(last.range[6:-1]) > 0


def test_sigterm_exits_within_grace_while_a_request_hangs_upstream(
    upstream: UpstreamRegistry,
    proxy: FaultProxy,
    make_cache: Callable[..., CacheServer],
    tmp_path: Path,
) -> None:
    proxy.add(Rule(path="/manifests/", hang=True))  # the cache's thread waits 10 s for headers
    cache = make_cache(
        "--upstream",
        f"docker.io={proxy.url}",
        "--config",
        str(make_config(tmp_path, "2s")),
    )
    download = Download(f"{cache.url}/v2/library/stuck/manifests/1")
    deadline = time.monotonic() + 5
    while proxy.count(path="/manifests/") == 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)

    cache.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    code = cache.wait(timeout=15.0)
    took = time.monotonic() - signalled

    assert code == 0
    # The grace (2 s) plus slack, not the 10 s the stuck upstream call could still take.
    assert took < 6.5, f"exited {took:.1f}s after SIGTERM with a 2s grace"
    download.thread.join(timeout=5)
    assert not download.complete or download.status != 200
