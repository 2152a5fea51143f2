"""A minimal registry client for tests: push images, fetch manifests and blobs.

Contract:
- ``RegistrySession(base_url, auth=(user, password) | None)`` answers 401 challenges:
  ``Basic`` → sends Basic on every later request; ``Bearer realm,service,scope`` →
  fetches a token from the realm (with Basic credentials when given), caches it per
  scope and retries once per new scope. Never uses proxies; never follows redirects
  off 127.0.0.1 unless asked (``get_blob`` follows them like a client would).
- ``push_image`` uploads every blob with the two-step upload (``POST
  /v2/<name>/blobs/uploads/`` → ``PUT <Location>[?|&]digest=…``; relative or absolute
  Location), skipping blobs a ``HEAD`` finds, then PUTs child manifests by digest and
  the top manifest by tag (or digest when ``tag`` is None), each with its own
  Content-Type, and checks the registry's ``Docker-Content-Digest``.
"""

from __future__ import annotations

import base64
import re
import urllib.parse
from dataclasses import dataclass
from typing import BinaryIO

import urllib3

from .images import ALL_MANIFEST_TYPES, Blob, Image, ImageIndex

_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


# Follow up to 5 redirects (dropping Authorization when the host changes, as urllib3
# does by default) but never retry a failed request.
_FOLLOW_REDIRECTS = urllib3.Retry(
    total=None, connect=0, read=0, status=0, other=0, redirect=5, raise_on_redirect=False
)


class RegistryError(RuntimeError):
    """A registry answered something the harness did not expect."""

    def __init__(self, message: str, status: int, body: bytes = b"") -> None:
        super().__init__(f"{message}: HTTP {status} {body[:500]!r}")
        self.status = status
        self.body = body


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``('bearer', {'realm': ..., 'service': ..., 'scope': ...})`` from WWW-Authenticate."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    for m in _CHALLENGE_PARAM.finditer(rest):
        quoted, bare = m.group(2), m.group(3)
        params[m.group(1).lower()] = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
    return scheme.lower(), params


@dataclass(frozen=True)
class PushResult:
    """What was pushed where; digests for tests to compare with what clients pull."""

    registry_url: str
    repo: str
    tag: str | None
    artifact: Image | ImageIndex

    @property
    def digest(self) -> str:
        """The top-level manifest digest (the index's when an index was pushed)."""
        return self.artifact.digest

    @property
    def index_digest(self) -> str | None:
        return self.artifact.digest if isinstance(self.artifact, ImageIndex) else None

    @property
    def images(self) -> tuple[Image, ...]:
        a = self.artifact
        return a.images if isinstance(a, ImageIndex) else (a,)

    @property
    def manifest_digest(self) -> str:
        """The (first) image manifest digest; for an index, its first child's."""
        return self.images[0].digest

    @property
    def config_digest(self) -> str:
        return self.images[0].config.digest

    @property
    def layer_digests(self) -> list[str]:
        """Digests of the layer blobs (the compressed bytes) of the (first) image."""
        return self.images[0].layer_digests

    @property
    def all_blob_digests(self) -> set[str]:
        """Every config and layer digest of every image."""
        return {b.digest for image in self.images for b in image.blobs}

    @property
    def reference(self) -> str:
        """``127.0.0.1:PORT/repo:tag`` (or ``@digest``)."""
        host = urllib.parse.urlsplit(self.registry_url).netloc
        return f"{host}/{self.repo}:{self.tag}" if self.tag else f"{host}/{self.repo}@{self.digest}"


class RegistrySession:
    """HTTP to one registry with Basic/Bearer challenge handling (see module doc)."""

    def __init__(
        self,
        base_url: str,
        auth: tuple[str, str] | None = None,
        *,
        timeout: float = 60.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.auth = auth
        self.http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=5.0, read=timeout), retries=False
        )
        self._basic = False
        self._tokens: dict[str, str] = {}
        self._current: str | None = None
        self.token_fetches = 0

    def url(self, path_or_url: str) -> str:
        return urllib.parse.urljoin(self.base_url + "/", path_or_url)

    def _basic_header(self) -> str:
        if self.auth is None:
            raise RegistryError("registry wants credentials, none given", 401)
        raw = f"{self.auth[0]}:{self.auth[1]}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _auth_headers(self) -> dict[str, str]:
        if self._basic:
            return {"Authorization": self._basic_header()}
        if self._current:
            return {"Authorization": f"Bearer {self._current}"}
        return {}

    def _fetch_token(self, params: dict[str, str]) -> str:
        realm = params.get("realm")
        if not realm:
            raise RegistryError("Bearer challenge without realm", 401)
        query: list[tuple[str, str]] = []
        if "service" in params:
            query.append(("service", params["service"]))
        query.extend(("scope", s) for s in params.get("scope", "").split() if s)
        sep = "&" if "?" in realm else "?"
        headers = {"Authorization": self._basic_header()} if self.auth else {}
        resp = self.http.request(
            "GET", realm + sep + urllib.parse.urlencode(query), headers=headers
        )
        if resp.status != 200:
            raise RegistryError(f"token request to {realm} failed", resp.status, resp.data)
        body = resp.json()
        token = body.get("token") or body.get("access_token")
        if not token:
            raise RegistryError("token response without token", resp.status, resp.data)
        self.token_fetches += 1
        return str(token)

    def _handle_challenge(self, header: str, tried: set[str]) -> bool:
        """Prepare credentials for a retry; False when retrying cannot help."""
        scheme, params = parse_challenge(header)
        if scheme == "basic":
            if self._basic or self.auth is None:
                return False
            self._basic = True
            return True
        if scheme == "bearer":
            scope = params.get("scope", "")
            if scope in tried:
                return False
            tried.add(scope)
            if scope not in self._tokens:
                self._tokens[scope] = self._fetch_token(params)
            self._current = self._tokens[scope]
            return True
        return False

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        body: bytes | BinaryIO | None = None,
        headers: dict[str, str] | None = None,
        redirect: bool = False,
        preload_content: bool = True,
    ) -> urllib3.BaseHTTPResponse:
        """One request, retried after answering 401 challenges (body must be rewindable)."""
        url = self.url(path_or_url)
        tried: set[str] = set()
        while True:
            if body is not None and not isinstance(body, bytes):
                body.seek(0)
            resp = self.http.request(
                method,
                url,
                body=body,
                headers={**(headers or {}), **self._auth_headers()},
                redirect=redirect,
                retries=_FOLLOW_REDIRECTS if redirect else False,
                preload_content=preload_content,
            )
            if resp.status != 401:
                return resp
            challenge = resp.headers.get("WWW-Authenticate", "")
            if not preload_content:
                resp.drain_conn()
            if not challenge or not self._handle_challenge(challenge, tried):
                return resp

    # -- pull-side helpers ------------------------------------------------
    def get_manifest(
        self, repo: str, ref: str, accept: tuple[str, ...] = ALL_MANIFEST_TYPES, method: str = "GET"
    ) -> urllib3.BaseHTTPResponse:
        """GET (or HEAD) ``/v2/<repo>/manifests/<ref>`` with an Accept of all four types."""
        return self.request(
            method, f"/v2/{repo}/manifests/{ref}", headers={"Accept": ", ".join(accept)}
        )

    def get_blob(
        self, repo: str, digest: str, headers: dict[str, str] | None = None
    ) -> urllib3.BaseHTTPResponse:
        """GET ``/v2/<repo>/blobs/<digest>``, following redirects."""
        return self.request("GET", f"/v2/{repo}/blobs/{digest}", headers=headers, redirect=True)

    # -- push ---------------------------------------------------------------
    def blob_exists(self, repo: str, digest: str) -> bool:
        resp = self.request("HEAD", f"/v2/{repo}/blobs/{digest}")
        return resp.status == 200

    def upload_blob(self, repo: str, blob: Blob) -> None:
        """Two-step monolithic upload of ``blob`` (streamed from its file when spooled)."""
        resp = self.request("POST", f"/v2/{repo}/blobs/uploads/", headers={"Content-Length": "0"})
        if resp.status != 202 or "Location" not in resp.headers:
            raise RegistryError(f"starting upload of {blob.digest}", resp.status, resp.data)
        location = self.url(resp.headers["Location"])
        sep = "&" if "?" in location else "?"
        target = location + sep + urllib.parse.urlencode({"digest": blob.digest})
        stream = blob.open()
        try:
            resp = self.request(
                "PUT",
                target,
                body=blob.data if blob.data is not None else stream,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(blob.size),
                },
            )
        finally:
            stream.close()
        if resp.status != 201:
            raise RegistryError(f"uploading {blob.digest}", resp.status, resp.data)

    def put_manifest(self, repo: str, ref: str, manifest: Blob) -> str:
        """PUT manifest bytes under ``ref`` with their media type; return the digest."""
        resp = self.request(
            "PUT",
            f"/v2/{repo}/manifests/{ref}",
            body=manifest.read(),
            headers={"Content-Type": manifest.media_type},
        )
        if resp.status != 201:
            raise RegistryError(f"putting manifest {repo}:{ref}", resp.status, resp.data)
        digest = resp.headers.get("Docker-Content-Digest", manifest.digest)
        if digest != manifest.digest:
            raise RegistryError(f"registry computed {digest}, expected {manifest.digest}", 201)
        return digest

    def push_blobs(self, repo: str, blobs: list[Blob]) -> None:
        for blob in blobs:
            if not self.blob_exists(repo, blob.digest):
                self.upload_blob(repo, blob)


def push_image(
    registry_url: str,
    repo: str,
    tag: str | None,
    image: Image | ImageIndex,
    auth: tuple[str, str] | None = None,
) -> PushResult:
    """Push an image or index (children first) and tag it; see the module contract."""
    session = RegistrySession(registry_url, auth)
    session.push_blobs(repo, image.blobs)
    if isinstance(image, ImageIndex):
        for child in image.images:
            session.put_manifest(repo, child.digest, child.manifest)
    session.put_manifest(repo, tag or image.digest, image.manifest)
    return PushResult(registry_url.rstrip("/"), repo, tag, image)
