"""A partial left complete by a crash (every byte written, not yet published) resumes.

Its resume asks upstream for ``Range: bytes=<size>-``; docker-registry answers
``416`` with ``Content-Range: bytes */<size>``: nothing is missing, so the cache
verifies what it has and publishes it instead of failing the request.
"""

from __future__ import annotations

from collections.abc import Callable

import urllib3

from tests.harness.cache import CacheServer
from tests.harness.images import build_image, push
from tests.harness.registry import UpstreamRegistry


def test_a_complete_partial_is_published_on_the_next_request(
    upstream: UpstreamRegistry, make_cache: Callable[..., CacheServer]
) -> None:
    image = build_image("complete-partial", layers=1, layer_size=1 << 20)
    push(upstream.url, "library/app", "1", image)
    layer = image.layers[0]
    cache = make_cache("--upstream", f"docker.io={upstream.url}", start=False)
    algorithm, _, hex_ = layer.digest.partition(":")
    fills = cache.data_dir / "fills"
    fills.mkdir(parents=True)
    (fills / f"{algorithm}-{hex_}.partial").write_bytes(layer.blob.read())  # no size note
    cache.start()
    upstream.clear_request_log()
    answer = urllib3.PoolManager().request(
        "GET", f"{cache.url}/v2/library/app/blobs/{layer.digest}", retries=False
    )
    assert answer.status == 200 and answer.data == layer.blob.read()
    assert cache.wait_for_blob(layer.digest, 5).is_file()
    assert upstream.count("GET", f"/blobs/{layer.digest}", status=416) == 1
    assert upstream.blob_gets(layer.digest) == 0  # not a byte fetched again
