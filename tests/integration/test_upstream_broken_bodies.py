"""An upstream that sends a broken body: the client gets a 502/503 OCI error, never a 500.

The upstream here is a raw socket server (``RawUpstream``): a real registry never
sends a malformed chunked encoding, so none can stand in for one. A chunked blob
has no size up front, so its fill fails before any byte reaches the client, and
that failure must still be an upstream error, with no traceback in the log. One
whose headers promised a size is cut short instead (the client never completes it).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator

import pytest
import urllib3

from tests.harness.cache import CacheServer
from tests.harness.raw_upstream import RawUpstream

http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=60))
BODY = b"hello, chunked world"
DIGEST = "sha256:" + hashlib.sha256(BODY).hexdigest()
HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n"
)

BROKEN = {
    # http.client never checks the CRLF after a chunk: the stray bytes shift the
    # framing, the body decodes to other bytes, and only the digest notices.
    "chunk-overruns-its-size": HEAD + b"\r\n5\r\nhelloXX3\r\nabc\r\n0\r\n\r\n",
    "chunk-size-not-hex": HEAD + b"\r\nzz\r\nhello\r\n0\r\n\r\n",
    "cut-inside-a-chunk": HEAD + b"\r\n14\r\nhello, ch",
    "chunk-size-absurd": HEAD + b"\r\nffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    "chunked-and-a-length": HEAD + b"Content-Length: 3\r\n\r\n14\r\n" + BODY + b"\r\n0\r\n\r\n",
    "binary-garbage": HEAD + b"\r\n\xff\xfe\x00\r\n" + BODY + b"\r\n0\r\n\r\n",
}


@pytest.fixture
def raw_upstream() -> Iterator[RawUpstream]:
    upstream = RawUpstream().start()
    yield upstream
    upstream.stop()


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_broken_chunked_blob_is_an_upstream_error(
    name: str, raw_upstream: RawUpstream, make_cache: Callable[..., CacheServer]
) -> None:
    path = f"/v2/library/broken/blobs/{DIGEST}"
    raw_upstream.answer(path, BROKEN[name])
    cache = make_cache("--upstream", f"docker.io={raw_upstream.url}")
    for _ in range(2):  # and again: nothing half-made is left behind
        answer = http.request("GET", cache.url + path, preload_content=False)
        if answer.status == 200:
            # Headers sent before the failure showed (a Content-Length beside the
            # chunked encoding): the download is cut short, never completed wrong.
            with pytest.raises(urllib3.exceptions.ProtocolError):
                answer.read()
            continue
        assert answer.status in (502, 503), (answer.status, answer.read()[:300])
        assert answer.headers["Content-Type"].startswith("application/json")
        assert json.loads(answer.read())["errors"][0]["code"] == "UNAVAILABLE"
        assert not cache.blob_path(DIGEST).exists()
    last = http.request("GET", cache.url + "/v2/")
    assert last.status == 200
    deadline = time.monotonic() + 5  # its access line follows the failed ones' lines
    while last.headers["X-Request-Id"] not in cache.log_text():
        assert time.monotonic() < deadline, "the log did not catch up"
        time.sleep(0.02)
    log = cache.log_text()
    assert "Traceback" not in log and "internal error" not in log
