"""WWW-Authenticate parsing and the per-scope token cache (protocol.md §2)."""

from __future__ import annotations

import json
import threading

import pytest
from pydantic import SecretStr

from registry_cache.upstream.auth import (
    Authenticator,
    RealmRefused,
    TokenError,
    parse_challenges,
)
from registry_cache.upstream.origin import CredentialPolicy, registrable_domain


def test_docker_hub_challenge() -> None:
    header = (
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/alpine:pull"'
    )
    (challenge,) = parse_challenges(header)
    assert challenge.scheme == "bearer"
    assert challenge.params == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:library/alpine:pull",
    }


def test_scope_with_commas_and_several_scopes() -> None:
    header = 'Bearer realm="r",scope="repository:a/b:pull,push repository:c:pull",error="x"'
    (challenge,) = parse_challenges(header)
    assert challenge.scopes == ["repository:a/b:pull,push", "repository:c:pull"]
    assert challenge.params["error"] == "x"


def test_several_challenges_and_escapes() -> None:
    header = 'Basic realm="say \\"hi\\"", Bearer realm="https://t", service=reg'
    basic, bearer = parse_challenges(header)
    assert basic.scheme == "basic" and basic.params["realm"] == 'say "hi"'
    assert bearer.params == {"realm": "https://t", "service": "reg"}


def test_case_and_spacing() -> None:
    (challenge,) = parse_challenges('BEARER  Realm = "https://t" , Service="s"')
    assert challenge.scheme == "bearer"
    assert challenge.params == {"realm": "https://t", "service": "s"}


class FakeTokenServer:
    def __init__(self, lifetime: int = 300) -> None:
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.lifetime = lifetime
        self.status = 200

    def __call__(self, url: str, headers: dict[str, str]) -> tuple[int, bytes]:
        self.calls.append((url, headers))
        body = {"token": f"t{len(self.calls)}", "expires_in": self.lifetime}
        return self.status, json.dumps(body).encode()


CHALLENGE = 'Bearer realm="https://auth.example.com/token",service="reg"'
# The realm is on the upstream's own registrable domain: credentials may go there.
POLICY = CredentialPolicy("https://registry.example.com")


def test_token_fetched_once_per_scope_and_reused() -> None:
    server = FakeTokenServer()
    now = [1000.0]
    auth = Authenticator(None, None, server, policy=POLICY, clock=lambda: now[0])
    assert auth.header_for("repository:a:pull") is None  # nothing known before a challenge
    assert auth.answer(CHALLENGE, "repository:a:pull") == "Bearer t1"
    assert server.calls[0][0] == (
        "https://auth.example.com/token?service=reg&scope=repository%3Aa%3Apull"
    )
    assert "Authorization" not in server.calls[0][1]  # anonymous
    assert auth.header_for("repository:a:pull") == "Bearer t1"
    assert auth.header_for("repository:b:pull") == "Bearer t2"  # proactive, realm known
    assert len(server.calls) == 2
    now[0] += 300  # expired (minus margin)
    assert auth.header_for("repository:a:pull") == "Bearer t3"


def test_credentials_sent_as_basic_to_the_token_endpoint() -> None:
    server = FakeTokenServer()
    auth = Authenticator("alice", SecretStr("s3cret"), server, policy=POLICY)
    auth.answer(CHALLENGE, "repository:a:pull")
    assert server.calls[0][1]["Authorization"] == "Basic YWxpY2U6czNjcmV0"


def test_basic_challenge_means_basic_on_every_request() -> None:
    auth = Authenticator("alice", SecretStr("s3cret"), FakeTokenServer(), policy=POLICY)
    assert auth.answer('Basic realm="x"', "repository:a:pull") == "Basic YWxpY2U6czNjcmV0"
    assert auth.header_for("repository:other:pull") == "Basic YWxpY2U6czNjcmV0"


def test_basic_challenge_without_credentials_gives_nothing() -> None:
    auth = Authenticator(None, None, FakeTokenServer(), policy=POLICY)
    assert auth.answer('Basic realm="x"', "s") is None


def test_token_endpoint_failure_is_credential_free() -> None:
    server = FakeTokenServer()
    server.status = 401
    auth = Authenticator("alice", SecretStr("s3cret"), server, policy=POLICY)
    with pytest.raises(TokenError) as info:
        auth.answer(CHALLENGE, "repository:a:pull")
    assert "s3cret" not in str(info.value) and "401" in str(info.value)


def test_access_token_field_and_default_lifetime() -> None:
    def fetch(url: str, headers: dict[str, str]) -> tuple[int, bytes]:
        return 200, b'{"access_token": "xyz"}'

    now = [0.0]
    auth = Authenticator(None, None, fetch, policy=POLICY, clock=lambda: now[0])
    assert auth.answer(CHALLENGE, "s") == "Bearer xyz"
    now[0] = 49.0
    assert auth.cached_header("s") == "Bearer xyz"
    now[0] = 51.0  # default 60 s lifetime minus 10 s margin
    assert auth.cached_header("s") is None


# ------------------------------------------------------------ where credentials go


@pytest.mark.parametrize(
    ("host", "domain"),
    [
        ("registry-1.docker.io", "docker.io"),
        ("auth.docker.io", "docker.io"),
        ("ghcr.io", "ghcr.io"),
        ("quay.io", "quay.io"),
        ("registry.example.co.uk", "example.co.uk"),
        ("a.b.example.com.au", "example.com.au"),
        ("registry.example.de", "example.de"),  # a ccTLD without a generic second level
        ("myreg.azurecr.io", "myreg.azurecr.io"),  # shared hosting: every name its own
        ("123.dkr.ecr.us-east-1.amazonaws.com", "123.dkr.ecr.us-east-1.amazonaws.com"),
        ("127.0.0.1", "127.0.0.1"),
        ("::1", "::1"),
        ("localhost", "localhost"),
        ("Registry.Example.COM.", "example.com"),
    ],
)
def test_registrable_domain(host: str, domain: str) -> None:
    assert registrable_domain(host) == domain


@pytest.mark.parametrize(
    ("upstream", "realm", "listed", "use"),
    [
        # The three public registries' own realms.
        ("https://registry-1.docker.io", "https://auth.docker.io/token", (), "credentials"),
        ("https://ghcr.io", "https://ghcr.io/token", (), "credentials"),
        ("https://quay.io", "https://quay.io/v2/auth", (), "credentials"),
        # Someone else's realm: a token, but asked for anonymously.
        ("https://registry-1.docker.io", "https://auth.evil.example/t", (), "anonymous"),
        ("https://myreg.azurecr.io", "https://other.azurecr.io/oauth2/token", (), "anonymous"),
        # ... unless the configuration lists it (with or without its port).
        ("https://reg.example", "https://sso.corp.example/t", ("sso.corp.example",), "credentials"),
        ("https://reg.example", "https://sso.corp.example:8443/t", ("sso.corp.example:8443",),
         "credentials"),
        ("https://reg.example", "https://sso.corp.example:9000/t", ("sso.corp.example:8443",),
         "anonymous"),
        # Never plain http for an https upstream, listed or not, same host or not.
        ("https://registry-1.docker.io", "http://auth.docker.io/token", (), "refused"),
        ("https://reg.example", "http://reg.example/token", ("reg.example",), "refused"),
        ("https://reg.example", "ftp://reg.example/token", (), "refused"),
        # A plain-http upstream (the test registries): its own host, any port; or listed.
        ("http://127.0.0.1:5000", "http://127.0.0.1:5001/token", (), "credentials"),
        ("http://127.0.0.1:5000", "http://localhost:5001/token", (), "anonymous"),
        ("http://127.0.0.1:5000", "http://localhost:5001/token", ("localhost",), "credentials"),
        ("http://reg.lan.example", "http://auth.lan.example/token", (), "anonymous"),
        ("http://reg.lan.example", "https://auth.lan.example/token", (), "credentials"),
    ],
)  # fmt: skip
def test_realm_rule(upstream: str, realm: str, listed: tuple[str, ...], use: str) -> None:
    assert CredentialPolicy(upstream, listed).realm(realm).use.value == use


def test_authorization_only_to_the_upstreams_own_origin() -> None:
    policy = CredentialPolicy("https://registry.example.com")
    assert policy.same_origin("https://registry.example.com/v2/x")
    assert policy.same_origin("https://REGISTRY.example.com:443/v2/x")
    assert not policy.same_origin("http://registry.example.com/v2/x")  # scheme
    assert not policy.same_origin("https://registry.example.com:8443/v2/x")  # port
    assert not policy.same_origin("https://cdn.example.com/v2/x")  # host
    assert policy.redirect_refusal("https://cdn.example.net/blob?sig=1") is None
    refusal = policy.redirect_refusal("http://registry.example.com/blob?sig=secret")
    assert refusal == "redirected to plain http (host registry.example.com) from https"
    assert CredentialPolicy("http://127.0.0.1:5000").redirect_refusal("http://x/y") is None


def test_credentials_never_go_to_a_foreign_realm() -> None:
    server = FakeTokenServer()
    auth = Authenticator("alice", SecretStr("s3cret"), server, policy=POLICY)
    foreign = 'Bearer realm="https://tokens.elsewhere.example/token",service="reg"'
    assert auth.answer(foreign, "repository:a:pull") == "Bearer t1"
    assert server.calls[0][0].startswith("https://tokens.elsewhere.example/token?")
    assert "Authorization" not in server.calls[0][1]


def test_a_plain_http_realm_for_an_https_upstream_is_refused() -> None:
    server = FakeTokenServer()
    auth = Authenticator("alice", SecretStr("s3cret"), server, policy=POLICY)
    insecure = 'Bearer realm="http://auth.example.com/token?x=secret",service="reg"'
    with pytest.raises(RealmRefused) as info:
        auth.answer(insecure, "repository:a:pull")
    assert str(info.value) == ("named a plain-http token realm (host auth.example.com); refused")
    assert server.calls == []  # not even an anonymous request


def test_listed_realm_gets_the_credentials() -> None:
    server = FakeTokenServer()
    policy = CredentialPolicy("https://registry.example.com", ("sso.corp.example",))
    auth = Authenticator("alice", SecretStr("s3cret"), server, policy=policy)
    auth.answer('Bearer realm="https://sso.corp.example/t"', "repository:a:pull")
    assert server.calls[0][1]["Authorization"] == "Basic YWxpY2U6czNjcmV0"


# ------------------------------------------------------- token cache: LRU and expiry


def test_token_cache_is_bounded_least_recently_used_first() -> None:
    server = FakeTokenServer()
    now = [0.0]
    auth = Authenticator(None, None, server, policy=POLICY, clock=lambda: now[0], max_tokens=3)
    auth.answer(CHALLENGE, "repository:s0:pull")
    for i in range(1, 5):
        auth.header_for(f"repository:s{i}:pull")
    assert len(server.calls) == 5 and auth.cached_tokens == 3
    assert auth.cached_header("repository:s4:pull") == "Bearer t5"
    assert auth.cached_header("repository:s0:pull") is None  # the oldest went first
    auth.header_for("repository:s2:pull")  # used: now the most recent
    auth.header_for("repository:s5:pull")  # evicts s3, the least recently used
    assert auth.cached_header("repository:s2:pull") == "Bearer t3"
    assert auth.cached_header("repository:s3:pull") is None


def test_expired_tokens_are_dropped_before_live_ones() -> None:
    server = FakeTokenServer(lifetime=100)
    now = [0.0]
    auth = Authenticator(None, None, server, policy=POLICY, clock=lambda: now[0], max_tokens=2)
    auth.answer(CHALLENGE, "repository:old:pull")
    now[0] = 50.0
    server.lifetime = 1000
    auth.header_for("repository:a:pull")
    now[0] = 95.0  # "old" is within the 10 s margin: expired
    assert auth.cached_header("repository:old:pull") is None
    auth.header_for("repository:b:pull")
    assert auth.cached_tokens == 2
    assert auth.cached_header("repository:a:pull") == "Bearer t2"  # live ones kept


def test_a_refused_token_is_dropped_but_a_newer_one_is_kept() -> None:
    server = FakeTokenServer()
    auth = Authenticator(None, None, server, policy=POLICY)
    first = auth.answer(CHALLENGE, "repository:a:pull")
    assert auth.answer(CHALLENGE, "repository:a:pull", sent=first) == "Bearer t2"  # re-fetched
    assert auth.answer(CHALLENGE, "repository:a:pull", sent=first) == "Bearer t2"  # not again
    assert auth.answer(CHALLENGE, "repository:a:pull", sent=None) == "Bearer t2"
    assert len(server.calls) == 2


def test_token_fetches_are_single_flight_per_scope() -> None:
    threads = 8
    entered = threading.Barrier(threads + 1)
    calls: list[str] = []
    lock = threading.Lock()

    def fetch(url: str, headers: dict[str, str]) -> tuple[int, bytes]:
        with lock:
            calls.append(url)
        return 200, json.dumps({"token": f"t{len(calls)}", "expires_in": 300}).encode()

    auth = Authenticator(None, None, fetch, policy=POLICY)
    results: list[str | None] = []

    def one() -> None:
        entered.wait(timeout=10)
        results.append(auth.answer(CHALLENGE, "repository:a:pull"))

    workers = [threading.Thread(target=one) for _ in range(threads)]
    for worker in workers:
        worker.start()
    entered.wait(timeout=10)  # all eight answer the same 401 at once
    for worker in workers:
        worker.join(timeout=10)
    assert len(calls) == 1
    assert results == ["Bearer t1"] * threads


def test_a_failed_single_flight_fails_every_waiter_and_the_next_one_retries() -> None:
    server = FakeTokenServer()
    server.status = 503
    auth = Authenticator(None, None, server, policy=POLICY)
    with pytest.raises(TokenError, match=r"token endpoint auth\.example\.com answered HTTP 503"):
        auth.answer(CHALLENGE, "repository:a:pull")
    server.status = 200
    assert auth.header_for("repository:a:pull") == "Bearer t2"
