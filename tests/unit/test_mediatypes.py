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
    c, l1, l2, m1, m2 = (f"sha256:{ch * 64}" for ch in "c12ef")
    manifest = {"config": {"digest": c}, "layers": [{"digest": l1}, {"digest": l2}]}
    assert referenced_digests(json.dumps(manifest).encode()) == ([c, l1, l2], [])
    index = {"manifests": [{"digest": m1}, {"digest": m2}]}
    assert referenced_digests(json.dumps(index).encode()) == ([], [m1, m2])
    assert referenced_digests(b"not json") == ([], [])


def test_referenced_digests_skip_what_is_not_a_digest() -> None:
    """Upstream's index names children and layers; only valid digests get used."""
    good = "sha256:" + "a" * 64
    bad = ["../../../etc/passwd", "sha256:../../x", "sha256:" + "A" * 64, "md5:abc", "", "latest"]
    index = {"manifests": [{"digest": d} for d in [*bad, good]]}
    assert referenced_digests(json.dumps(index).encode()) == ([], [good])
    manifest = {
        "config": {"digest": "sha256:../config"},
        "layers": [{"digest": d} for d in [good, *bad]],
        "fsLayers": [{"blobSum": "sha256:/etc"}],
    }
    assert referenced_digests(json.dumps(manifest).encode()) == ([good], [])
