"""Hits bigger than one send piece: whole, ranged, HEAD, over plain HTTP and TLS.

Hits are sent in pieces (web/responses.py): sendfile calls of up to SENDFILE_SPAN
over plain HTTP, reads of COPY_CHUNK written to the socket over TLS. A blob of a few
pieces, and ranges that start and end inside pieces, must come back byte for byte,
over one keep-alive connection (a piece's buffered tail must not leak into the next
response).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
import urllib3

from registry_cache.web.responses import COPY_CHUNK, SENDFILE_SPAN
from tests.harness.cache import CacheServer
from tests.harness.certs import make_tls
from tests.harness.images import build_image, push
from tests.harness.registry import UpstreamRegistry


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_multi_piece_hits_whole_and_ranged(
    scheme: str,
    upstream: UpstreamRegistry,
    make_cache: Callable[..., CacheServer],
    tmp_path: Path,
) -> None:
    piece = SENDFILE_SPAN if scheme == "http" else COPY_CHUNK
    image = build_image("hits-large", layers=1, layer_size=3 * piece + 12345, workdir=tmp_path)
    push(upstream.url, "library/big", "1", image)
    layer = image.layers[0]
    data = layer.blob.read()
    assert len(data) > 3 * piece
    args = ["--upstream", f"docker.io={upstream.url}"]
    pool: dict[str, object] = {"retries": False, "timeout": urllib3.Timeout(connect=5, read=30)}
    if scheme == "https":
        tls = make_tls(tmp_path / "tls")
        cache = make_cache(
            *args, "--tls-cert", str(tls.cert), "--tls-key", str(tls.key), ca_file=tls.ca_cert
        )
        pool["ca_certs"] = str(tls.ca_cert)
    else:
        cache = make_cache(*args)
    assert cache.url.startswith(f"{scheme}://")
    url = f"{cache.url}/v2/library/big/blobs/{layer.digest}"
    http = urllib3.PoolManager(**pool)  # type: ignore[arg-type]

    cold = http.request("GET", url)
    assert cold.status == 200 and cold.data == data
    cache.wait_for_blob(layer.digest, 10)

    whole = http.request("GET", url)  # a hit now
    assert whole.status == 200
    assert hashlib.sha256(whole.data).hexdigest() == layer.digest.removeprefix("sha256:")
    start, end = piece - 7, 2 * piece + 9  # inside the first and third pieces
    ranged = http.request("GET", url, headers={"Range": f"bytes={start}-{end}"})
    assert ranged.status == 206 and ranged.data == data[start : end + 1]
    head = http.request("HEAD", url)
    assert head.status == 200 and head.data == b""
    assert head.headers["Content-Length"] == str(len(data))
    again = http.request("GET", url, headers={"Range": "bytes=-100"})
    assert again.status == 206 and again.data == data[-100:]
    assert upstream.blob_gets(layer.digest) == 1
