"""Liveness and readiness probes on a real cache, with a real upstream.

- ``/healthz`` answers while the worker's loop runs; ``/readyz`` says whether the
  index and the data directory work, as JSON, 200 or 503.
- A dead upstream leaves the cache ready (it serves what it has).
- A data directory that stops taking files makes the cache unready (and says why)
  while hits keep flowing; once writable again it is ready again. (A read-only
  tmpfs is mounted over ``DATA/tmp`` in the cache's own mount namespace: remounting
  the whole data directory read-only is refused while the index is open.)
- Successful probes stay out of the access log; a failed one is logged.
- The Dockerfile's HEALTHCHECK command, run as written (port aside), agrees.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import urllib3

from tests.harness.cache import CacheServer
from tests.harness.certs import make_tls
from tests.harness.images import build_image, push
from tests.harness.registry import UpstreamRegistry
from tests.harness.tmpfs import in_mounts
from tests.harness.wait import wait_for_log
from tests.unit.test_clientconfig_deploy import healthcheck_argv

http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=10))


def probe(cache: CacheServer, path: str, method: str = "GET") -> urllib3.BaseHTTPResponse:
    return http.request(method, cache.url + path)


def docker_healthcheck(
    cache: CacheServer, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The image's HEALTHCHECK command, told the cache's address as the image tells it."""
    argv = healthcheck_argv()
    assert argv[0] == "python"
    env = {**os.environ, "REGISTRY_CACHE_LISTEN": cache.host_port, **(env or {})}
    cmd = [sys.executable, *argv[1:]]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env, check=False)


def readiness(cache: CacheServer) -> tuple[int, dict[str, object]]:
    response = probe(cache, "/readyz")
    assert response.headers["Content-Type"].startswith("application/json")
    return response.status, json.loads(response.data)


def test_probes_on_a_working_cache_and_a_dead_upstream(
    upstream: UpstreamRegistry, make_cache: Callable[..., CacheServer]
) -> None:
    cache = make_cache("--upstream", f"docker.io={upstream.url}", "--workers", "2")
    alive = probe(cache, "/healthz")
    assert alive.status == 200 and alive.data == b"ok\n"
    assert probe(cache, "/healthz", "HEAD").status == 200
    status, body = readiness(cache)
    assert status == 200, body
    assert body["status"] == "ready"
    assert body["checks"] == {"index": "ok", "data_dir": "ok"}
    assert isinstance(body["disk_free_bytes"], int) and body["disk_free_bytes"] > 0
    assert docker_healthcheck(cache).returncode == 0

    upstream.stop()
    status, body = readiness(cache)
    assert status == 200, body  # serving what it has is still serving
    assert "/readyz" not in cache.log_text() and "/healthz" not in cache.log_text()


def test_the_image_healthcheck_follows_the_tls_setting(
    upstream: UpstreamRegistry, make_cache: Callable[..., CacheServer], tmp_path: Path
) -> None:
    """In the image, TLS is configured by environment; the probe then asks over HTTPS."""
    tls = make_tls(tmp_path / "tls")
    env = {"REGISTRY_CACHE_TLS_CERT": str(tls.cert), "REGISTRY_CACHE_TLS_KEY": str(tls.key)}
    cache = make_cache("--upstream", f"docker.io={upstream.url}", env=env, ca_file=tls.ca_cert)
    healthy = docker_healthcheck(cache, env)
    assert healthy.returncode == 0, healthy.stderr
    plain = docker_healthcheck(cache)  # the same server asked over plain HTTP
    assert plain.returncode == 1 and plain.stderr.startswith("not ready: http://")
    assert "Traceback" not in plain.stderr


def test_read_only_data_directory_is_not_ready_but_hits_flow(
    upstream: UpstreamRegistry, tmpfs_cache: Callable[..., CacheServer]
) -> None:
    image = push(upstream.url, "library/ready", "1", build_image("ready", layers=1))
    layer = image.layer_digests[0]
    cache = tmpfs_cache("--upstream", f"docker.io={upstream.url}")
    assert http.request("GET", f"{cache.url}/v2/library/ready/blobs/{layer}").status == 200

    scratch = str(cache.data_dir / "tmp")
    in_mounts(cache, "mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", scratch)
    try:
        status, body = readiness(cache)
        assert status == 503, body
        assert body["status"] == "not ready"
        checks = body["checks"]
        assert isinstance(checks, dict)
        assert checks["index"] == "ok" and "Read-only file system" in checks["data_dir"]
        assert probe(cache, "/healthz").status == 200  # alive: no reason to restart it
        hit = http.request("GET", f"{cache.url}/v2/library/ready/blobs/{layer}")
        assert hit.status == 200 and "sha256:" + hashlib.sha256(hit.data).hexdigest() == layer
        wait_for_log(cache, '"GET /readyz" 503')
        unhealthy = docker_healthcheck(cache)
        assert unhealthy.returncode == 1
        assert unhealthy.stderr.startswith(f"not ready: {cache.url}/readyz: 503 ")
        assert "Traceback" not in unhealthy.stderr
    finally:
        in_mounts(cache, "umount", scratch)
    assert readiness(cache)[0] == 200
