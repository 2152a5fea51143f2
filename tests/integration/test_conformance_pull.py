"""The OCI distribution-spec conformance suite's pull workflow, against the cache.

A faithful port of ``conformance/01_base_api_route_test.go`` and
``conformance/01_pull_test.go`` (opencontainers/distribution-spec, ginkgo v2
version), run on read-only content: the setup pushes the suite's content to the
*upstream*, and every check runs against the cache in front of it. The Go suite
itself cannot be built here (its modules are not reachable), so each ``Specify``
is one assertion block below, in the same order and with the same expectations.
The teardown's DELETEs must answer 2xx, 404 or 405 (read-only: 405).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import urllib3

from tests.harness.cache import CacheServer
from tests.harness.images import Blob, dump_json, sha256_digest
from tests.harness.push import RegistrySession
from tests.harness.registry import UpstreamRegistry

NAMESPACE = "conformance/test"
TAG = "tagtest0"
NONEXISTENT_MANIFEST = ".INVALID_MANIFEST_NAME"  # the suite's own "nonexistent" reference
DUMMY_DIGEST = "sha256:" + "f" * 64
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ERROR_CODES = {
    "BLOB_UNKNOWN", "BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN", "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN", "MANIFEST_INVALID", "MANIFEST_UNKNOWN", "NAME_INVALID",
    "NAME_UNKNOWN", "SIZE_INVALID", "UNAUTHORIZED", "DENIED", "UNSUPPORTED", "TOOMANYREQUESTS",
}  # fmt: skip

http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=30))


@dataclass
class Content:
    configs: list[Blob]
    layer: Blob
    manifests: list[Blob]


def suite_content() -> Content:
    """Two configs, one layer, two manifests, as the suite's setup.go generates them."""
    layer = Blob.from_bytes("application/vnd.oci.image.layer.v1.tar", b"\x00" * 1024)
    configs, manifests = [], []
    for i in range(2):
        config = Blob.from_bytes(
            "application/vnd.oci.image.config.v1+json",
            dump_json(
                {
                    "architecture": "amd64",
                    "os": "linux",
                    "author": f"conformance-{i}",
                    "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
                }
            ),
        )
        configs.append(config)
        manifests.append(
            Blob.from_bytes(
                OCI_MANIFEST,
                dump_json(
                    {
                        "schemaVersion": 2,
                        "mediaType": OCI_MANIFEST,
                        "config": config.descriptor(),
                        "layers": [layer.descriptor()],
                    }
                ),
            )
        )
    return Content(configs, layer, manifests)


@pytest.fixture
def suite(
    upstream: UpstreamRegistry, make_cache: Callable[..., CacheServer]
) -> tuple[CacheServer, Content]:
    content = suite_content()
    session = RegistrySession(upstream.url)
    for blob in [*content.configs, content.layer]:
        session.upload_blob(NAMESPACE, blob)
    session.put_manifest(NAMESPACE, TAG, content.manifests[0])
    session.put_manifest(NAMESPACE, content.manifests[1].digest, content.manifests[1])
    cache = make_cache("--upstream", f"docker.io={upstream.url}")
    return cache, content


def request(cache: CacheServer, method: str, path: str, **headers: str) -> urllib3.BaseHTTPResponse:
    return http.request(method, cache.url + path.replace("<name>", NAMESPACE), headers=headers)


def test_conformance_pull_workflow(suite: tuple[CacheServer, Content]) -> None:
    cache, content = suite
    configs, layer, manifests = content.configs, content.layer, content.manifests
    assert sha256_digest(manifests[0].read()) == manifests[0].digest

    # Base API route
    assert request(cache, "GET", "/v2/").status == 200

    # Pull blobs
    assert request(cache, "HEAD", f"/v2/<name>/blobs/{DUMMY_DIGEST}").status == 404
    head = request(cache, "HEAD", f"/v2/<name>/blobs/{configs[0].digest}")
    assert head.status == 200
    assert head.headers.get("Docker-Content-Digest", configs[0].digest) == configs[0].digest
    assert request(cache, "GET", f"/v2/<name>/blobs/{DUMMY_DIGEST}").status == 404
    blob = request(cache, "GET", f"/v2/<name>/blobs/{configs[0].digest}")
    assert blob.status == 200 and blob.data == configs[0].read()

    # Pull manifests
    assert request(cache, "HEAD", f"/v2/<name>/manifests/{NONEXISTENT_MANIFEST}").status == 404
    for manifest in manifests:
        head = request(
            cache, "HEAD", f"/v2/<name>/manifests/{manifest.digest}", Accept=OCI_MANIFEST
        )
        assert head.status == 200
        assert head.headers.get("Docker-Content-Digest", manifest.digest) == manifest.digest
    head = request(cache, "HEAD", f"/v2/<name>/manifests/{TAG}", Accept=OCI_MANIFEST)
    assert head.status == 200
    assert head.headers.get("Docker-Content-Digest", manifests[0].digest) == manifests[0].digest
    assert request(cache, "GET", f"/v2/<name>/manifests/{NONEXISTENT_MANIFEST}").status == 404
    for manifest in manifests:
        got = request(cache, "GET", f"/v2/<name>/manifests/{manifest.digest}", Accept=OCI_MANIFEST)
        assert got.status == 200 and got.data == manifest.read()
    got = request(cache, "GET", f"/v2/<name>/manifests/{TAG}", Accept=OCI_MANIFEST)
    assert got.status == 200 and got.data == manifests[0].read()

    # Error codes (the v2 suite sends GET, the v1 suite PUT; both must be 400 or 404)
    for method in ("GET", "PUT"):
        bad = request(
            cache,
            method,
            "/v2/<name>/manifests/sha256:totallywrong",
            **{"Content-Type": OCI_MANIFEST},
        )
        assert bad.status in (400, 404)
        if bad.status == 400:
            errors = json.loads(bad.data)["errors"]
            assert errors and errors[0]["code"] in ERROR_CODES

    # Teardown: a read-only registry answers 405 to every DELETE
    for digest in (manifests[0].digest, manifests[1].digest):
        status = request(cache, "DELETE", f"/v2/<name>/manifests/{digest}").status
        assert 200 <= status < 300 or status == 405
    for digest in (configs[0].digest, configs[1].digest, layer.digest):
        status = request(cache, "DELETE", f"/v2/<name>/blobs/{digest}").status
        assert 200 <= status < 300 or status in (404, 405)
