"""An async registry client for the pull side: auth, redirects, verified reads.

``RegistryClient`` talks to one registry base URL over aiohttp: the benchmark's
and compare-paths' own client, measuring what a client sees (the product's
upstream fills and ``warm`` use upstream/client.py). It answers
``WWW-Authenticate`` challenges (anonymous or credentialed Bearer tokens, cached
per scope until shortly before expiry; Basic), follows redirects itself so that
``Authorization`` is dropped when the origin changes (signed CDN URLs reject it),
applies the product's credential rule (upstream/origin.py: no plain http after
https, username/password only to a trusted token realm), caps what it reads into
memory, and turns every failure into a ``PullError`` whose message fits on one line
and never holds a credential.

Error tree::

    PullError
    ├── Unreachable      connection refused, DNS, TLS, timeout
    ├── NotFound         404: repository, manifest, blob or platform missing
    ├── AuthFailed       401/403 after answering the challenge; token endpoint refused
    └── VerifyFailed     size or digest of what arrived differs from what was asked for
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlencode, urljoin, urlsplit

import aiohttp
from pydantic import SecretStr

from ..digest import Digest, Hasher
from ..errors import DigestInvalid
from ..mediatypes import IMAGE_TYPES, INDEX_TYPES, manifest_media_type
from ..reference import display_reference
from ..upstream.auth import Challenge, basic_header, parse_challenges
from ..upstream.origin import CredentialPolicy, RealmUse, host_of

CHUNK = 1 << 20  # large reads: per-chunk overhead is what limits a Python client
MAX_REDIRECTS = 5
MAX_MANIFEST_BYTES = 4 << 20
MAX_TOKEN_BYTES = 1 << 20
TOKEN_MARGIN = 10.0  # seconds of life a cached token must have left
DEFAULT_TOKEN_LIFETIME = 60.0
USER_AGENT = "registry-cache-bench/0.1"
MANIFEST_ACCEPT = ", ".join(sorted(INDEX_TYPES | IMAGE_TYPES))
REDIRECTS = frozenset({301, 302, 303, 307, 308})
DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)


class PullError(Exception):
    """A pull failed; ``str()`` is one line fit for the CLI."""


class Unreachable(PullError):
    pass


class NotFound(PullError):
    pass


class AuthFailed(PullError):
    pass


class VerifyFailed(PullError):
    pass


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: SecretStr


@dataclass(frozen=True, slots=True)
class Manifest:
    body: bytes
    media_type: str
    digest: str  # verified: the digest of ``body``

    def json(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.body)
        except ValueError:
            raise PullError(f"manifest {self.digest} is not JSON") from None
        if not isinstance(doc, dict):
            raise PullError(f"manifest {self.digest} is not a JSON object")
        return doc

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


@dataclass(slots=True)
class _Token:
    header: str
    expires_at: float


class RegistryClient:
    """One registry (``http(s)://host[:port]``); use as ``async with``.

    Pass ``session`` to share a connection pool; otherwise the client owns one.
    """

    def __init__(
        self,
        url: str,
        *,
        credentials: Credentials | None = None,
        verify_tls: bool | ssl.SSLContext = True,
        session: aiohttp.ClientSession | None = None,
        timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
    ) -> None:
        self.url = url.rstrip("/")
        self.host = urlsplit(self.url).netloc
        self._policy = CredentialPolicy(self.url)
        self._basic = (
            basic_header(credentials.username, credentials.password) if credentials else None
        )
        # False: accept any certificate (a cache's self-signed one); a context: trust its CAs.
        self._ssl = verify_tls
        self._timeout = timeout
        self._session = session
        self._owns_session = session is None
        self._tokens: dict[str, _Token] = {}
        self._bearer: Challenge | None = None  # learned from the first 401
        self._basic_required = False
        self._token_lock = asyncio.Lock()

    async def __aenter__(self) -> RegistryClient:
        self.session  # noqa: B018 - create it inside the running loop
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                auto_decompress=False,  # blob bytes must reach the hasher untouched
                read_bufsize=CHUNK,
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    # -- requests -----------------------------------------------------------------

    async def ping(self) -> None:
        """``GET /v2/``: raise Unreachable unless the registry answers (any status < 500)."""
        try:
            async with self.session.get(f"{self.url}/v2/", ssl=self._ssl) as resp:
                if resp.status >= 500:
                    raise Unreachable(f"{self.host} answered HTTP {resp.status} on /v2/")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unreachable(f"{self.host} unreachable: {_reason(exc)}") from None

    @asynccontextmanager
    async def get(
        self, url: str, *, scope: str, what: str, headers: dict[str, str] | None = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """GET with auth and redirects; yields a 2xx response, raises PullError otherwise."""
        base = dict(headers or {})
        auth = await self._auth_header(scope)
        try:
            resp = await self._send(url, base, auth)
            if resp.status == 401:
                challenge = resp.headers.get("WWW-Authenticate", "")
                resp.release()
                auth = await self._answer(challenge, scope, what)
                resp = await self._send(url, base, auth)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unreachable(f"{self.host} unreachable: {_reason(exc)}") from None
        try:
            if resp.status >= 300:
                raise await _status_error(resp, self.host, what)
            try:
                yield resp
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise Unreachable(f"{self.host}: {what} interrupted: {_reason(exc)}") from None
        finally:
            resp.release()

    async def _send(
        self, url: str, headers: dict[str, str], auth: str | None
    ) -> aiohttp.ClientResponse:
        origin = _origin(url)
        for _ in range(MAX_REDIRECTS + 1):
            sent = dict(headers)
            if auth and _origin(url) == origin:
                sent["Authorization"] = auth
            resp = await self.session.get(url, headers=sent, allow_redirects=False, ssl=self._ssl)
            location = resp.headers.get("Location")
            if resp.status not in REDIRECTS or not location:
                return resp
            resp.release()
            url = urljoin(url, location)
            refusal = self._policy.redirect_refusal(url)
            if refusal is not None:
                raise PullError(f"{self.host} {refusal}; refused")
        raise PullError(f"{self.host}: more than {MAX_REDIRECTS} redirects")

    # -- auth ---------------------------------------------------------------------

    async def _auth_header(self, scope: str) -> str | None:
        if self._basic_required:
            return self._basic
        if self._bearer is not None:
            return await self._token(self._bearer, scope)
        return None

    async def _answer(self, header: str, scope: str, what: str) -> str:
        for challenge in parse_challenges(header):
            if challenge.scheme == "bearer" and "realm" in challenge.params:
                self._bearer = challenge
                self._tokens.pop(scope, None)
                return await self._token(challenge, scope)
            if challenge.scheme == "basic" and self._basic:
                self._basic_required = True
                return self._basic
        hint = "credentials required" if self._basic is None else "credentials rejected"
        raise AuthFailed(f"{self.host}: authentication failed for {what} ({hint})")

    async def _token(self, challenge: Challenge, scope: str) -> str:
        async with self._token_lock:
            cached = self._tokens.get(scope)
            if cached and cached.expires_at - TOKEN_MARGIN > time.monotonic():
                return cached.header
            realm = challenge.params["realm"]
            params = (
                [("service", challenge.params["service"])] if "service" in challenge.params else []
            )
            params += [("scope", s) for s in scope.split()]
            url = realm + ("&" if "?" in realm else "?") + urlencode(params)
            realm_host = host_of(realm)
            decision = self._policy.realm(realm)
            if decision.use is RealmUse.REFUSED:
                raise AuthFailed(f"{self.host} {decision.reason}; refused")
            send = self._basic is not None and decision.use is RealmUse.CREDENTIALS
            headers = {"Authorization": self._basic} if send and self._basic else {}
            try:
                async with self.session.get(
                    url, headers=headers, ssl=self._ssl, allow_redirects=False
                ) as resp:
                    body = await resp.content.read(MAX_TOKEN_BYTES + 1)
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise Unreachable(
                    f"token service {realm_host} unreachable: {_reason(exc)}"
                ) from None
            if len(body) > MAX_TOKEN_BYTES:
                raise AuthFailed(f"token service {realm_host} answered more than 1 MiB")
            if status != 200:
                raise AuthFailed(f"token service {realm_host} answered HTTP {status} for {scope}")
            try:
                doc = json.loads(body)
                value = doc.get("token") or doc.get("access_token")
                lifetime = float(doc.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
            except (ValueError, AttributeError, TypeError):
                raise AuthFailed(f"token service {realm_host} answered invalid JSON") from None
            if not isinstance(value, str) or not value:
                raise AuthFailed(f"token service {realm_host} answered without a token")
            token = _Token(f"Bearer {value}", time.monotonic() + lifetime)
            self._tokens[scope] = token
            return token.header

    # -- registry API -------------------------------------------------------------

    def blob_url(self, repository: str, digest: str) -> str:
        return f"{self.url}/v2/{repository}/blobs/{digest}"

    async def manifest(self, repository: str, reference: str) -> Manifest:
        """Fetch a manifest by tag or digest; its digest is checked against the request
        (by digest) or against ``Docker-Content-Digest`` (by tag, when sent)."""
        what = f"manifest {display_reference(repository, reference)}"
        url = f"{self.url}/v2/{repository}/manifests/{reference}"
        async with self.get(
            url, scope=pull_scope(repository), what=what, headers={"Accept": MANIFEST_ACCEPT}
        ) as resp:
            body = await resp.content.read(MAX_MANIFEST_BYTES + 1)
            content_type = resp.headers.get("Content-Type")
            header_digest = resp.headers.get("Docker-Content-Digest")
        if len(body) > MAX_MANIFEST_BYTES:
            raise PullError(f"{what}: larger than {MAX_MANIFEST_BYTES} bytes")
        expected = reference if ":" in reference else header_digest
        if expected:
            check = _parse_digest(expected, what)
            if not check.matches(body):
                actual = Digest.of(body, check.algorithm)
                raise VerifyFailed(f"{what}: digest mismatch (expected {check}, got {actual})")
            digest = str(check)
        else:
            digest = str(Digest.of(body))
        return Manifest(body, manifest_media_type(body, content_type), digest)

    async def fetch_blob(
        self, repository: str, digest: str, size: int | None, sink: BlobSink | None = None
    ) -> int:
        """Stream a blob, verifying size and digest as it arrives; return its size.

        Bytes are discarded unless a ``sink`` takes them; the sink is committed only
        after verification and aborted on any failure.
        """
        what = f"blob {digest} of {repository}"
        expected = _parse_digest(digest, what)
        hasher: Hasher = expected.hasher()
        received = 0
        try:
            async with self.get(
                self.blob_url(repository, digest), scope=pull_scope(repository), what=what
            ) as resp:
                async for chunk in resp.content.iter_chunked(CHUNK):
                    received += len(chunk)
                    if size is not None and received > size:
                        raise VerifyFailed(f"{what}: more than the {size} bytes announced")
                    hasher.update(chunk)
                    if sink is not None:
                        sink.write(chunk)
        except BaseException:
            if sink is not None:
                sink.abort()
            raise
        problem = None
        if size is not None and received != size:
            problem = f"size mismatch (expected {size}, got {received} bytes)"
        elif hasher.hexdigest() != expected.hex:
            problem = f"digest mismatch (got {expected.algorithm}:{hasher.hexdigest()})"
        if problem:
            if sink is not None:
                sink.abort()
            raise VerifyFailed(f"{what}: {problem}")
        if sink is not None:
            sink.commit()
        return received


class BlobSink(Protocol):
    """Where blob bytes go while they arrive (pullclient writes an OCI layout)."""

    def write(self, data: bytes) -> None: ...

    def commit(self) -> None:
        """The bytes were verified: make them visible."""

    def abort(self) -> None:
        """Something failed: leave nothing behind."""


def pull_scope(repository: str) -> str:
    return f"repository:{repository}:pull"


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()


def _parse_digest(text: str, what: str) -> Digest:
    try:
        return Digest.parse(text)
    except DigestInvalid as exc:
        raise PullError(f"{what}: {exc.message}") from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        err = exc.os_error
        if err.errno and err.errno > 0:  # getaddrinfo's errors are negative
            return os.strerror(err.errno).lower()
        return str(err.strerror or err)
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0] if text else type(exc).__name__


async def _status_error(resp: aiohttp.ClientResponse, host: str, what: str) -> PullError:
    detail = ""
    try:
        doc = json.loads(await resp.content.read(64 << 10))
        first = doc["errors"][0]
        detail = f" {first.get('code', '')}: {first.get('message', '')}".rstrip(": ")
    except Exception:
        pass
    text = f"{host}: {what}: HTTP {resp.status}{detail}"
    if resp.status == 404:
        return NotFound(text)
    if resp.status == 401:  # Docker Hub answers 401, not 404, for a missing repository
        return AuthFailed(f"{text} (wrong credentials, or no such repository)")
    if resp.status == 403:
        return AuthFailed(text)
    return PullError(text)
