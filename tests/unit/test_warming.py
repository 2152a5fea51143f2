"""``warm``'s walk over an image with a fake source (no network, no cache)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from registry_cache.bench.pullclient import Descriptor
from registry_cache.bench.refs import ImageRef, parse_image
from registry_cache.clientconfig import Login
from registry_cache.config import Settings, UpstreamConfig
from registry_cache.digest import Digest
from registry_cache.errors import BlobUnknown
from registry_cache.warming import (
    Fetched,
    OnBytes,
    WarmError,
    read_image_list,
    upstream_for,
    warm,
    warm_all,
    warm_through_cache,
)
from tests.harness.credentials import PULLER, TOKEN_USERS
from tests.harness.scripted import Answer, Scripted, Seen
from tests.harness.token_issuer import TokenIssuer

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _manifest(seed: str) -> tuple[bytes, dict[str, int]]:
    blobs = {str(Digest.of(f"{seed}-{i}".encode())): 100 * (i + 1) for i in range(3)}
    shared = str(Digest.of(b"shared"))
    blobs[shared] = 7
    items = [{"digest": d, "size": s} for d, s in blobs.items()]
    doc = {"schemaVersion": 2, "config": items[0], "layers": items[1:]}
    return json.dumps(doc).encode(), blobs


class FakeSource:
    def __init__(self, *, fail_blob: str | None = None) -> None:
        amd, self.amd_blobs = _manifest("amd")
        arm, self.arm_blobs = _manifest("arm")
        self.manifests = {str(Digest.of(amd)): amd, str(Digest.of(arm)): arm}
        entries = [
            {
                "digest": str(Digest.of(amd)),
                "size": len(amd),
                "platform": {"os": "linux", "architecture": "amd64"},
            },
            {
                "digest": str(Digest.of(arm)),
                "size": len(arm),
                "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
            },
        ]
        self.index = json.dumps({"schemaVersion": 2, "manifests": entries}).encode()
        self.asked: list[str] = []
        self.fetched: list[str] = []
        self.fail_blob = fail_blob

    async def manifest(self, reference: str) -> Fetched:
        self.asked.append(reference)
        if reference == "1":
            return Fetched(self.index, OCI_INDEX, str(Digest.of(self.index)))
        return Fetched(self.manifests[reference], OCI_MANIFEST, reference)

    async def blob(self, desc: Descriptor, on_bytes: OnBytes) -> None:
        if desc.digest == self.fail_blob:
            raise BlobUnknown("gone upstream")
        self.fetched.append(desc.digest)
        on_bytes(desc.size)


class Bars:
    def __init__(self) -> None:
        self.expected: dict[str, int] = {}
        self.done: dict[str, int] = {}

    def expect(self, image: ImageRef, nbytes: int) -> None:
        self.expected[str(image)] = nbytes

    def advance(self, image: ImageRef, nbytes: int) -> None:
        self.done[str(image)] = self.done.get(str(image), 0) + nbytes


IMAGE = parse_image("reg.test/app:1")


async def test_one_platform_of_an_index() -> None:
    source, bars = FakeSource(), Bars()
    result = await warm(source, IMAGE, platform="linux/arm64", reporter=bars)
    assert result.ok and result.platforms == ["linux/arm64/v8"]
    assert sorted(source.fetched) == sorted(source.arm_blobs)
    assert result.bytes == bars.expected[str(IMAGE)] == bars.done[str(IMAGE)]


async def test_all_platforms_deduplicates_shared_blobs() -> None:
    source, bars = FakeSource(), Bars()
    result = await warm(source, IMAGE, platform=None, reporter=bars)
    assert result.ok and result.platforms == ["linux/amd64", "linux/arm64/v8"]
    wanted = source.amd_blobs | source.arm_blobs
    assert sorted(source.fetched) == sorted(wanted) and result.blobs == len(wanted) == 7


async def test_failures_are_per_image() -> None:
    source = FakeSource(fail_blob=next(iter(FakeSource().amd_blobs)))
    results = await warm_all(
        lambda image: source if image.repository == "app" else FakeSource(),
        [IMAGE, parse_image("reg.test/other:1")],
        platform="linux/amd64",
        reporter=Bars(),
    )
    assert [r.ok for r in results] == [False, True]
    assert results[0].error == "BLOB_UNKNOWN: gone upstream"
    missing = await warm(FakeSource(), IMAGE, platform="windows/amd64", reporter=Bars())
    assert missing.error is not None and "no manifest for platform windows/amd64" in missing.error


def test_image_lists_skip_blanks_and_comments() -> None:
    text = "# images for the rollout\nalpine:3.19\n\n  ghcr.io/org/app:1.2  # pinned\n#x\n"
    assert read_image_list(text.splitlines()) == ["alpine:3.19", "ghcr.io/org/app:1.2"]


def test_upstream_for_registry_hosts() -> None:
    settings = Settings(
        upstreams={
            "docker.io": UpstreamConfig(name="docker.io", url="https://registry-1.docker.io"),
            "reg.test": UpstreamConfig(name="reg.test", url="http://127.0.0.1:5001"),
        }
    )
    assert upstream_for(settings, "docker.io", strict=True) == "docker.io"
    assert upstream_for(settings, "127.0.0.1:5001", strict=True) == "reg.test"
    assert upstream_for(settings, "quay.io", strict=False) == "quay.io"
    with pytest.raises(WarmError, match=r"no upstream is configured for registry quay\.io"):
        upstream_for(settings, "quay.io", strict=True)
    assert parse_image("alpine:3.19").repository == "library/alpine"


@pytest.mark.parametrize("platform", [None, "linux/amd64"])
async def test_an_index_entry_with_an_invalid_digest_is_never_fetched(
    platform: str | None,
) -> None:
    source = FakeSource()
    bad = {
        "digest": "../../../v2/x",
        "size": 1,
        "platform": {"os": "linux", "architecture": "amd64"},
    }
    source.index = json.dumps({"schemaVersion": 2, "manifests": [bad]}).encode()
    result = await warm(source, IMAGE, platform=platform, reporter=Bars())
    assert result.error is not None and "invalid digest '../../../v2/x'" in result.error
    assert source.asked == ["1"] and source.fetched == []


# ------------------------------------------------ through a "cache" over real HTTP


class TinyImage:
    """One config and one layer behind an image manifest, served by a scripted cache."""

    def __init__(self) -> None:
        self.config = b'{"architecture":"amd64","os":"linux"}'
        self.layer = b"layer-bytes" * 1000
        doc = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"digest": str(Digest.of(self.config)), "size": len(self.config)},
            "layers": [{"digest": str(Digest.of(self.layer)), "size": len(self.layer)}],
        }
        self.manifest = json.dumps(doc).encode()

    def serve(
        self, server: Scripted, path: str, challenge: str, layer: bytes | None = None
    ) -> None:
        def gated(answer: Answer) -> Callable[[Seen], Answer]:
            def respond(seen: Seen) -> Answer:
                if not seen.headers.get("Authorization", "").startswith("Bearer "):
                    return Answer(401, {"WWW-Authenticate": challenge})
                return answer

            return respond

        manifest = Answer(200, {"Content-Type": OCI_MANIFEST}, self.manifest)
        server.script[f"/v2/{path}/manifests/"] = [gated(manifest)]
        config = Answer(200, {}, self.config)
        server.script[f"/v2/{path}/blobs/{Digest.of(self.config)}"] = [gated(config)]
        blob = Answer(200, {}, self.layer if layer is None else layer)
        server.script[f"/v2/{path}/blobs/{Digest.of(self.layer)}"] = [gated(blob)]


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    server = Scripted()
    yield server
    server.close()


@pytest.fixture
def issuer(tmp_path: Path) -> Iterator[TokenIssuer]:
    with TokenIssuer(
        tmp_path / "issuer", users=dict(TOKEN_USERS), anonymous_actions=frozenset({"pull"})
    ) as running:
        yield running


async def test_warm_through_a_cache_keeps_the_login_away_from_a_foreign_realm(
    scripted: Scripted, issuer: TokenIssuer
) -> None:
    image = TinyImage()
    # The "cache" is 127.0.0.1; its realm names another host ("localhost").
    image.serve(scripted, "reg.test/app", f'Bearer realm="http://localhost:{issuer.port}/token"')
    settings = Settings(
        default_upstream=None,
        upstreams={"reg.test": UpstreamConfig(name="reg.test", url=scripted.url)},
    )
    bars = Bars()
    (result,) = await warm_through_cache(
        scripted.url, settings, [IMAGE], platform=None, reporter=bars, login=Login(*PULLER)
    )
    assert result.ok, result.error
    assert result.bytes == len(image.config) + len(image.layer) == bars.done[str(IMAGE)]
    assert issuer.requests and not any(r.authorization for r in issuer.requests)


async def test_warm_through_a_cache_refuses_a_tampered_blob(
    scripted: Scripted, issuer: TokenIssuer
) -> None:
    image = TinyImage()
    tampered = image.layer[:-1] + b"X"
    image.serve(scripted, "reg.test/app", f'Bearer realm="{issuer.realm}"', layer=tampered)
    settings = Settings(
        default_upstream=None,
        upstreams={"reg.test": UpstreamConfig(name="reg.test", url=scripted.url)},
    )
    (result,) = await warm_through_cache(
        scripted.url, settings, [IMAGE], platform=None, reporter=Bars()
    )
    assert result.error is not None and "digest mismatch" in result.error


async def test_warm_through_a_cache_url_with_credentials_is_refused() -> None:
    (result,) = await warm_through_cache(
        "http://ops:hunter2@127.0.0.1:9",
        Settings(default_upstream=None),
        [IMAGE],
        platform=None,
        reporter=Bars(),
    )
    assert result.error == (
        "--cache: credentials in the URL are not allowed; use --login and --password-file"
    )
