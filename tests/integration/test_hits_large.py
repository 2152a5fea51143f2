"""Hits bigger than one read piece (web/responses.py COPY_CHUNK): whole, ranged, HEAD.

Hits are read from the file in pieces and written to the socket; a blob of a few
pieces, and ranges that start and end inside pieces, must come back byte for byte,
over one keep-alive connection (a piece's buffered tail must not leak into the next
response).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import urllib3

from registry_cache.web.responses import COPY_CHUNK
from tests.harness.cache import CacheServer
from tests.harness.images import build_image, push
from tests.harness.registry import UpstreamRegistry


def test_multi_piece_hits_whole_and_ranged(
    upstream: UpstreamRegistry, make_cache: Callable[..., CacheServer]
) -> None:
    image = build_image("hits-large", layers=1, layer_size=3 * COPY_CHUNK + 12345)
    push(upstream.url, "library/big", "1", image)
    layer = image.layers[0]
    data = layer.blob.read()
    assert len(data) > 3 * COPY_CHUNK
    cache = make_cache("--upstream", f"docker.io={upstream.url}")
    url = f"{cache.url}/v2/library/big/blobs/{layer.digest}"
    http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=30))

    cold = http.request("GET", url)
    assert cold.status == 200 and cold.data == data
    cache.wait_for_blob(layer.digest, 10)

    whole = http.request("GET", url)  # a hit now
    assert whole.status == 200
    assert hashlib.sha256(whole.data).hexdigest() == layer.digest.removeprefix("sha256:")
    start, end = COPY_CHUNK - 7, 2 * COPY_CHUNK + 9  # inside the first and third pieces
    ranged = http.request("GET", url, headers={"Range": f"bytes={start}-{end}"})
    assert ranged.status == 206 and ranged.data == data[start : end + 1]
    head = http.request("HEAD", url)
    assert head.status == 200 and head.data == b""
    assert head.headers["Content-Length"] == str(len(data))
    again = http.request("GET", url, headers={"Range": "bytes=-100"})
    assert again.status == 206 and again.data == data[-100:]
    assert upstream.blob_gets(layer.digest) == 1
