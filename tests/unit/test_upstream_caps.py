"""Every upstream body the client holds in memory is capped, and read with a bounded read.

An endless body (chunked, no Content-Length) must end in a prompt 502 rather than a
client that reads until memory runs out; a body announced too large is refused before
a byte of it is read; an error answer's body is read only as far as its error code.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import pytest

from registry_cache.errors import BadGateway, ManifestUnknown
from registry_cache.upstream.client import RetryPolicy, UpstreamClient
from tests.harness import scripted
from tests.harness.scripted import Answer, Scripted

ONCE = RetryPolicy(attempts=1)
MiB = 1 << 20
OCI_MANIFEST = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
DIGEST = "sha256:" + "a" * 64


class Endless:
    """Chunks of 64 KiB for as long as the client reads (bounded at 1 GiB as a backstop)."""

    def __init__(self, prefix: bytes = b"") -> None:
        self.sent = 0
        self.prefix = prefix

    def __iter__(self) -> Iterator[bytes]:
        yield self.prefix
        for _ in itertools.repeat(None, (1 << 30) // (64 << 10)):
            self.sent += 64 << 10
            yield b" " * (64 << 10)


def client_for(url: str, **extra: object) -> UpstreamClient:
    return scripted.client_for(url, name="reg.test", **extra)


def test_a_manifest_announced_over_4_mib_is_refused_unread(server: Scripted) -> None:
    server.script["/v2/library/x/manifests/"] = [Answer(200, OCI_MANIFEST, b"{" + b" " * (4 * MiB))]
    with pytest.raises(BadGateway) as info:
        client_for(server.url).get_manifest("library/x", "1", ONCE)
    assert str(info.value) == (
        "upstream reg.test sent a manifest for library/x:1 larger than 4.0 MiB"
    )
    assert info.value.status == 502


def test_an_endless_manifest_is_cut_at_the_cap(server: Scripted) -> None:
    body = Endless(b"{")
    server.script["/v2/library/x/manifests/"] = [Answer(200, OCI_MANIFEST, stream=iter(body))]
    started = time.monotonic()
    with pytest.raises(BadGateway, match=r"sent a manifest for library/x@sha256:a+ larger"):
        client_for(server.url).get_manifest("library/x", DIGEST, ONCE)
    assert time.monotonic() - started < 10
    assert body.sent < 64 * MiB  # the server was stopped by a dropped connection


def test_a_manifest_of_exactly_the_cap_is_read(server: Scripted) -> None:
    exact = b"{" + b" " * (4 * MiB - 2) + b"}"
    server.script["/v2/library/x/manifests/"] = [Answer(200, OCI_MANIFEST, exact, chunked=True)]
    assert client_for(server.url).get_manifest("library/x", "1", ONCE).body == exact


def test_the_tag_list_cap_is_configurable(server: Scripted) -> None:
    tags = b'{"name":"library/x","tags":[' + b",".join(b'"tag-%d"' % i for i in range(500)) + b"]}"
    assert 4000 < len(tags) < 8000
    server.script["/v2/library/x/tags/list"] = [Answer(200, {}, tags, chunked=True)]
    with pytest.raises(BadGateway, match=r"sent a tags list for library/x larger than 4\.0 KiB"):
        client_for(server.url, tag_list_max_bytes="4KiB").tags("library/x")
    names, more = client_for(server.url, tag_list_max_bytes="8KiB").tags("library/x")
    assert len(names) == 500 and not more


def test_endless_referrers_and_tag_lists_are_cut(server: Scripted) -> None:
    server.script["/v2/library/x/referrers/"] = [
        Answer(200, {"Content-Type": "application/json"}, stream=iter(Endless(b"{")))
    ]
    server.script["/v2/library/x/tags/list"] = [Answer(200, {}, stream=iter(Endless(b"{")))]
    upstream = client_for(server.url)
    with pytest.raises(BadGateway, match=r"sent a referrers index for library/x@sha256"):
        upstream.referrers("library/x", DIGEST)
    with pytest.raises(BadGateway, match=r"sent a tags list for library/x larger than 4\.0 MiB"):
        upstream.tags("library/x")


def test_an_endless_token_answer_is_cut(server: Scripted) -> None:
    challenge = f'Bearer realm="{server.url}/token",service="reg"'
    server.script["/v2/"] = [Answer(401, {"WWW-Authenticate": challenge})]
    server.script["/token"] = [Answer(200, {}, stream=iter(Endless(b'{"token": "')))]
    with pytest.raises(BadGateway, match=r"sent a token response larger than 1\.0 MiB"):
        client_for(server.url).get_manifest("library/x", "1", ONCE)


def test_an_endless_error_body_is_not_read(server: Scripted) -> None:
    body = Endless(b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"' + b"x" * 100)
    server.script["/v2/library/x/manifests/"] = [Answer(404, {}, stream=iter(body))]
    started = time.monotonic()
    with pytest.raises(ManifestUnknown):
        client_for(server.url).get_manifest("library/x", "1", ONCE)
    assert time.monotonic() - started < 10 and body.sent < 64 * MiB
