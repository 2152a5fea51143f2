"""HTTP Basic authentication of clients on the registry API (``htpasswd``).

Only ``/v2`` and below ask for credentials: the probes, ``/metrics`` and the
client-configuration pages stay open (they hold no image data). A missing or
wrong ``Authorization`` is a 401 with ``WWW-Authenticate: Basic realm=…``, the
challenge every registry client answers (distribution's htpasswd auth does the
same). bcrypt is slow on purpose, so a success is remembered by a hash of the
header (never the password itself) until the htpasswd file changes; checks run
on threads, a few at a time, so wrong passwords cannot stall the event loop.
Failed logins are throttled per client address (``throttle.LoginThrottle``) and
each one is logged, with the user name escaped and never the password.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging

from aiohttp import web
from aiohttp.typedefs import Middleware

from ..errors import TooManyRequests, Unauthorized
from ..htpasswd import Htpasswd
from ..logs import escape
from ..lru import Lru
from .middleware import Handler
from .throttle import LoginThrottle

log = logging.getLogger("registry_cache.auth")

REALM = "registry-cache"
MEMO_SIZE = 4096
CONCURRENT_CHECKS = 4


class AuthenticationRequired(Unauthorized):
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": f'Basic realm="{REALM}"'}


def parse_basic(header: str) -> tuple[str, str]:
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise AuthenticationRequired("Basic credentials required")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise AuthenticationRequired("malformed Basic credentials") from None
    user, sep, password = decoded.partition(":")
    if not sep or not user:
        raise AuthenticationRequired("malformed Basic credentials")
    return user, password


class ClientAuth:
    def __init__(self, htpasswd: Htpasswd, throttle: LoginThrottle | None = None) -> None:
        self.htpasswd = htpasswd
        self.throttle = throttle if throttle is not None else LoginThrottle()
        self._memo: Lru[bytes, tuple[int, str]] = Lru(MEMO_SIZE)
        self._checks: asyncio.Semaphore | None = None  # made on the serving loop

    async def user(self, header: str | None, remote: str | None = None) -> str:
        """The authenticated user name; ``AuthenticationRequired`` (or, for an address
        with too many failed logins, ``TooManyRequests``) otherwise."""
        if not header:
            raise AuthenticationRequired("authentication required")
        self.htpasswd.refresh()
        key = hashlib.sha256(header.encode("utf-8", "replace")).digest()
        remembered = self._memo.get(key)
        if remembered is not None and remembered[0] == self.htpasswd.generation:
            return remembered[1]  # known good: never throttled
        user, password = parse_basic(header)
        name = escape(user[:64])
        wait = self.throttle.begin(remote)
        if wait is not None:
            log.warning(
                "client login for user %s from %s refused: %d failed logins, retry in %.0fs",
                name, remote, self.throttle.failures(remote), max(1.0, wait),
            )  # fmt: skip
            raise TooManyRequests("too many failed logins from this address", retry_after=wait)
        if self._checks is None:
            self._checks = asyncio.Semaphore(CONCURRENT_CHECKS)
        async with self._checks:
            generation = self.htpasswd.generation
            ok = await asyncio.to_thread(self.htpasswd.check, user, password)
        if not ok:
            log.warning(
                "client authentication failed for user %s from %s (%d failed logins)",
                name, remote, self.throttle.failures(remote),
            )  # fmt: skip
            raise AuthenticationRequired("invalid username or password")
        self.throttle.succeeded(remote)
        self._memo.put(key, (generation, user))
        return user


def middleware(auth: ClientAuth) -> Middleware:
    @web.middleware
    async def client_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path == "/v2" or path.startswith("/v2/"):
            user = await auth.user(request.headers.get("Authorization"), request.remote)
            request.setdefault("log", {})["user"] = user
        return await handler(request)

    return client_auth
