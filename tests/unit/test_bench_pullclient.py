"""The builtin pull client against a small in-process registry on 127.0.0.1.

The fake registry speaks just enough of the distribution API: manifests by tag and
digest, blobs (optionally redirected to a second "CDN" server on another port),
Bearer token auth with a token endpoint, or Basic auth.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from pydantic import SecretStr

from registry_cache.bench.pullclient import pull
from registry_cache.bench.registry import (
    AuthFailed,
    Credentials,
    NotFound,
    RegistryClient,
    Unreachable,
    VerifyFailed,
)
from registry_cache.mediatypes import OCI_INDEX, OCI_MANIFEST
from tests.harness.credentials import PULLER, TOKEN_USERS
from tests.harness.scripted import Answer, Scripted, Seen
from tests.harness.token_issuer import TokenIssuer

LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG = "application/vnd.oci.image.config.v1+json"
REPO = "library/test"


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class FakeRegistry:
    auth: str = "none"  # none | bearer | basic
    users: dict[str, str] = field(default_factory=lambda: {"alice": "pw"})
    anonymous: bool = True
    redirect_blobs: bool = False
    tamper: set[str] = field(default_factory=set)  # digests served with wrong bytes
    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    token_requests: list[str] = field(default_factory=list)
    cdn_auth_headers: list[str | None] = field(default_factory=list)
    url: str = ""
    cdn_url: str = ""

    def add_image(self, tag: str, sizes: list[int], arch: str = "amd64") -> tuple[str, list[str]]:
        layers = [bytes([i + 1]) * size for i, size in enumerate(sizes)]
        config = json.dumps({"architecture": arch, "os": "linux"}).encode()
        for blob in [config, *layers]:
            self.blobs[digest(blob)] = blob
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": CONFIG, "digest": digest(config), "size": len(config)},
                "layers": [
                    {"mediaType": LAYER, "digest": digest(b), "size": len(b)} for b in layers
                ],
            }
        ).encode()
        self.manifests[tag] = self.manifests[digest(manifest)] = (OCI_MANIFEST, manifest)
        return digest(manifest), [digest(b) for b in layers]

    def add_index(self, tag: str) -> dict[str, str]:
        children = {
            arch: self.add_image(f"_{arch}", [10 * (i + 1)], arch)[0]
            for i, arch in enumerate(("amd64", "arm64"))
        }
        index = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [
                    {
                        "mediaType": OCI_MANIFEST,
                        "digest": d,
                        "size": len(self.manifests[d][1]),
                        "platform": {"os": "linux", "architecture": arch},
                    }
                    for arch, d in children.items()
                ],
            }
        ).encode()
        self.manifests[tag] = self.manifests[digest(index)] = (OCI_INDEX, index)
        return {"index": digest(index), **children}

    # -- handlers -------------------------------------------------------------
    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if self.auth == "none":
            return True
        if self.auth == "basic":
            return header in {_basic(u, p) for u, p in self.users.items()}
        return header == "Bearer good-token"

    def _challenge(self) -> web.Response:
        if self.auth == "basic":
            value = 'Basic realm="test"'
        else:
            value = f'Bearer realm="{self.url}/token",service="fake",scope="repository:{REPO}:pull"'
        return web.json_response(
            {"errors": [{"code": "UNAUTHORIZED", "message": "auth"}]},
            status=401,
            headers={"WWW-Authenticate": value},
        )

    async def token(self, request: web.Request) -> web.Response:
        self.token_requests.append(request.query.get("scope", ""))
        header = request.headers.get("Authorization")
        ok = (
            self.anonymous
            if header is None
            else header in {_basic(u, p) for u, p in self.users.items()}
        )
        if not ok:
            return web.json_response({"details": "bad credentials"}, status=401)
        return web.json_response({"token": "good-token", "expires_in": 300})

    async def manifest(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._challenge()
        found = self.manifests.get(request.match_info["ref"])
        if found is None:
            return web.json_response(
                {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]},
                status=404,
            )
        media_type, body = found
        return web.Response(
            body=body, headers={"Content-Type": media_type, "Docker-Content-Digest": digest(body)}
        )

    async def blob(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self._challenge()
        ref = request.match_info["digest"]
        if ref not in self.blobs:
            return web.json_response({"errors": [{"code": "BLOB_UNKNOWN"}]}, status=404)
        if self.redirect_blobs:
            raise web.HTTPTemporaryRedirect(f"{self.cdn_url}/cdn/{ref}?sig=x")
        return web.Response(body=self._bytes(ref))

    async def cdn(self, request: web.Request) -> web.Response:
        self.cdn_auth_headers.append(request.headers.get("Authorization"))
        return web.Response(body=self._bytes(request.match_info["digest"]))

    def _bytes(self, ref: str) -> bytes:
        data = self.blobs[ref]
        return data[:-1] + b"X" if ref in self.tamper else data


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def _ping(request: web.Request) -> web.Response:
    return web.json_response({})


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
async def registry() -> AsyncIterator[FakeRegistry]:
    fake = FakeRegistry()
    app = web.Application()
    app.router.add_get("/v2/", _ping)
    app.router.add_get("/token", fake.token)
    app.router.add_get(r"/v2/{name:.+}/manifests/{ref}", fake.manifest)
    app.router.add_get(r"/v2/{name:.+}/blobs/{digest}", fake.blob)
    cdn_app = web.Application()
    cdn_app.router.add_get("/cdn/{digest}", fake.cdn)
    runner, fake.url = await _serve(app)
    cdn_runner, fake.cdn_url = await _serve(cdn_app)
    yield fake
    await runner.cleanup()
    await cdn_runner.cleanup()


async def test_pull_by_tag_discards_and_counts(registry: FakeRegistry) -> None:
    manifest, layers = registry.add_image("1.0", [1000, 300_000, 5])
    result = await pull(f"{REPO}:1.0", registry.url)
    assert result.digest == result.manifest_digest == manifest
    assert result.layers == 3
    assert result.platform is None
    config_size = len(registry.blobs[next(iter(registry.blobs))])
    assert result.bytes == 1000 + 300_000 + 5 + config_size
    assert result.largest_layer is not None
    assert result.largest_layer.digest == layers[1]
    assert result.seconds > 0


async def test_pull_by_digest_of_an_index_picks_the_platform(registry: FakeRegistry) -> None:
    digests = registry.add_index("multi")
    amd = await pull(f"{REPO}:multi", registry.url)
    assert (amd.digest, amd.manifest_digest, amd.platform) == (
        digests["index"],
        digests["amd64"],
        "linux/amd64",
    )
    arm = await pull(f"{REPO}@{digests['index']}", registry.url, platform="linux/arm64")
    assert (arm.manifest_digest, arm.platform) == (digests["arm64"], "linux/arm64")
    with pytest.raises(NotFound, match="linux/s390x"):
        await pull(f"{REPO}:multi", registry.url, platform="linux/s390x")


async def test_output_is_an_oci_layout(registry: FakeRegistry, tmp_path: Path) -> None:
    manifest, layers = registry.add_image("1.0", [100, 200])
    out = tmp_path / "out"
    await pull(f"{REPO}:1.0", registry.url, output=out)
    assert json.loads((out / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((out / "index.json").read_text())
    (entry,) = index["manifests"]
    assert entry["digest"] == manifest
    assert entry["annotations"] == {"org.opencontainers.image.ref.name": "1.0"}
    for d in [manifest, *layers]:
        path = out / "blobs" / "sha256" / d.split(":")[1]
        assert digest(path.read_bytes()) == d
    assert not list(out.rglob("*.partial"))
    await pull(f"{REPO}:1.0", registry.url, output=out)  # again: same single entry
    assert len(json.loads((out / "index.json").read_text())["manifests"]) == 1


async def test_anonymous_bearer_token_cached_per_scope(registry: FakeRegistry) -> None:
    registry.auth = "bearer"
    registry.add_image("1.0", [10, 20, 30, 40])
    async with RegistryClient(registry.url) as client:
        await pull(f"{REPO}:1.0", registry.url, client=client)
        await pull(f"{REPO}:1.0", registry.url, client=client)
    assert registry.token_requests == [f"repository:{REPO}:pull"]  # one token for 2 pulls


async def test_credentialed_bearer_and_bad_credentials(registry: FakeRegistry) -> None:
    registry.auth, registry.anonymous = "bearer", False
    registry.add_image("1.0", [10])
    good = Credentials("alice", SecretStr("pw"))
    assert (await pull(f"{REPO}:1.0", registry.url, auth=good)).layers == 1
    with pytest.raises(AuthFailed, match="token service") as info:
        await pull(f"{REPO}:1.0", registry.url, auth=Credentials("alice", SecretStr("nope")))
    assert "nope" not in str(info.value)
    with pytest.raises(AuthFailed):
        await pull(f"{REPO}:1.0", registry.url)  # anonymous refused


async def test_basic_auth(registry: FakeRegistry) -> None:
    registry.auth = "basic"
    registry.add_image("1.0", [10])
    ok = await pull(f"{REPO}:1.0", registry.url, auth=Credentials("alice", SecretStr("pw")))
    assert ok.layers == 1
    with pytest.raises(AuthFailed, match="credentials required"):
        await pull(f"{REPO}:1.0", registry.url)
    with pytest.raises(AuthFailed, match="HTTP 401"):
        await pull(f"{REPO}:1.0", registry.url, auth=Credentials("alice", SecretStr("x")))


async def test_redirect_to_another_host_drops_authorization(registry: FakeRegistry) -> None:
    registry.auth, registry.redirect_blobs = "bearer", True
    registry.add_image("1.0", [1000, 2000])
    result = await pull(f"{REPO}:1.0", registry.url)
    assert result.layers == 2
    assert registry.cdn_auth_headers == [None, None, None]  # config + 2 layers, no token


async def test_tampered_blob_is_rejected(registry: FakeRegistry, tmp_path: Path) -> None:
    _, layers = registry.add_image("1.0", [1000, 2000])
    registry.tamper.add(layers[1])
    out = tmp_path / "out"
    with pytest.raises(VerifyFailed, match="digest mismatch"):
        await pull(f"{REPO}:1.0", registry.url, output=out)
    assert not (out / "blobs" / "sha256" / layers[1].split(":")[1]).exists()
    assert not list(out.rglob("*.partial"))


async def test_wrong_size_is_rejected(registry: FakeRegistry) -> None:
    _, layers = registry.add_image("1.0", [1000])
    registry.blobs[layers[0]] += b"extra"  # more bytes than the manifest announces
    with pytest.raises(VerifyFailed, match="more than the 1000 bytes"):
        await pull(f"{REPO}:1.0", registry.url)


async def test_manifest_digest_mismatch_by_digest(registry: FakeRegistry) -> None:
    manifest, _ = registry.add_image("1.0", [10])
    registry.manifests["sha256:" + "0" * 64] = registry.manifests[manifest]
    with pytest.raises(VerifyFailed, match="digest mismatch"):
        await pull(f"{REPO}@sha256:{'0' * 64}", registry.url)


async def test_missing_image_and_unreachable_registry(registry: FakeRegistry) -> None:
    with pytest.raises(NotFound, match="MANIFEST_UNKNOWN"):
        await pull(f"{REPO}:nope", registry.url)
    async with RegistryClient("http://127.0.0.1:9") as client:
        with pytest.raises(Unreachable, match=r"127\.0\.0\.1:9 unreachable"):
            await client.ping()
        with pytest.raises(Unreachable):
            await client.manifest(REPO, "1.0")


async def test_credentials_never_go_to_a_foreign_token_realm(tmp_path: Path) -> None:
    """The benchmark's client keeps the product's rule (upstream/origin.py)."""
    body = b'{"schemaVersion":2}'
    with TokenIssuer(
        tmp_path / "issuer", users=dict(TOKEN_USERS), anonymous_actions=frozenset({"pull"})
    ) as issuer:
        registry = Scripted()
        try:
            for realm_host, sent in (("localhost", False), ("127.0.0.1", True)):
                challenge = f'Bearer realm="http://{realm_host}:{issuer.port}/token"'

                def respond(seen: Seen, challenge: str = challenge) -> Answer:
                    if seen.headers.get("Authorization", "").startswith("Bearer "):
                        return Answer(200, {"Content-Type": OCI_MANIFEST}, body)
                    return Answer(401, {"WWW-Authenticate": challenge})

                registry.script = {"/v2/": [respond]}
                issuer.reset_counters()
                creds = Credentials(PULLER[0], SecretStr(PULLER[1]))
                async with RegistryClient(registry.url, credentials=creds) as client:
                    assert (await client.manifest(REPO, "1")).body == body
                assert [r.authorization for r in issuer.requests] == [sent]
        finally:
            registry.close()
