"""Where the upstream client sends credentials: real HTTP(S) servers and a real token issuer.

The scripted server speaks HTTP and HTTPS on one port (tests/harness/scripted.py), so
``https://127.0.0.1:P`` → ``http://127.0.0.1:P`` is the same-host downgrade a client
comparing only ``host:port`` would fall for; ``seen[].tls`` tells which one arrived.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import urllib3

from registry_cache.config import UpstreamConfig
from registry_cache.errors import BadGateway
from registry_cache.upstream.client import RetryPolicy, UpstreamClient
from tests.harness.certs import TlsFiles, make_tls
from tests.harness.credentials import PULLER, TOKEN_USERS
from tests.harness.scripted import Answer, Scripted, Seen
from tests.harness.token_issuer import TokenIssuer

DIGEST = "sha256:" + "a" * 64
ONCE = RetryPolicy(attempts=1)
BASIC = "Basic " + base64.b64encode(f"{PULLER[0]}:{PULLER[1]}".encode()).decode()
MANIFEST = Answer(200, {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}, b"{}")


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def server(tls: TlsFiles) -> Iterator[Scripted]:
    scripted = Scripted(tls=tls)
    yield scripted
    scripted.close()


@pytest.fixture
def issuer(tmp_path: Path) -> Iterator[TokenIssuer]:
    with TokenIssuer(
        tmp_path / "issuer", users=dict(TOKEN_USERS), anonymous_actions=frozenset({"pull"})
    ) as running:
        yield running


def client(url: str, tls: TlsFiles | None = None, **extra: object) -> UpstreamClient:
    config = UpstreamConfig.model_validate(
        {"name": "reg.test", "url": url, "username": PULLER[0], "password": PULLER[1], **extra}
    )
    pool = urllib3.PoolManager(ca_certs=str(tls.ca_cert)) if tls else urllib3.PoolManager()
    return UpstreamClient(config, pool)


def basic_then(answer: Answer) -> Callable[[Seen], Answer]:
    """Challenge for Basic until it arrives, then ``answer``."""

    def respond(seen: Seen) -> Answer:
        if seen.headers.get("Authorization") != BASIC:
            return Answer(401, {"WWW-Authenticate": 'Basic realm="reg"'})
        return answer

    return respond


def test_https_to_http_redirect_on_the_same_host_is_refused(
    server: Scripted, tls: TlsFiles
) -> None:
    downgrade = Answer(307, {"Location": f"{server.url}/storage/blob?sig=s3cret-signature"})
    server.script["/v2/library/x/blobs/"] = [basic_then(downgrade)]
    server.script["/storage/"] = [Answer(200, body=b"blob")]
    with pytest.raises(BadGateway) as info:
        client(server.https_url, tls).open_blob("library/x", DIGEST)
    assert str(info.value) == (
        "upstream reg.test redirected to plain http (host 127.0.0.1) from https; refused"
    )
    assert server.count("/storage/") == 0  # nothing went out in clear, Authorization least
    assert all(seen.tls for seen in server.seen)


def test_redirect_to_another_scheme_host_or_port_drops_authorization(
    server: Scripted, tls: TlsFiles
) -> None:
    storage = Scripted(tls=tls)
    try:
        storage.script["/signed"] = [Answer(200, body=b"blob-bytes")]
        target = f"{storage.https_url}/signed?sig=abc"  # same host, another port
        server.script["/v2/library/x/blobs/"] = [basic_then(Answer(307, {"Location": target}))]
        stream = client(server.https_url, tls).open_blob("library/x", DIGEST)
        stream.close()
        assert storage.seen[0].tls and "Authorization" not in storage.seen[0].headers
        # An http upstream redirecting to its own host over https: followed, no credential.
        plain = client(server.url, tls)
        server.script["/v2/library/y/blobs/"] = [
            basic_then(Answer(307, {"Location": f"{server.https_url}/up/blob"}))
        ]
        server.script["/up/"] = [Answer(200, body=b"b")]
        plain.open_blob("library/y", DIGEST).close()
        upgraded = next(s for s in server.seen if s.path.startswith("/up/"))
        assert upgraded.tls and "Authorization" not in upgraded.headers
    finally:
        storage.close()


def test_a_plain_http_token_realm_of_an_https_upstream_is_refused(
    server: Scripted, tls: TlsFiles
) -> None:
    challenge = f'Bearer realm="{server.url}/token?account=x",service="reg"'
    server.script["/v2/"] = [Answer(401, {"WWW-Authenticate": challenge})]
    server.script["/token"] = [Answer(200, body=b'{"token":"t"}')]
    with pytest.raises(BadGateway) as info:
        client(server.https_url, tls).get_manifest("library/x", "1", ONCE)
    assert str(info.value) == (
        "upstream reg.test named a plain-http token realm (host 127.0.0.1); refused"
    )
    assert server.count("/token") == 0


def test_a_token_endpoint_redirecting_to_plain_http_is_refused(
    server: Scripted, tls: TlsFiles
) -> None:
    challenge = f'Bearer realm="{server.https_url}/token",service="reg"'
    server.script["/v2/"] = [Answer(401, {"WWW-Authenticate": challenge})]
    server.script["/token"] = [Answer(302, {"Location": f"{server.url}/plain-token?x=1"})]
    server.script["/plain-token"] = [Answer(200, body=b'{"token":"t"}')]
    with pytest.raises(BadGateway, match=r"token endpoint redirected to plain http"):
        client(server.https_url, tls).get_manifest("library/x", "1", ONCE)
    assert server.count("/plain-token") == 0
    token_requests = [s for s in server.seen if s.path.startswith("/token")]
    assert token_requests[0].tls and token_requests[0].headers.get("Authorization") == BASIC


def registry_with_realm(server: Scripted, realm: str) -> None:
    """The registry half of a token flow: any Bearer token gets the manifest."""
    challenge = f'Bearer realm="{realm}",service="test-registry"'
    server.script["/v2/library/x/manifests/"] = [
        lambda seen: (
            MANIFEST
            if seen.headers.get("Authorization", "").startswith("Bearer ")
            else Answer(401, {"WWW-Authenticate": challenge})
        )
    ]


def test_a_foreign_realm_never_receives_the_credentials(
    server: Scripted, issuer: TokenIssuer
) -> None:
    # Upstream 127.0.0.1, realm "localhost": another host (the same process serves it).
    registry_with_realm(server, f"http://localhost:{issuer.port}/token")
    assert client(server.url).get_manifest("library/x", "1", ONCE).body == b"{}"
    assert [r.authorization for r in issuer.requests] == [False]
    assert issuer.requests[0].user is None and issuer.requests[0].status == 200


def test_the_upstreams_own_host_and_listed_realms_receive_them(
    server: Scripted, issuer: TokenIssuer
) -> None:
    registry_with_realm(server, issuer.realm)  # http://127.0.0.1:<other port>/token
    client(server.url).get_manifest("library/x", "1", ONCE)
    assert [(r.user, r.authorization) for r in issuer.requests] == [(PULLER[0], True)]
    issuer.reset_counters()
    registry_with_realm(server, f"http://localhost:{issuer.port}/token")
    client(server.url, token_realms=["localhost"]).get_manifest("library/x", "1", ONCE)
    assert [(r.user, r.authorization) for r in issuer.requests] == [(PULLER[0], True)]


def test_concurrent_requests_for_one_scope_fetch_one_token(
    server: Scripted, issuer: TokenIssuer
) -> None:
    requests = 8
    # Every request is answered 401 only once all eight have arrived without a token.
    unauthenticated = threading.Barrier(requests)
    challenge = f'Bearer realm="{issuer.realm}",service="test-registry"'

    def respond(seen: Seen) -> Answer:
        if seen.headers.get("Authorization", "").startswith("Bearer "):
            return MANIFEST
        unauthenticated.wait(timeout=10)
        return Answer(401, {"WWW-Authenticate": challenge})

    server.script["/v2/library/x/manifests/"] = [respond]
    shared = client(server.url)
    errors: list[BaseException] = []

    def one(tag: int) -> None:
        try:
            shared.get_manifest("library/x", str(tag), ONCE)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert issuer.count("repository:library/x:pull") == 1
    assert len(issuer.requests) == 1
