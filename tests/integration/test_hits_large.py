"""Hits bigger than one send piece: whole, ranged, HEAD, over plain HTTP and TLS.

Hits are sent in pieces (web/responses.py): sendfile calls of up to SENDFILE_SPAN
over plain HTTP, reads of COPY_CHUNK written to the socket over TLS. A blob of a few
pieces, and ranges that start and end inside pieces, must come back byte for byte,
over one keep-alive connection (a piece's buffered tail must not leak into the next
response).
"""

from __future__ import annotations

import hashlib
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

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


def _get_counting_segments(url: str, read_size: int) -> tuple[bytes, int, int]:
    """GET ``url`` over a raw socket, ``read_size`` per recv (Go's io.Copy: 32 KiB);
    returns the body, the TCP segments this socket received and its MSS (TCP_INFO)."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode())
        received = bytearray()
        while b"\r\n\r\n" not in received:
            received += sock.recv(read_size)
        head, _, body = bytes(received).partition(b"\r\n\r\n")
        length = int(
            next(
                line.split(b":", 1)[1]
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
        )
        data = bytearray(length)
        data[: len(body)] = body
        view, got = memoryview(data), len(body)
        while got < length:
            n = sock.recv_into(view[got : got + read_size])
            assert n, "connection closed early"
            got += n
        # struct tcp_info: 8 bytes of u8 fields, then u32s: tcpi_advmss is the 20th
        # (the path's MSS; snd_mss is bounded by half the peer's window, which a
        # client that only reads never grows); tcpi_segs_in is at byte 140 (Linux >= 4.2).
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
        (mss,) = struct.unpack_from("I", info, 84)
        (segs_in,) = struct.unpack_from("I", info, 140)
    return bytes(data), segs_in, mss


def test_a_hit_leaves_in_full_segments(
    upstream: UpstreamRegistry, make_cache: Callable[..., CacheServer], tmp_path: Path
) -> None:
    """aiohttp turns Nagle off on every connection; uncorked, each batch a sendfile
    call hands to TCP left as a full segment and a runt (twice the segments, 1.4x
    nginx's CPU per GiB). A hit is corked: about one segment per MSS."""
    image = build_image("hits-segments", layers=1, layer_size=16 << 20, workdir=tmp_path)
    push(upstream.url, "library/segs", "1", image)
    layer = image.layers[0]
    cache = make_cache("--upstream", f"docker.io={upstream.url}")
    url = f"{cache.url}/v2/library/segs/blobs/{layer.digest}"
    cold, _, _ = _get_counting_segments(url, 32 << 10)
    assert cold == layer.blob.read()
    cache.wait_for_blob(layer.digest, 10)

    data, segments, mss = _get_counting_segments(url, 32 << 10)
    assert hashlib.sha256(data).hexdigest() == layer.digest.removeprefix("sha256:")
    full = len(data) / mss
    # Measured for 256 MSS of body: 276-317 segments corked, 532-620 uncorked.
    assert segments <= 1.5 * full + 16, (segments, full)
