"""Upstream authentication: ``WWW-Authenticate`` parsing and a per-scope token cache.

Thread-safe: the upstream client runs in worker threads (see client.py for why).
Tokens are cached per scope in a bounded LRU until shortly before they expire, and
fetched single-flight: N requests needing the same scope at once cause one token
request. Where username/password may go is origin.py's rule. Credentials are held as
``SecretStr`` and never formatted into messages.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode

from pydantic import SecretStr

from .origin import CredentialPolicy, RealmUse, host_of

# Spend a token only while it has this much life left (clock skew, slow requests).
TOKEN_EXPIRY_MARGIN = 10.0
DEFAULT_TOKEN_LIFETIME = 60.0
# Scopes are per repository: a cache serving many repositories would otherwise keep
# every token it ever fetched.
MAX_TOKENS = 1024


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
    header: str  # "Bearer <token>"
    expires_at: float


class TokenError(Exception):
    """The token endpoint refused us or answered nonsense (message is credential-free)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RealmRefused(TokenError):
    """The challenge named a realm the policy forbids using at all (plain http, say)."""


# fetch(url, headers) -> (status, body); injected so the cache reuses its HTTP pool.
TokenFetch = Callable[[str, dict[str, str]], tuple[int, bytes]]


class TokenCache:
    """Bearer headers per scope: least recently used out first, expired ones never served.

    Not locked: the Authenticator holds its lock around every call.
    """

    def __init__(self, clock: Callable[[], float], maxsize: int = MAX_TOKENS) -> None:
        self._clock = clock
        self._maxsize = maxsize
        self._items: OrderedDict[str, _Token] = OrderedDict()

    def get(self, scope: str) -> str | None:
        token = self._items.get(scope)
        if token is None:
            return None
        if token.expires_at - TOKEN_EXPIRY_MARGIN <= self._clock():
            del self._items[scope]
            return None
        self._items.move_to_end(scope)
        return token.header

    def put(self, scope: str, header: str, lifetime: float) -> None:
        self._items[scope] = _Token(header, self._clock() + lifetime)
        self._items.move_to_end(scope)
        if len(self._items) > self._maxsize:
            now = self._clock()
            for key in [
                k for k, t in self._items.items() if t.expires_at - TOKEN_EXPIRY_MARGIN <= now
            ]:
                del self._items[key]
        while len(self._items) > self._maxsize:
            self._items.popitem(last=False)

    def drop(self, scope: str, header: str) -> None:
        """Forget ``header`` for ``scope`` (upstream refused it); a newer one stays."""
        token = self._items.get(scope)
        if token is not None and token.header == header:
            del self._items[scope]

    def __len__(self) -> int:
        return len(self._items)


@dataclass(slots=True)
class _Flight:
    """One token request in progress; other threads wanting the scope wait for it."""

    done: threading.Event = field(default_factory=threading.Event)
    header: str | None = None
    error: BaseException | None = None


class Authenticator:
    """Decides the ``Authorization`` header for one upstream and one scope."""

    def __init__(
        self,
        username: str | None,
        password: SecretStr | None,
        fetch: TokenFetch,
        *,
        policy: CredentialPolicy,
        clock: Callable[[], float] = time.monotonic,
        max_tokens: int = MAX_TOKENS,
    ) -> None:
        self._basic = basic_header(username, password) if username and password else None
        self._fetch = fetch
        self._policy = policy
        self._lock = threading.Lock()
        self._tokens = TokenCache(clock, max_tokens)
        self._flights: dict[str, _Flight] = {}
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
            return self._tokens.get(scope)

    @property
    def cached_tokens(self) -> int:
        with self._lock:
            return len(self._tokens)

    def answer(self, header: str, scope: str, sent: str | None = None) -> str | None:
        """Answer a 401's challenge; None when there is nothing (more) we can send.

        ``sent`` is the Authorization the refused request carried: that token is
        forgotten, while one another thread fetched meanwhile is used as it is.
        """
        for challenge in parse_challenges(header):
            if challenge.scheme == "bearer" and "realm" in challenge.params:
                self._bearer = challenge
                if sent is not None:
                    with self._lock:
                        self._tokens.drop(scope, sent)
                return self._bearer_header(challenge, scope)
            if challenge.scheme == "basic":
                self._basic_required = True
                return self._basic
        return None

    def _bearer_header(self, challenge: Challenge, scope: str) -> str:
        with self._lock:
            cached = self._tokens.get(scope)
            if cached is not None:
                return cached
            flight = self._flights.get(scope)
            leader = flight is None
            if flight is None:
                flight = self._flights[scope] = _Flight()
        if not leader:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            assert flight.header is not None  # set with done when there was no error
            return flight.header
        try:
            flight.header = self._request_token(challenge, scope)
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                del self._flights[scope]
            flight.done.set()
        return flight.header

    def _request_token(self, challenge: Challenge, scope: str) -> str:
        realm = challenge.params["realm"]
        decision = self._policy.realm(realm)
        if decision.use is RealmUse.REFUSED:
            raise RealmRefused(f"{decision.reason}; refused")
        params = [("service", challenge.params["service"])] if "service" in challenge.params else []
        params += [("scope", s) for s in scope.split()]
        url = realm + ("&" if "?" in realm else "?") + urlencode(params)
        send = self._basic is not None and decision.use is RealmUse.CREDENTIALS
        headers = {"Authorization": self._basic} if send and self._basic else {}
        status, body = self._fetch(url, headers)
        if status != 200:
            raise TokenError(f"token endpoint {host_of(realm)} answered HTTP {status}", status)
        try:
            doc = json.loads(body)
            value = doc.get("token") or doc.get("access_token")
            lifetime = float(doc.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
        except (ValueError, AttributeError, TypeError):
            raise TokenError("token endpoint answered invalid JSON") from None
        if not isinstance(value, str) or not value:
            raise TokenError("token endpoint answered without a token")
        header = f"Bearer {value}"
        with self._lock:
            self._tokens.put(scope, header, max(0.0, lifetime))
        return header
