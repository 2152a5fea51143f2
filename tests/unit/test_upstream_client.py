"""The upstream client against small scripted HTTP servers on 127.0.0.1 (no registry)."""

from __future__ import annotations

import time

import pytest
import urllib3
from pydantic import SecretStr

from registry_cache.config import UpstreamConfig
from registry_cache.errors import (
    BadGateway,
    BlobUnknown,
    ManifestUnknown,
    NameUnknown,
    TooManyRequests,
    Unavailable,
)
from registry_cache.upstream.client import QUICK, RetryPolicy, UpstreamClient
from tests.harness.scripted import Answer, Scripted, client_for

FAST = RetryPolicy(attempts=3, backoff=0.01)
DIGEST = "sha256:" + "a" * 64


def test_redirect_drops_authorization_across_hosts(server: Scripted) -> None:
    storage = Scripted()
    try:
        storage.script["/signed"] = [Answer(200, body=b"blob-bytes")]
        server.script["/v2/library/x/blobs/"] = [
            lambda seen: (
                Answer(401, {"WWW-Authenticate": 'Basic realm="r"'})
                if "Authorization" not in seen.headers
                else Answer(307, {"Location": f"{storage.url}/signed?sig=abc"})
            )
        ]
        client = client_for(server.url, username="u", password="p")
        stream = client.open_blob("library/x", DIGEST)
        buffer = memoryview(bytearray(64))
        assert bytes(buffer[: stream.readinto(buffer)]) == b"blob-bytes"
        stream.close()
        assert server.seen[-1].headers["Authorization"].startswith("Basic ")
        assert "Authorization" not in storage.seen[0].headers
        assert storage.seen[0].path == "/signed?sig=abc"
        # The Location is not cached: the next fetch asks the registry again.
        client.open_blob("library/x", DIGEST).close()
        assert server.count("/v2/library/x/blobs/") == 3  # 401, then 307, then 307
    finally:
        storage.close()


def test_bearer_token_flow_and_reuse(server: Scripted) -> None:
    challenge = f'Bearer realm="{server.url}/token",service="reg"'
    server.script["/token"] = [Answer(200, body=b'{"token":"tok","expires_in":300}')]
    server.script["/v2/library/x/manifests/"] = [
        lambda seen: (
            Answer(200, {"Content-Type": "application/json"}, b"{}")
            if seen.headers.get("Authorization") == "Bearer tok"
            else Answer(401, {"WWW-Authenticate": challenge})
        )
    ]
    client = client_for(server.url)
    client.get_manifest("library/x", "1")
    client.get_manifest("library/x", "2")
    assert server.count("/token") == 1
    assert "scope=repository%3Alibrary%2Fx%3Apull" in next(
        s.path for s in server.seen if s.path.startswith("/token")
    )
    assert server.count("/v2/library/x/manifests/") == 3  # one 401, then two with the token


def test_5xx_burst_is_retried(server: Scripted) -> None:
    server.script["/v2/library/x/manifests/"] = [
        Answer(503),
        Answer(502),
        Answer(200, {"Content-Type": "application/json"}, b"{}"),
    ]
    assert client_for(server.url).get_manifest("library/x", "1", FAST).body == b"{}"
    assert server.count("/v2/library/x/manifests/") == 3


def test_5xx_forever_is_a_bad_gateway(server: Scripted) -> None:
    server.script["/v2/library/x/manifests/"] = [Answer(500)]
    with pytest.raises(BadGateway):
        client_for(server.url).get_manifest("library/x", "1", FAST)
    assert server.count("/v2/library/x/manifests/") == 3


def test_429_retry_after_is_honoured(server: Scripted) -> None:
    server.script["/v2/library/x/manifests/"] = [
        Answer(429, {"Retry-After": "1"}),
        Answer(200, {"Content-Type": "application/json"}, b"{}"),
    ]
    started = time.monotonic()
    client_for(server.url).get_manifest("library/x", "1", FAST)
    assert time.monotonic() - started >= 0.95


def test_429_with_long_retry_after_is_passed_on(server: Scripted) -> None:
    server.script["/v2/library/x/manifests/"] = [Answer(429, {"Retry-After": "3600"})]
    started = time.monotonic()
    with pytest.raises(TooManyRequests) as info:
        client_for(server.url).get_manifest("library/x", "1", FAST)
    assert time.monotonic() - started < 1
    assert info.value.headers() == {"Retry-After": "3600"}


def test_quick_policy_does_not_retry(server: Scripted) -> None:
    server.script["/v2/library/x/manifests/"] = [Answer(503)]
    with pytest.raises(BadGateway):
        client_for(server.url).head_manifest("library/x", "1", QUICK)
    assert server.count("/v2/library/x/manifests/") == 1


def test_digest_reference_written_with_at_in_errors(server: Scripted) -> None:
    server.script["/v2/library/x/manifests/"] = [
        Answer(404, body=b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')
    ]
    with pytest.raises(ManifestUnknown) as info:
        client_for(server.url).get_manifest("library/x", DIGEST, FAST)
    assert f"library/x@{DIGEST}" in str(info.value)
    with pytest.raises(ManifestUnknown) as info:
        client_for(server.url).get_manifest("library/x", "1.0", FAST)
    assert "library/x:1.0" in str(info.value)


def test_not_found_mapping(server: Scripted) -> None:
    client = client_for(server.url)
    server.script["/v2/library/x/manifests/"] = [
        Answer(404, body=b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')
    ]
    with pytest.raises(ManifestUnknown):
        client.get_manifest("library/x", "1", FAST)
    server.script["/v2/library/x/blobs/"] = [Answer(404)]
    with pytest.raises(BlobUnknown):
        client.head_blob("library/x", DIGEST, FAST)
    server.script["/v2/library/gone/manifests/"] = [
        Answer(404, body=b'{"errors":[{"code":"NAME_UNKNOWN"}]}')
    ]
    with pytest.raises(NameUnknown):
        client.get_manifest("library/gone", "1", FAST)
    # Docker Hub answers 401 for a repository that does not exist.
    server.script["/v2/library/private/manifests/"] = [Answer(401)]
    with pytest.raises(NameUnknown):
        client.get_manifest("library/private", "1", FAST)


def test_refused_connection_is_unavailable_without_credentials() -> None:
    client = client_for("http://127.0.0.1:9", username="u", password="hunter2-secret")
    with pytest.raises(Unavailable) as info:
        client.get_manifest("library/x", "1", FAST)
    assert "hunter2" not in str(info.value) and "connection refused" in str(info.value)


def test_range_resume_reads_content_range(server: Scripted) -> None:
    server.script["/v2/library/x/blobs/"] = [
        lambda seen: (
            Answer(206, {"Content-Range": "bytes 4-9/10"}, b"456789")
            if seen.headers.get("Range") == "bytes=4-"
            else Answer(200, body=b"0123456789")
        )
    ]
    stream = client_for(server.url).open_blob("library/x", DIGEST, offset=4)
    assert (stream.start, stream.size) == (4, 10)
    stream.close()


def test_ratelimit_header_is_surfaced(server: Scripted) -> None:
    seen: list[tuple[str, str]] = []
    server.script["/v2/library/x/manifests/"] = [
        Answer(200, {"ratelimit-remaining": "97;w=21600", "Docker-Content-Digest": DIGEST}, b"")
    ]
    config = UpstreamConfig(name="docker.io", url=server.url, password=SecretStr("x"))
    client = UpstreamClient(
        config, urllib3.PoolManager(), on_ratelimit=lambda u, r: seen.append((u, r))
    )
    head = client.head_manifest("library/x", "1")
    assert head.digest == DIGEST
    assert seen == [("docker.io", "97;w=21600")] and client.ratelimit_remaining == "97;w=21600"


def test_an_invalid_digest_on_head_is_a_bad_gateway(server: Scripted) -> None:
    """The digest a HEAD announces becomes a path and a URL next: it must parse."""
    server.script["/v2/library/x/manifests/"] = [
        Answer(200, {"Docker-Content-Digest": "sha256:../../../etc/passwd"}, b"")
    ]
    with pytest.raises(BadGateway, match="invalid Docker-Content-Digest for library/x:1"):
        client_for(server.url).head_manifest("library/x", "1", FAST)


def test_a_range_from_the_very_end_is_an_empty_stream(server: Scripted) -> None:
    """A crash can leave a partial holding every byte: its resume asks from the end."""
    server.script["/v2/library/x/blobs/"] = [
        lambda seen: (
            Answer(416, {"Content-Range": "bytes */10"})
            if seen.headers.get("Range") == "bytes=10-"
            else Answer(416, {"Content-Range": "bytes */20"})
        )
    ]
    upstream = client_for(server.url)
    stream = upstream.open_blob("library/x", DIGEST, offset=10)
    assert (stream.start, stream.size) == (10, 10)
    assert stream.readinto(memoryview(bytearray(8))) == 0
    stream.close()
    with pytest.raises(BadGateway, match="refused the range from 12"):
        upstream.open_blob("library/x", DIGEST, offset=12)


def test_a_400_with_an_oci_code_is_a_bad_gateway(server: Scripted) -> None:
    """The cache checked what it forwards: an upstream's 400 is nothing a client can mend."""
    server.script["/v2/library/x/manifests/"] = [
        Answer(400, body=b'{"errors":[{"code":"TAG_INVALID","message":"no"}]}')
    ]
    with pytest.raises(BadGateway) as info:
        client_for(server.url).get_manifest("library/x", "1", FAST)
    assert info.value.status == 502 and info.value.code == "UNAVAILABLE"
    assert (
        info.value.message
        == "upstream docker.io rejected the request for library/x:1 (TAG_INVALID)"
    )
    assert server.count("/v2/library/x/manifests/") == 1  # it would come again: not retried


def test_an_upstream_error_code_is_quoted_only_when_it_looks_like_one(server: Scripted) -> None:
    server.script["/v2/library/x/blobs/"] = [
        Answer(400, body=b'{"errors":[{"code":"<b>' + b"x" * 500 + b'</b>"}]}')
    ]
    with pytest.raises(BadGateway) as info:
        client_for(server.url).open_blob("library/x", DIGEST)
    assert info.value.message == f"upstream docker.io answered HTTP 400 for library/x@{DIGEST}"
