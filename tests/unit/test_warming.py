"""``warm``'s walk over an image with a fake source (no network, no cache)."""

from __future__ import annotations

import json

import pytest

from registry_cache.bench.pullclient import Descriptor
from registry_cache.bench.refs import ImageRef, parse_image
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
)

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
