"""The shared tier's settings, key layout and part sizes (pure; no bucket)."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry_cache.bucket.location import BucketLocation
from registry_cache.bucket.store import MAX_PARTS, MIN_PART, part_size
from registry_cache.config import build_settings
from registry_cache.digest import Digest
from registry_cache.errors import ConfigError
from registry_cache.logs import secrets_of

HEX = "ab" + "0" * 62


def test_storage_settings_come_from_the_documented_environment() -> None:
    s = build_settings(
        environ={
            "REGISTRY_CACHE_STORAGE": "s3://registry-cache/blobs/",
            "REGISTRY_CACHE_S3_ENDPOINT": "http://seaweedfs:8333/",
            "REGISTRY_CACHE_S3_REGION": "eu-west-3",
            "REGISTRY_CACHE_SHARED_MAX_SIZE": "200GiB",
            "REGISTRY_CACHE_REDIRECT_HITS": "true",
            "REGISTRY_CACHE_S3_CA_FILE": "/etc/ca.pem",
        },
        dotenv=None,
    )
    assert s.storage == "s3://registry-cache/blobs"
    assert s.bucket == BucketLocation("registry-cache", "blobs")
    assert s.s3_endpoint == "http://seaweedfs:8333"
    assert (s.s3_region, s.shared_max_size, s.redirect_hits) == ("eu-west-3", 200 << 30, True)
    assert s.s3_ca_file == Path("/etc/ca.pem")
    assert s.path_style  # an endpoint: path-style unless told otherwise


def test_region_falls_back_to_the_aws_variables_and_config_beats_them(tmp_path: Path) -> None:
    env = {"REGISTRY_CACHE_STORAGE": "s3://b-1", "AWS_DEFAULT_REGION": "us-west-2"}
    assert build_settings(environ=env, dotenv=None).s3_region == "us-west-2"
    env["AWS_REGION"] = "ap-south-1"
    assert build_settings(environ=env, dotenv=None).s3_region == "ap-south-1"
    config = tmp_path / "c.yaml"
    config.write_text("s3_region: eu-north-1\n")
    assert build_settings(config_file=config, environ=env, dotenv=None).s3_region == "eu-north-1"
    aws = build_settings(environ={"REGISTRY_CACHE_STORAGE": "s3://b-1"}, dotenv=None)
    assert aws.s3_region is None and not aws.path_style  # AWS itself: virtual hosts


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("s3://AKIA:secret-key@bucket/x", "credentials in the storage URL"),
        ("gs://bucket", "expected s3://BUCKET/PREFIX"),
        ("s3://a", "invalid bucket name"),
        ("s3://bucket/with space", "invalid key prefix"),
    ],
)
def test_bad_storage_urls_are_one_line_errors_naming_no_secret(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        build_settings(environ={"REGISTRY_CACHE_STORAGE": value}, dotenv=None)
    assert "secret-key" not in str(caught.value)
    assert str(caught.value).startswith("invalid configuration: storage (REGISTRY_CACHE_STORAGE=")


def test_an_endpoint_with_credentials_is_refused() -> None:
    with pytest.raises(ConfigError, match="credentials in the URL") as caught:
        build_settings(
            environ={"REGISTRY_CACHE_S3_ENDPOINT": "https://key:hunter2@s3.example"}, dotenv=None
        )
    assert "hunter2" not in str(caught.value)


def test_the_aws_secret_is_redacted_from_logs_when_a_bucket_is_configured() -> None:
    s = build_settings(environ={"REGISTRY_CACHE_STORAGE": "s3://b-1"}, dotenv=None)
    env = {"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI", "AWS_SESSION_TOKEN": "FwoGZXIvYXdz"}
    assert {"wJalrXUtnFEMI", "FwoGZXIvYXdz"} <= set(secrets_of(s, env))
    plain = build_settings(environ={}, dotenv=None)
    assert "wJalrXUtnFEMI" not in secrets_of(plain, env)


def test_keys_round_trip_and_stray_keys_are_not_digests() -> None:
    where = BucketLocation.parse("s3://bucket/some/prefix")
    digest = Digest.parse(f"sha256:{HEX}")
    assert where.blob(digest) == f"some/prefix/blobs/sha256/ab/{HEX}"
    assert where.digest_of(where.blob(digest)) == digest
    assert where.quarantined(digest) == f"some/prefix/quarantine/sha256-{HEX}"
    for stray in (f"some/prefix/blobs/sha256/cd/{HEX}", "some/prefix/blobs/x", f"other/{HEX}"):
        assert where.digest_of(stray) is None
    bare = BucketLocation.parse("s3://bucket")
    assert bare.blob(digest) == f"blobs/sha256/ab/{HEX}" and bare.url == "s3://bucket"


def test_parts_stay_small_and_few_enough_for_s3() -> None:
    assert part_size(1) == MIN_PART
    assert part_size(MIN_PART * MAX_PARTS) == MIN_PART
    huge = 200 << 30  # 200 GiB: bigger parts, each a whole MiB, at most 10,000 of them
    size = part_size(huge)
    assert size % (1 << 20) == 0 and -(-huge // size) <= MAX_PARTS
