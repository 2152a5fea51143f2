"""The cache's own log, read back from a real cache process.

- Text (the default): values a client controls (path, query, reference, repository,
  user agent, login name) cannot forge a log line: every line the cache writes
  starts with its timestamp, however the request was built (percent-escapes that
  decode to line breaks, raw bytes over a socket, quotes that would end a field).
- JSON (``--log-format json``): every line is one JSON object; access lines carry the
  access fields and a request id, which is also returned as ``X-Request-Id`` and
  sent upstream (from the thread pool and from a fill's thread).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3

from tests.harness.cache import CacheServer
from tests.harness.images import build_image, push
from tests.harness.raw_upstream import RawUpstream
from tests.harness.registry import UpstreamRegistry

http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=30))
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
# logs.FORMAT: "2026-12-01 08:31:42,654 INFO [19188] registry_cache.access: ..."
RECORD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) \[\d+\] ")
FAKE = "2026-01-01 00:00:00,000 INFO [1] registry_cache.access: 6.6.6.6 forged"


def cache_lines(cache: CacheServer) -> list[str]:
    """Every line the cache wrote (the harness's own ``===`` lines left out); split
    wherever any reader might see a line break (``str.splitlines``)."""
    return [
        line
        for line in cache.log_text().splitlines()
        if line and not line.startswith("=== harness:")
    ]


def raw_request(cache: CacheServer, head: bytes) -> bytes:
    """Send ``head`` as is over a socket; what came back until the cache closed."""
    with socket.create_connection(("127.0.0.1", cache.port), timeout=10) as sock:
        sock.sendall(head)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def access_lines(cache: CacheServer) -> list[str]:
    return [line for line in cache_lines(cache) if "registry_cache.access: " in line]


def settle(cache: CacheServer, request_id: str, timeout: float = 5.0) -> None:
    """Wait until the access line of ``request_id`` is written: the cache writes it
    on the loop turn after the answer, so a client can be quicker than the log."""
    deadline = time.monotonic() + timeout
    while request_id not in cache.log_text():
        assert time.monotonic() < deadline, f"no access line for {request_id}"
        time.sleep(0.02)


@pytest.fixture
def raw_upstream() -> Iterator[RawUpstream]:
    upstream = RawUpstream().start()
    yield upstream
    upstream.stop()


def test_request_values_cannot_forge_log_lines(
    make_cache: Callable[..., CacheServer], tmp_path: Path
) -> None:
    users = tmp_path / "htpasswd"
    entry = subprocess.run(
        ["htpasswd", "-B", "-bn", "alice", "pw-alice"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout.strip()  # fmt: skip
    users.write_text(entry + "\n")
    cache = make_cache("--htpasswd", str(users), "--upstream", "docker.io=http://127.0.0.1:9")
    ok = "Basic " + base64.b64encode(b"alice:pw-alice").decode()
    breaks = ["%0D", "%0A", "%0D%0A", "%0B", "%0C", "%1C", "%C2%85", "%E2%80%A8", "%E2%80%A9"]
    for brk in breaks:
        for path in (
            f"/v2/library/x/manifests/1.0{brk}{FAKE}",  # the reference
            f"/v2/library/x{brk}{FAKE}/manifests/1.0",  # the repository
            f"/v2/library/x/tags/list?n=1&last=a{brk}{FAKE}",  # the query
        ):
            answer = http.request(
                "GET", cache.url + path.replace(" ", "%20"), headers={"Authorization": ok}
            )
            assert answer.status != 500, (path, answer.data)
    # Raw bytes the HTTP parser lets through: a quote in the path, UTF-8 in a header.
    agent = 'evil" cache=HIT \xe9\x85' + FAKE
    raw_request(
        cache,
        b'GET /v2/library/x/manifests/a" HTTP/1.1\r\nHost: x\r\n'
        + b"User-Agent: " + agent.encode() + b"\r\n"
        + b"Authorization: " + ok.encode() + b"\r\nConnection: close\r\n\r\n",
    )  # fmt: skip
    encoded = http.request(
        "GET", cache.url + "/v2/library/x/manifests/caf%C3%A9%C2%85", headers={"Authorization": ok}
    )
    assert encoded.status == 404
    # A login name that carries a line break and a fake record (failed login).
    forged_user = base64.b64encode(f"mallory\n{FAKE}:x".encode()).decode()
    assert (
        http.request(
            "GET", cache.url + "/v2/", headers={"Authorization": "Basic " + forged_user}
        ).status
        == 401
    )
    # A reference with a quote and a space that would end the quoted path / start a field.
    quoted = http.request(
        "GET",
        cache.url + "/v2/library/x/manifests/a%22%20200%20cache=HIT",
        headers={"Authorization": ok},
    )
    assert quoted.status < 500
    settle(cache, quoted.headers["X-Request-Id"])

    lines = cache_lines(cache)
    unescaped = [line for line in lines if not RECORD.match(line)]
    assert not unescaped, "\n".join(unescaped)
    assert not any(line.startswith(FAKE[:20]) for line in lines)
    text = "\n".join(lines)
    # Escaped, and still readable: ordinary UTF-8 stays as it is.
    assert "ref=1.0\\r2026-01-01\\x2000:00:00" in text
    assert "ref=caf\u00e9\\x85" in text
    assert '"GET /v2/library/x/manifests/a\\"" 404 ' in text
    assert 'agent="evil\\" cache=HIT \u00e9\\x85' + FAKE + '"' in text
    assert "client authentication failed for user mallory\\n2026-01-01" in text
    # The access line of the quoted reference still parses: its status is the real one.
    line = next(line for line in access_lines(cache) if "a%22%20200" in line)
    assert re.search(r'"GET \S+manifests/a%22%20200%20cache=HIT" \d{3} ', line), line
    assert 'ref=a\\"\\x20200\\x20cache=HIT ' in line, line


def test_json_log_lines_parse_and_carry_request_ids(
    upstream: UpstreamRegistry, make_cache: Callable[..., CacheServer]
) -> None:
    pushed = push(upstream.url, "library/logged", "1", build_image("logged", layers=1))
    cache = make_cache("--upstream", f"docker.io={upstream.url}", "--log-format", "json")
    manifest = http.request(
        "GET", f"{cache.url}/v2/library/logged/manifests/1",
        headers={"Accept": MANIFEST, "X-Request-Id": "trace-42.a:b", "User-Agent": 'ua "x"'},
    )  # fmt: skip
    assert manifest.status == 200 and manifest.headers["X-Request-Id"] == "trace-42.a:b"
    blob = http.request("GET", f"{cache.url}/v2/library/logged/blobs/{pushed.layer_digests[0]}")
    assert blob.status == 200
    generated = blob.headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    insane = http.request("GET", f"{cache.url}/v2/", headers={"X-Request-Id": "a b" + "x" * 200})
    assert re.fullmatch(r"[0-9a-f]{32}", insane.headers["X-Request-Id"])
    missing = http.request("GET", f"{cache.url}/v2/library/nope/manifests/1%0Dx")
    assert missing.status == 404
    settle(cache, missing.headers["X-Request-Id"])

    records: list[dict[str, Any]] = []
    for line in cache_lines(cache):
        record = json.loads(line)  # every line, not just access lines
        assert isinstance(record, dict), line
        assert {"time", "level", "pid", "logger"} <= record.keys(), line
        records.append(record)
    access = [r for r in records if r["logger"] == "registry_cache.access"]
    others = [r for r in records if r["logger"] != "registry_cache.access"]
    assert others and all(isinstance(r["message"], str) for r in others)
    fields = {
        "method", "path", "status", "upstream", "repo", "ref", "cache", "bytes",
        "duration_ms", "error", "user", "remote", "request_id",
    }  # fmt: skip
    assert all(fields <= r.keys() for r in access)
    first = next(r for r in access if r["request_id"] == "trace-42.a:b")
    assert first["method"] == "GET" and first["path"] == "/v2/library/logged/manifests/1"
    assert first["status"] == 200 and first["upstream"] == "docker.io"
    assert first["repo"] == "library/logged" and first["ref"] == "1" and first["cache"] == "MISS"
    assert first["user_agent"] == 'ua "x"' and first["remote"] == "127.0.0.1"
    assert isinstance(first["duration_ms"], float) and isinstance(first["bytes"], int)
    by_blob = next(r for r in access if r["request_id"] == generated)
    assert by_blob["bytes"] == len(blob.data) and by_blob["error"] is None
    assert any(r["status"] == 404 and r["ref"] == "1\rx" for r in access)
    assert all(r["request_id"] != "a b" + "x" * 200 for r in access)


def test_request_ids_reach_the_upstream(
    raw_upstream: RawUpstream, make_cache: Callable[..., CacheServer]
) -> None:
    body = b"traced blob"
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    raw_upstream.blob(f"/v2/library/traced/blobs/{digest}", body)
    cache = make_cache("--upstream", f"docker.io={raw_upstream.url}", "--log-format", "json")
    # A manifest is asked for from the thread pool, a blob from a fill's own thread.
    manifest = http.request(
        "GET",
        f"{cache.url}/v2/library/traced/manifests/1",
        headers={"X-Request-Id": "from-client-1"},
    )
    assert manifest.status == 404
    blob = http.request(
        "GET",
        f"{cache.url}/v2/library/traced/blobs/{digest}",
        headers={"X-Request-Id": "from-client-2"},
    )
    assert blob.status == 200 and blob.data == body
    manifest_asks = [s for s in raw_upstream.seen if "/manifests/" in s.path]
    assert manifest_asks and all(
        s.headers.get("X-Request-Id") == "from-client-1" for s in manifest_asks
    )
    blob_get = raw_upstream.headers_for("GET", f"/v2/library/traced/blobs/{digest}")
    assert blob_get.get("X-Request-Id") == "from-client-2"
