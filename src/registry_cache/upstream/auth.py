"""Upstream authentication: ``WWW-Authenticate`` parsing and a per-scope token cache.

Thread-safe: the upstream client runs in worker threads (see client.py for why).
Credentials are held as ``SecretStr`` and never formatted into messages.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode

from pydantic import SecretStr

# Spend a token only while it has this much life left (clock skew, slow requests).
TOKEN_EXPIRY_MARGIN = 10.0
DEFAULT_TOKEN_LIFETIME = 60.0


@dataclass(frozen=True, slots=True)
class Challenge:
    scheme: str  # lower case: "bearer" or "basic"
    params: dict[str, str] = field(default_factory=dict)

    @property
    def scopes(self) -> list[str]:
        # Several scopes are space-separated inside one quoted value.
        return self.params.get("scope", "").split()


def parse_challenges(header: str) -> list[Challenge]:
    """Parse ``WWW-Authenticate`` (RFC 9110 §11.6.1) into challenges.

    Handles quoted values holding commas, colons and escaped quotes
    (``scope="repository:a/b:pull,push"``) and several challenges in one header.
    """
    challenges: list[Challenge] = []
    pos, n = 0, len(header)
    current: Challenge | None = None
    while pos < n:
        while pos < n and header[pos] in " \t,":
            pos += 1
        if pos >= n:
            break
        start = pos
        while pos < n and header[pos] not in " \t,=":
            pos += 1
        token = header[start:pos]
        look = pos
        while look < n and header[look] in " \t":
            look += 1
        if look < n and header[look] == "=" and current is not None:
            pos = look + 1
            while pos < n and header[pos] in " \t":
                pos += 1
            value, pos = _read_value(header, pos)
            current.params[token.lower()] = value
        else:
            current = Challenge(scheme=token.lower())
            challenges.append(current)
            pos = look
    return challenges


def _read_value(header: str, pos: int) -> tuple[str, int]:
    n = len(header)
    if pos < n and header[pos] == '"':
        pos += 1
        out: list[str] = []
        while pos < n and header[pos] != '"':
            if header[pos] == "\\" and pos + 1 < n:
                pos += 1
            out.append(header[pos])
            pos += 1
        return "".join(out), pos + 1
    start = pos
    while pos < n and header[pos] not in ",":
        pos += 1
    return header[start:pos].strip(), pos


def basic_header(username: str, password: SecretStr) -> str:
    raw = f"{username}:{password.get_secret_value()}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


@dataclass(slots=True)
class _Token:
    value: str
    expires_at: float


class TokenError(Exception):
    """The token endpoint refused us or answered nonsense (message is credential-free)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


# fetch(url, headers) -> (status, body); injected so the cache reuses its HTTP pool.
TokenFetch = Callable[[str, dict[str, str]], tuple[int, bytes]]


class Authenticator:
    """Decides the ``Authorization`` header for one upstream and one scope."""

    def __init__(
        self,
        username: str | None,
        password: SecretStr | None,
        fetch: TokenFetch,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._basic = basic_header(username, password) if username and password else None
        self._fetch = fetch
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[str, _Token] = {}
        self._bearer: Challenge | None = None  # realm/service, learned from the first 401
        self._basic_required = False

    def header_for(self, scope: str) -> str | None:
        """The header to send before knowing whether upstream will challenge."""
        if self._basic_required:
            return self._basic
        if self._bearer is not None:
            return self._bearer_header(self._bearer, scope)
        return None

    def cached_header(self, scope: str) -> str | None:
        with self._lock:
            token = self._tokens.get(scope)
            if token and token.expires_at - TOKEN_EXPIRY_MARGIN > self._clock():
                return f"Bearer {token.value}"
        return None

    def answer(self, header: str, scope: str) -> str | None:
        """Answer a 401's challenge; None when there is nothing (more) we can send."""
        for challenge in parse_challenges(header):
            if challenge.scheme == "bearer" and "realm" in challenge.params:
                self._bearer = challenge
                with self._lock:
                    self._tokens.pop(scope, None)
                return self._bearer_header(challenge, scope)
            if challenge.scheme == "basic":
                self._basic_required = True
                return self._basic
        return None

    def _bearer_header(self, challenge: Challenge, scope: str) -> str:
        cached = self.cached_header(scope)
        if cached:
            return cached
        params = [("service", challenge.params["service"])] if "service" in challenge.params else []
        params += [("scope", s) for s in scope.split()]
        realm = challenge.params["realm"]
        url = realm + ("&" if "?" in realm else "?") + urlencode(params)
        headers = {"Authorization": self._basic} if self._basic else {}
        status, body = self._fetch(url, headers)
        if status != 200:
            raise TokenError(f"token endpoint answered HTTP {status}", status)
        try:
            doc = json.loads(body)
            value = doc.get("token") or doc.get("access_token")
            lifetime = float(doc.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
        except (ValueError, AttributeError, TypeError):
            raise TokenError("token endpoint answered invalid JSON") from None
        if not isinstance(value, str) or not value:
            raise TokenError("token endpoint answered without a token")
        with self._lock:
            self._tokens[scope] = _Token(value, self._clock() + lifetime)
        return f"Bearer {value}"
