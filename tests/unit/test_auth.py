"""WWW-Authenticate parsing and the per-scope token cache (protocol.md §2)."""

from __future__ import annotations

import json

import pytest
from pydantic import SecretStr

from registry_cache.upstream.auth import Authenticator, TokenError, parse_challenges


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


CHALLENGE = 'Bearer realm="https://auth.example/token",service="reg"'


def test_token_fetched_once_per_scope_and_reused() -> None:
    server = FakeTokenServer()
    now = [1000.0]
    auth = Authenticator(None, None, server, clock=lambda: now[0])
    assert auth.header_for("repository:a:pull") is None  # nothing known before a challenge
    assert auth.answer(CHALLENGE, "repository:a:pull") == "Bearer t1"
    assert server.calls[0][0] == (
        "https://auth.example/token?service=reg&scope=repository%3Aa%3Apull"
    )
    assert "Authorization" not in server.calls[0][1]  # anonymous
    assert auth.header_for("repository:a:pull") == "Bearer t1"
    assert auth.header_for("repository:b:pull") == "Bearer t2"  # proactive, realm known
    assert len(server.calls) == 2
    now[0] += 300  # expired (minus margin)
    assert auth.header_for("repository:a:pull") == "Bearer t3"


def test_credentials_sent_as_basic_to_the_token_endpoint() -> None:
    server = FakeTokenServer()
    auth = Authenticator("alice", SecretStr("s3cret"), server)
    auth.answer(CHALLENGE, "repository:a:pull")
    assert server.calls[0][1]["Authorization"] == "Basic YWxpY2U6czNjcmV0"


def test_basic_challenge_means_basic_on_every_request() -> None:
    auth = Authenticator("alice", SecretStr("s3cret"), FakeTokenServer())
    assert auth.answer('Basic realm="x"', "repository:a:pull") == "Basic YWxpY2U6czNjcmV0"
    assert auth.header_for("repository:other:pull") == "Basic YWxpY2U6czNjcmV0"


def test_basic_challenge_without_credentials_gives_nothing() -> None:
    auth = Authenticator(None, None, FakeTokenServer())
    assert auth.answer('Basic realm="x"', "s") is None


def test_token_endpoint_failure_is_credential_free() -> None:
    server = FakeTokenServer()
    server.status = 401
    auth = Authenticator("alice", SecretStr("s3cret"), server)
    with pytest.raises(TokenError) as info:
        auth.answer(CHALLENGE, "repository:a:pull")
    assert "s3cret" not in str(info.value) and "401" in str(info.value)


def test_access_token_field_and_default_lifetime() -> None:
    def fetch(url: str, headers: dict[str, str]) -> tuple[int, bytes]:
        return 200, b'{"access_token": "xyz"}'

    now = [0.0]
    auth = Authenticator(None, None, fetch, clock=lambda: now[0])
    assert auth.answer(CHALLENGE, "s") == "Bearer xyz"
    now[0] = 49.0
    assert auth.cached_header("s") == "Bearer xyz"
    now[0] = 51.0  # default 60 s lifetime minus 10 s margin
    assert auth.cached_header("s") is None
