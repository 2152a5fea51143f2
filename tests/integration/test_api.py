"""The pull API over HTTP against a real upstream: headers, errors, Range, TTL, scoping."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import urllib3

from tests.harness.cache import CacheServer
from tests.harness.images import build_image, build_index, push
from tests.harness.push import PushResult
from tests.harness.registry import UpstreamRegistry
from tests.harness.wait import wait_for_log, wait_tag_expired

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
ABSENT = "sha256:" + "0" * 64

http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=30))


def get(url: str, method: str = "GET", **headers: str) -> urllib3.BaseHTTPResponse:
    return http.request(method, url, headers=headers, redirect=False)


def error_code(response: urllib3.BaseHTTPResponse) -> str:
    return str(json.loads(response.data)["errors"][0]["code"])


class Setup:
    def __init__(self, upstream: UpstreamRegistry, cache: CacheServer, image: PushResult) -> None:
        self.upstream, self.cache, self.image = upstream, cache, image
        self.base = cache.url

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture
def setup(upstream: UpstreamRegistry, make_cache: Callable[..., CacheServer]) -> Setup:
    image = push(upstream.url, "library/test", "1.0", build_image("api", layers=2))
    push(upstream.url, "library/test", "1.1", build_image("api-1.1", layers=1))
    cache = make_cache("--upstream", f"docker.io={upstream.url}", "--tag-ttl", "2s")
    return Setup(upstream, cache, image)


def test_base_route_and_api_version_everywhere(setup: Setup) -> None:
    response = get(setup.url("/v2/"))
    assert response.status == 200
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    missing = get(setup.url(f"/v2/library/test/blobs/{ABSENT}"))
    assert missing.headers["Docker-Distribution-API-Version"] == "registry/2.0"


def test_manifest_get_head_headers(setup: Setup) -> None:
    body = setup.image.artifact.manifest.read()
    for method in ("HEAD", "GET"):
        response = get(setup.url("/v2/library/test/manifests/1.0"), method, Accept=OCI_MANIFEST)
        assert response.status == 200
        assert response.headers["Docker-Content-Digest"] == setup.image.digest
        assert response.headers["Content-Length"] == str(len(body))
        assert response.headers["Content-Type"] == OCI_MANIFEST
        assert response.headers["ETag"] == f'"{setup.image.digest}"'
    # Bare name gets library/, and the bytes are exactly upstream's.
    assert get(setup.url("/v2/test/manifests/1.0")).data == body
    by_digest = get(setup.url(f"/v2/library/test/manifests/{setup.image.digest}"))
    assert by_digest.status == 200 and by_digest.data == body
    not_modified = get(
        setup.url("/v2/library/test/manifests/1.0"), **{"If-None-Match": f'"{setup.image.digest}"'}
    )
    assert not_modified.status == 304


def test_blob_head_of_uncached_blob_comes_from_upstream_metadata(setup: Setup) -> None:
    layer = setup.image.layer_digests[0]
    size = setup.image.artifact.layers[0].size  # type: ignore[union-attr]
    response = get(setup.url(f"/v2/library/test/blobs/{layer}"), "HEAD")
    assert response.status == 200
    assert response.headers["Content-Length"] == str(size)
    assert response.headers["Docker-Content-Digest"] == layer
    assert setup.upstream.blob_gets(layer) == 0  # answered without fetching


def test_blob_get_range_and_416(setup: Setup) -> None:
    layer = setup.image.artifact.layers[0]  # type: ignore[union-attr]
    data = layer.blob.read()
    url = setup.url(f"/v2/library/test/blobs/{layer.digest}")
    # A Range on a cold blob is served from the growing fill.
    partial = get(url, Range="bytes=10-19")
    assert partial.status == 206 and partial.data == data[10:20]
    assert partial.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    full = get(url)
    assert full.status == 200 and full.data == data
    assert full.headers["Docker-Content-Digest"] == layer.digest
    assert full.headers["Accept-Ranges"] == "bytes"
    tail = get(url, Range="bytes=-5")
    assert tail.status == 206 and tail.data == data[-5:]
    bad = get(url, Range=f"bytes={len(data)}-")
    assert bad.status == 416 and error_code(bad) == "RANGE_INVALID"
    assert bad.headers["Content-Range"] == f"bytes */{len(data)}"
    assert setup.upstream.blob_gets(layer.digest) == 1


def test_errors_are_oci_json(setup: Setup) -> None:
    cases = [
        ("GET", f"/v2/library/test/blobs/{ABSENT}", 404, "BLOB_UNKNOWN"),
        ("HEAD", f"/v2/library/test/blobs/{ABSENT}", 404, None),
        ("GET", f"/v2/library/test/manifests/{ABSENT}", 404, "MANIFEST_UNKNOWN"),
        ("GET", "/v2/library/test/manifests/nope", 404, "MANIFEST_UNKNOWN"),
        ("GET", "/v2/library/test/manifests/sha256:totallywrong", 400, "DIGEST_INVALID"),
        ("GET", "/v2/library/test/blobs/sha256:abc", 400, "DIGEST_INVALID"),
        ("GET", "/v2/library/test/blobs/md5:" + "a" * 32, 400, "DIGEST_INVALID"),
        ("GET", "/v2/Bad_Name/manifests/1.0", 400, "NAME_INVALID"),
        ("GET", "/v2/library/test/manifests/1.0?ns=registry.k8s.io", 404, "NAME_UNKNOWN"),
        ("PUT", "/v2/library/test/manifests/1.0", 405, "UNSUPPORTED"),
        ("POST", "/v2/library/test/blobs/uploads/", 405, "UNSUPPORTED"),
        ("DELETE", f"/v2/library/test/blobs/{ABSENT}", 405, "UNSUPPORTED"),
        ("PATCH", "/v2/library/test/blobs/uploads/x", 405, "UNSUPPORTED"),
    ]
    for method, path, status, code in cases:
        response = get(setup.url(path), method)
        assert response.status == status, (method, path, response.data)
        if code is not None:
            assert response.headers["Content-Type"].startswith("application/json")
            assert error_code(response) == code, (method, path)


def test_tag_ttl_then_head_revalidation(setup: Setup) -> None:
    url = setup.url("/v2/library/test/manifests/1.0")
    assert get(url).status == 200
    setup.upstream.clear_request_log()
    for _ in range(5):
        assert get(url).status == 200
    assert setup.upstream.count(path_substring="/manifests/") == 0  # within TTL: local
    wait_tag_expired(setup.cache.data_dir, "docker.io", "library/test", "1.0", 2.0)
    assert get(url).status == 200
    assert setup.upstream.count("HEAD", "/manifests/1.0") == 1
    assert setup.upstream.count("GET", "/manifests/") == 0  # never a GET: Docker Hub counts them
    wait_for_log(setup.cache, "cache=REVALIDATED")


def test_retagged_upstream_is_picked_up_after_ttl(setup: Setup) -> None:
    url = setup.url("/v2/library/test/manifests/moving")
    first = push(setup.upstream.url, "library/test", "moving", build_image("moving-1", layers=1))
    assert get(url).headers["Docker-Content-Digest"] == first.digest
    second = push(setup.upstream.url, "library/test", "moving", build_image("moving-2", layers=1))
    assert get(url).headers["Docker-Content-Digest"] == first.digest  # TTL not over yet
    wait_tag_expired(setup.cache.data_dir, "docker.io", "library/test", "moving", 2.0)
    assert get(url).headers["Docker-Content-Digest"] == second.digest


def test_tags_list_catalog_and_pagination(setup: Setup) -> None:
    listing = get(setup.url("/v2/library/test/tags/list"))
    assert listing.status == 200
    assert json.loads(listing.data)["tags"] == ["1.0", "1.1"]
    page = get(setup.url("/v2/library/test/tags/list?n=1"))
    assert json.loads(page.data)["tags"] == ["1.0"]
    assert 'rel="next"' in page.headers["Link"] and "last=1.0" in page.headers["Link"]
    get(setup.url("/v2/library/test/manifests/1.0"))
    catalog = json.loads(get(setup.url("/v2/_catalog")).data)
    assert "docker.io/library/test" in catalog["repositories"]
    scoped = json.loads(get(setup.url("/v2/_catalog?ns=docker.io")).data)
    assert scoped["repositories"] == ["library/test"]


def test_referrers_never_404(setup: Setup) -> None:
    response = get(setup.url(f"/v2/library/test/referrers/{setup.image.digest}"))
    assert response.status == 200
    assert response.headers["Content-Type"] == OCI_INDEX
    doc = json.loads(response.data)
    assert doc["schemaVersion"] == 2 and doc["manifests"] == []


def test_referrers_from_the_fallback_tag(setup: Setup) -> None:
    subject = setup.image.digest
    artifact = build_image("sbom", layers=1)
    pushed = push(setup.upstream.url, "library/test", None, artifact)
    descriptor = {
        "mediaType": OCI_MANIFEST,
        "digest": pushed.digest,
        "size": len(artifact.manifest.read()),
        "artifactType": "application/spdx+json",
    }
    index = build_index("unused")  # reuse the harness's push of an index document
    del index
    from tests.harness.images import Blob, dump_json
    from tests.harness.push import RegistrySession

    fallback = Blob.from_bytes(
        OCI_INDEX,
        dump_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [descriptor]}),
    )
    tag = "sha256-" + subject.split(":", 1)[1]
    RegistrySession(setup.upstream.url).put_manifest("library/test", tag, fallback)
    answer = json.loads(get(setup.url(f"/v2/library/test/referrers/{subject}")).data)
    assert [m["digest"] for m in answer["manifests"]] == [pushed.digest]
    filtered = get(
        setup.url(f"/v2/library/test/referrers/{subject}?artifactType=application/other")
    )
    assert json.loads(filtered.data)["manifests"] == []
    assert filtered.headers["OCI-Filters-Applied"] == "artifactType"


def test_blob_is_scoped_to_repositories_that_reference_it(setup: Setup) -> None:
    layer = setup.image.layer_digests[0]
    assert get(setup.url(f"/v2/library/test/blobs/{layer}")).status == 200
    # Another repository may not read it through the cache unless upstream says so.
    setup.upstream.clear_request_log()
    other = get(setup.url(f"/v2/library/other/blobs/{layer}"))
    assert other.status == 404 and error_code(other) in ("BLOB_UNKNOWN", "NAME_UNKNOWN")
    assert setup.upstream.count(path_substring=f"/v2/library/other/blobs/{layer}") >= 1


def test_index_and_child_manifests_are_kept(setup: Setup) -> None:
    multi = push(setup.upstream.url, "library/multi", "1", build_index("keep"))
    index = get(setup.url("/v2/library/multi/manifests/1"))
    assert index.status == 200 and index.headers["Content-Type"] == OCI_INDEX
    for child in multi.images:
        assert get(setup.url(f"/v2/library/multi/manifests/{child.digest}")).status == 200
    setup.upstream.stop()
    for child in multi.images:
        response = get(setup.url(f"/v2/library/multi/manifests/{child.digest}"))
        assert response.status == 200 and response.data == child.manifest.read()


def test_old_client_gets_default_platform_from_index(setup: Setup) -> None:
    multi = push(setup.upstream.url, "library/multi", "old", build_index("old-client"))
    response = get(setup.url("/v2/library/multi/manifests/old"), Accept=OCI_MANIFEST)
    assert response.status == 200
    amd64 = multi.artifact.for_platform("linux/amd64")  # type: ignore[union-attr]
    assert response.headers["Docker-Content-Digest"] == amd64.digest
