"""A tiny Docker token server (the ``realm`` of a Bearer challenge) on 127.0.0.1.

Contract:
- ``GET /token?service=S&scope=repository:NAME:pull,push[&scope=...]`` with optional
  ``Authorization: Basic``; also ``POST /token`` with an OAuth2 form
  (``grant_type=password`` with ``username``/``password``, or ``refresh_token``).
- Answers ``{"token", "access_token", "expires_in", "issued_at"}`` (plus
  ``refresh_token`` for POST). The JWT is ES256-signed; its header carries ``x5c`` =
  [base64 DER of a self-signed certificate] whose PEM (``cert_path``) is the
  registry's ``rootcertbundle``. Claims: iss, sub, aud (= service), exp, nbf, iat,
  jti and ``access`` = one entry per requested repository scope with the granted
  subset of its actions (possibly empty: the registry then answers 401).
- Bad credentials (unknown user or wrong password) answer 401. A request without
  credentials answers 401 when ``anonymous_actions`` is empty (the default); else
  it gets a token granting at most ``anonymous_actions`` (e.g. ``{"pull"}``).
- ``issued`` counts tokens issued; ``requests`` records every token request, with
  ``authorization`` = whether it carried any ``Authorization`` header at all.
- ``tls`` (``certs.TlsFiles``) serves HTTPS instead of HTTP; ``realm_host`` is the host
  name ``realm`` advertises (default 127.0.0.1; e.g. a name a test's hosts file maps
  to 127.0.0.1). The socket always binds 127.0.0.1.
- ``fail_status`` makes every request answer that status (to test upstream auth
  failures); ``None`` (default) serves normally.
"""

from __future__ import annotations

import base64
import datetime as dt
import fnmatch
import itertools
import json
import ssl
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .certs import TlsFiles
from .ports import LOOPBACK

DEFAULT_SERVICE = "test-registry"
DEFAULT_ISSUER = "test-token-issuer"


@dataclass(frozen=True)
class User:
    """A user of the issuer: password, the actions it may get, on which repositories."""

    password: str
    actions: frozenset[str] = frozenset({"pull"})
    repos: tuple[str, ...] = ("*",)  # fnmatch patterns of repository names

    def grant(self, repo: str, wanted: list[str]) -> list[str]:
        """The subset of ``wanted`` this user may do on ``repo``."""
        if not any(fnmatch.fnmatchcase(repo, pattern) for pattern in self.repos):
            return []
        return [a for a in wanted if a in self.actions or "*" in self.actions]


@dataclass(frozen=True)
class Scope:
    """One parsed scope: ``type:name:action,action``."""

    type: str
    name: str
    actions: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Scope:
        kind, sep, rest = text.partition(":")
        name, sep2, actions = rest.rpartition(":")
        if not sep or not sep2 or not kind or not name:
            raise ValueError(f"bad scope {text!r}")
        return cls(kind, name, tuple(a for a in actions.split(",") if a))


Grants = tuple[tuple[str, tuple[str, ...]], ...]


@dataclass(frozen=True)
class TokenRequest:
    """What one request to the issuer asked for and got."""

    method: str
    user: str | None  # None: anonymous
    service: str
    scopes: tuple[Scope, ...]
    access: Grants  # (repository, granted actions) per requested scope
    status: int
    authorization: bool = False  # any Authorization header arrived (Basic or not)


def parse_scopes(values: list[str]) -> list[Scope]:
    """All scopes from repeated ``scope`` parameters, each possibly space-separated."""
    return [Scope.parse(part) for value in values for part in value.split() if part]


@dataclass
class _Signer:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def generate(cls) -> _Signer:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "registry-cache test issuer")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @property
    def x5c(self) -> str:
        return base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class TokenIssuer:
    """A running token server; use as a context manager or call ``start``/``stop``."""

    workdir: Path
    users: dict[str, User] = field(default_factory=dict)
    anonymous_actions: frozenset[str] = frozenset()
    service: str = DEFAULT_SERVICE
    issuer: str = DEFAULT_ISSUER
    expires_in: int = 300
    fail_status: int | None = None
    tls: TlsFiles | None = None
    realm_host: str = LOOPBACK
    issued: int = 0
    requests: list[TokenRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._signer = _Signer.generate()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cert_path = self.workdir / "token-issuer.pem"
        self.cert_path.write_bytes(self._signer.cert_pem)
        self._lock = threading.Lock()
        self._refresh: dict[str, str] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._jti = itertools.count(1)

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> TokenIssuer:
        """Listen on 127.0.0.1 (a kernel-chosen port) in a daemon thread."""
        issuer = self

        class Handler(_Handler):
            owner = issuer

        self._server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self._server.daemon_threads = True
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(self.tls.cert), str(self.tls.key))
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="token-issuer", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> TokenIssuer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("token issuer not started")
        return int(self._server.server_address[1])

    @property
    def realm(self) -> str:
        """The URL registries put in ``WWW-Authenticate: Bearer realm=...``."""
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{self.realm_host}:{self.port}/token"

    def reset_counters(self) -> None:
        with self._lock:
            self.issued = 0
            self.requests.clear()

    def count(self, scope_substring: str = "") -> int:
        """Tokens issued (status 200) whose requested scopes mention ``scope_substring``."""
        with self._lock:
            return sum(
                1
                for r in self.requests
                if r.status == 200
                and (
                    not scope_substring
                    or any(
                        scope_substring in f"{s.type}:{s.name}:{','.join(s.actions)}"
                        for s in r.scopes
                    )
                )
            )

    # -- issuing -----------------------------------------------------------
    def authenticate(self, username: str | None, password: str | None) -> User | None:
        """The user for these credentials; raises PermissionError when they are wrong."""
        if username is None:
            return None
        user = self.users.get(username)
        if user is None or user.password != password:
            raise PermissionError(username)
        return user

    def make_token(
        self, user_name: str | None, user: User | None, service: str, scopes: list[Scope]
    ) -> tuple[str, Grants]:
        """Sign a JWT granting what ``user`` (None: anonymous) may do of ``scopes``."""
        access: list[dict[str, object]] = []
        grants: list[tuple[str, tuple[str, ...]]] = []
        for scope in scopes:
            granted: list[str]
            if scope.type != "repository":
                granted = list(scope.actions) if user and "*" in user.actions else []
            elif user is not None:
                granted = user.grant(scope.name, list(scope.actions))
            else:
                granted = [a for a in scope.actions if a in self.anonymous_actions]
            access.append({"type": scope.type, "name": scope.name, "actions": granted})
            grants.append((scope.name, tuple(granted)))
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": user_name or "",
            "aud": service,
            "exp": now + self.expires_in,
            "nbf": now - 5,
            "iat": now,
            "jti": f"{next(self._jti)}-{uuid.uuid4().hex}",
            "access": access,
        }
        token = jwt.encode(
            claims, self._signer.key, algorithm="ES256", headers={"x5c": [self._signer.x5c]}
        )
        return token, tuple(grants)

    def new_refresh_token(self, user_name: str) -> str:
        token = uuid.uuid4().hex
        with self._lock:
            self._refresh[token] = user_name
        return token

    def user_for_refresh(self, token: str) -> str | None:
        with self._lock:
            return self._refresh.get(token)

    def record(self, request: TokenRequest) -> None:
        with self._lock:
            self.requests.append(request)
            if request.status == 200:
                self.issued += 1


class _Handler(BaseHTTPRequestHandler):
    owner: TokenIssuer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: tests read ``owner.requests`` instead

    def _send_json(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="token"')
        self.end_headers()
        self.wfile.write(data)

    def _basic(self) -> tuple[str | None, str | None]:
        header = self.headers.get("Authorization", "")
        if not header.lower().startswith("basic "):
            return None, None
        try:
            decoded = base64.b64decode(header[6:].strip()).decode()
        except ValueError:
            return "", ""
        user, _, password = decoded.partition(":")
        return user, password

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.path != "/token":
            self._send_json(404, {"errors": [{"code": "NOT_FOUND", "message": url.path}]})
            return
        params = urllib.parse.parse_qs(url.query)
        user, password = self._basic()
        self._issue("GET", params, user, password, offline=False)

    def do_POST(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(length).decode()) if length else {}
        if url.path != "/token":
            self._send_json(404, {"errors": [{"code": "NOT_FOUND", "message": url.path}]})
            return
        grant = (form.get("grant_type") or [""])[0]
        if grant == "password":
            user = (form.get("username") or [""])[0]
            password = (form.get("password") or [""])[0]
        elif grant == "refresh_token":
            refresh = (form.get("refresh_token") or [""])[0]
            found = self.owner.user_for_refresh(refresh)
            if found is None:
                self._send_json(401, {"error": "invalid_grant"})
                return
            user, password = found, self.owner.users[found].password
        else:
            self._send_json(400, {"error": "unsupported_grant_type"})
            return
        self._issue("POST", form, user, password, offline=True)

    def _issue(
        self,
        method: str,
        params: dict[str, list[str]],
        user_name: str | None,
        password: str | None,
        *,
        offline: bool,
    ) -> None:
        owner = self.owner
        service = (params.get("service") or [owner.service])[0]
        try:
            scopes = parse_scopes(params.get("scope", []))
        except ValueError as exc:
            self._send_json(400, {"errors": [{"code": "INVALID_SCOPE", "message": str(exc)}]})
            return

        authorization = "Authorization" in self.headers

        def record(status: int, granted: Grants = ()) -> None:
            owner.record(
                TokenRequest(
                    method, user_name, service, tuple(scopes), granted, status, authorization
                )
            )

        if owner.fail_status is not None:
            record(owner.fail_status)
            self._send_json(owner.fail_status, {"errors": [{"code": "UNAVAILABLE"}]})
            return
        try:
            user = owner.authenticate(user_name, password)
        except PermissionError:
            record(401)
            self._send_json(
                401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}
            )
            return
        if user is None and not owner.anonymous_actions:
            record(401)
            self._send_json(
                401, {"errors": [{"code": "UNAUTHORIZED", "message": "login required"}]}
            )
            return
        token, grants = owner.make_token(user_name, user, service, scopes)
        record(200, grants)
        body: dict[str, object] = {
            "token": token,
            "access_token": token,
            "expires_in": owner.expires_in,
            "issued_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        if offline and user_name:
            body["refresh_token"] = owner.new_refresh_token(user_name)
        self._send_json(200, body)
