"""Name, tag and digest grammar (protocol.md §1)."""

from __future__ import annotations

import pytest

from registry_cache.digest import Digest
from registry_cache.errors import DigestInvalid, NameInvalid, TagInvalid
from registry_cache.reference import docker_hub_name, validate_name, validate_tag

HEX64 = "a" * 64


@pytest.mark.parametrize(
    "name",
    ["alpine", "library/alpine", "a/b/c", "my-org/my_img", "a__b", "a--b", "x.y/z", "a0/b1"],
)
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "UPPER", "a//b", "/a", "a/", "a_", "-a", "a..b", "a___b", "a b", "a/../b", "é"],
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(NameInvalid):
        validate_name(name)


def test_name_length_counts_the_registry() -> None:
    name = "a" * 250
    validate_name(name)
    with pytest.raises(NameInvalid):
        validate_name(name, "docker.io")


@pytest.mark.parametrize("tag", ["latest", "1.0", "v1.2.3-rc_1", "_x", "A" * 128])
def test_valid_tags(tag: str) -> None:
    assert validate_tag(tag) == tag


@pytest.mark.parametrize("tag", ["", ".x", "-x", "a" * 129, "a/b", "a:b", "a+b"])
def test_invalid_tags(tag: str) -> None:
    with pytest.raises(TagInvalid):
        validate_tag(tag)


def test_digest_parse_and_format() -> None:
    digest = Digest.parse(f"sha256:{HEX64}")
    assert (digest.algorithm, digest.hex, str(digest)) == ("sha256", HEX64, f"sha256:{HEX64}")
    assert Digest.parse("sha512:" + "b" * 128).algorithm == "sha512"


@pytest.mark.parametrize(
    "text",
    [
        "sha256:" + "A" * 64,  # upper case is not canonical
        "sha256:" + "a" * 63,
        "sha256:" + "g" * 64,
        "sha512:" + "a" * 64,
        "sha256" + "a" * 64,
        "md5:abc",  # unknown algorithm
        ":",
        "",
    ],
)
def test_digest_invalid(text: str) -> None:
    with pytest.raises(DigestInvalid):
        Digest.parse(text)


def test_digest_of_and_matches() -> None:
    digest = Digest.of(b"hello")
    assert str(digest).startswith("sha256:2cf24dba")
    assert digest.matches(b"hello")
    assert not digest.matches(b"hello!")


def test_docker_hub_library_prefix() -> None:
    assert docker_hub_name("nginx") == "library/nginx"
    assert docker_hub_name("bitnami/nginx") == "bitnami/nginx"
