"""Accept negotiation and manifest inspection."""

from __future__ import annotations

import json

from registry_cache.mediatypes import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    accepts,
    manifest_media_type,
    parse_accept,
    referenced_digests,
)

CONTAINERD = [f"{DOCKER_MANIFEST}, {DOCKER_MANIFEST_LIST}, {OCI_MANIFEST}, {OCI_INDEX}, */*"]


def test_no_accept_means_anything() -> None:
    assert accepts([], OCI_INDEX)


def test_containerd_accepts_everything() -> None:
    for media in (DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_MANIFEST, OCI_INDEX):
        assert accepts(CONTAINERD, media)


def test_repeated_headers_and_q_values() -> None:
    values = [DOCKER_MANIFEST, f"{OCI_INDEX};q=0.5", f"{OCI_MANIFEST}; q=0"]
    assert accepts(values, DOCKER_MANIFEST)
    assert accepts(values, OCI_INDEX)
    assert not accepts(values, OCI_MANIFEST)
    assert not accepts(values, DOCKER_MANIFEST_LIST)


def test_wildcards_and_case() -> None:
    assert accepts(["application/*"], OCI_MANIFEST)
    assert accepts([OCI_MANIFEST.upper()], OCI_MANIFEST)
    assert not accepts(["text/*"], OCI_MANIFEST)


def test_parse_accept_tolerates_garbage() -> None:
    assert parse_accept(["a/b;q=x, , c/d"]) == [("a/b", 0.0), ("c/d", 1.0)]


def test_media_type_from_header_or_body() -> None:
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}).encode()
    assert manifest_media_type(body, f"{DOCKER_MANIFEST}; charset=utf-8") == DOCKER_MANIFEST
    assert manifest_media_type(body, "application/json") == OCI_INDEX
    no_field = json.dumps({"schemaVersion": 2, "layers": []}).encode()
    assert manifest_media_type(no_field, None) == OCI_MANIFEST


def test_referenced_digests() -> None:
    manifest = {
        "config": {"digest": "sha256:c"},
        "layers": [{"digest": "sha256:l1"}, {"digest": "sha256:l2"}],
    }
    assert referenced_digests(json.dumps(manifest).encode()) == (
        ["sha256:c", "sha256:l1", "sha256:l2"],
        [],
    )
    index = {"manifests": [{"digest": "sha256:m1"}, {"digest": "sha256:m2"}]}
    assert referenced_digests(json.dumps(index).encode()) == ([], ["sha256:m1", "sha256:m2"])
    assert referenced_digests(b"not json") == ([], [])
