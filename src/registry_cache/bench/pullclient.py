"""The project's own OCI pull client: what ``benchmark --client builtin`` times.

A pull resolves a tag (or digest) to a manifest, picks one platform from an
index, then fetches the config and every layer concurrently (bounded), verifying
each digest and size while the bytes stream in. Bytes are discarded, or written
as an OCI image layout under ``output`` (``oci-layout``, ``index.json``,
``blobs/<alg>/<hex>``) that skopeo and umoci read. Library use::

    result = await pull("library/alpine:3.19", "https://registry-1.docker.io")

``warm`` reuses it to pre-pull images into the cache (``registry_url`` = the cache).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..mediatypes import valid_digest
from .registry import Credentials, Manifest, NotFound, PullError, RegistryClient

DEFAULT_PLATFORM = "linux/amd64"
DEFAULT_CONCURRENCY = 8
REF_NAME = "org.opencontainers.image.ref.name"


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: str
    size: int


@dataclass(frozen=True, slots=True)
class PullResult:
    repository: str
    reference: str  # the tag or digest asked for
    digest: str  # what the reference resolved to (an index for multi-arch images)
    manifest_digest: str  # the image manifest pulled (== digest for single-arch)
    platform: str | None  # chosen from an index; None for a single-arch image
    layers: int
    bytes: int  # config + layers
    largest_layer: Descriptor | None
    seconds: float


def split_reference(ref: str) -> tuple[str, str]:
    """``repo:tag`` / ``repo@digest`` / ``repo`` → (repository, tag or digest)."""
    if "@" in ref:
        repository, _, digest = ref.partition("@")
        return repository, digest
    slash, colon = ref.rfind("/"), ref.rfind(":")
    if colon > slash:
        return ref[:colon], ref[colon + 1 :]
    return ref, "latest"


def parse_platform(text: str) -> tuple[str, str, str | None]:
    parts = text.strip().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"invalid platform {text!r} (use os/arch[/variant], e.g. linux/amd64)")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def select_platform(index: dict[str, Any], platform: str) -> tuple[Descriptor, str]:
    """The first entry of an index matching ``os/arch[/variant]`` (arm64's v8 = no variant)."""
    want_os, want_arch, want_variant = parse_platform(platform)
    seen: list[str] = []
    for item in index.get("manifests") or []:
        plat = item.get("platform") or {}
        name = "/".join(
            p for p in (plat.get("os"), plat.get("architecture"), plat.get("variant")) if p
        )
        seen.append(name or "?")
        variant = plat.get("variant")
        if plat.get("architecture") == "arm64" and variant == "v8":
            variant = None
        want = None if want_arch == "arm64" and want_variant == "v8" else want_variant
        if (plat.get("os"), plat.get("architecture")) != (want_os, want_arch):
            continue
        if want is not None and variant != want:
            continue
        return _descriptor(item), name
    available = ", ".join(s for s in seen if s != "unknown/unknown") or "none"
    raise NotFound(f"no manifest for platform {platform} (available: {available})")


def image_blobs(manifest: dict[str, Any], digest: str) -> tuple[Descriptor, list[Descriptor]]:
    """(config, layers) of an image manifest."""
    if manifest.get("schemaVersion") == 1:
        raise PullError(f"manifest {digest}: Docker schema 1 is not supported")
    try:
        config = _descriptor(manifest["config"])
        layers = [_descriptor(item) for item in manifest.get("layers") or []]
    except (KeyError, TypeError):
        raise PullError(f"manifest {digest}: not an image manifest") from None
    return config, layers


async def resolve(
    client: RegistryClient, repository: str, reference: str, platform: str = DEFAULT_PLATFORM
) -> tuple[Manifest, Manifest, str | None]:
    """(top-level manifest, image manifest, platform chosen or None)."""
    top = await client.manifest(repository, reference)
    if not top.is_index:
        return top, top, None
    descriptor, chosen = select_platform(top.json(), platform)
    image = await client.manifest(repository, descriptor.digest)
    return top, image, chosen


async def pull(
    ref: str,
    registry_url: str,
    *,
    platform: str = DEFAULT_PLATFORM,
    output: Path | None = None,
    auth: Credentials | None = None,
    verify_tls: bool = True,
    concurrency: int = DEFAULT_CONCURRENCY,
    client: RegistryClient | None = None,
) -> PullResult:
    """Pull ``ref`` (``repository:tag`` or ``repository@digest``) from ``registry_url``.

    Raises ``PullError`` (see registry.py) with a one-line message. Pass ``client``
    to reuse connections and tokens across pulls; otherwise a fresh one is used,
    as a container client would on its first pull.
    """
    if client is None:
        async with RegistryClient(registry_url, credentials=auth, verify_tls=verify_tls) as own:
            return await pull(
                ref,
                registry_url,
                platform=platform,
                output=output,
                concurrency=concurrency,
                client=own,
            )
    repository, reference = split_reference(ref)
    started = time.perf_counter()
    top, image, chosen = await resolve(client, repository, reference, platform)
    config, layers = image_blobs(image.json(), image.digest)
    layout = OciLayout(output) if output is not None else None
    limit = asyncio.Semaphore(max(1, concurrency))

    async def fetch(desc: Descriptor) -> int:
        async with limit:
            sink = layout.sink(desc.digest) if layout else None
            return await client.fetch_blob(repository, desc.digest, desc.size, sink)

    try:
        async with asyncio.TaskGroup() as group:  # one failure cancels the other fetches
            tasks = [group.create_task(fetch(d)) for d in [config, *layers]]
    except BaseExceptionGroup as failed:
        raise _first_error(failed) from None
    sizes = [task.result() for task in tasks]
    if layout is not None:
        layout.add_manifest(image, tag=None if ":" in reference else reference, platform=chosen)
    return PullResult(
        repository=repository,
        reference=reference,
        digest=top.digest,
        manifest_digest=image.digest,
        platform=chosen,
        layers=len(layers),
        bytes=sum(sizes),
        largest_layer=max(layers, key=lambda d: d.size, default=None),
        seconds=time.perf_counter() - started,
    )


class OciLayout:
    """An OCI image layout directory that pulls add blobs and manifests to."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}\n')

    def blob_path(self, digest: str) -> Path:
        algorithm, _, hex_ = digest.partition(":")
        return self.root / "blobs" / algorithm / hex_

    def sink(self, digest: str) -> FileSink:
        return FileSink(self.blob_path(digest))

    def add_manifest(self, manifest: Manifest, *, tag: str | None, platform: str | None) -> None:
        path = self.blob_path(manifest.digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(manifest.body)
        entry: dict[str, Any] = {
            "mediaType": manifest.media_type,
            "digest": manifest.digest,
            "size": len(manifest.body),
        }
        if platform:
            os_, arch, variant = parse_platform(platform)
            entry["platform"] = {"os": os_, "architecture": arch}
            if variant:
                entry["platform"]["variant"] = variant
        if tag:
            entry["annotations"] = {REF_NAME: tag}
        index_path = self.root / "index.json"
        index: dict[str, Any] = {"schemaVersion": 2, "manifests": []}
        if index_path.exists():
            with contextlib.suppress(ValueError):
                index = json.loads(index_path.read_text())
        kept = [
            m
            for m in index.get("manifests", [])
            if m.get("digest") != manifest.digest
            and not (tag and (m.get("annotations") or {}).get(REF_NAME) == tag)
        ]
        index["manifests"] = [*kept, entry]
        tmp = index_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(index, indent=2) + "\n")
        tmp.replace(index_path)


class FileSink:
    """Writes to ``<path>.partial``; renamed into place only after verification."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tmp = path.with_name(f"{path.name}.{os.getpid()}.{id(self)}.partial")
        self._file: BinaryIO | None = None

    def write(self, data: bytes) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self._tmp.open("wb")
        self._file.write(data)

    def commit(self) -> None:
        if self._file is None:  # an empty blob
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self._tmp.open("wb")
        self._file.close()
        self._tmp.replace(self.path)

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
        self._tmp.unlink(missing_ok=True)


def _descriptor(item: Any) -> Descriptor:
    if not isinstance(item, dict):
        raise PullError("malformed descriptor in manifest")
    digest, size = item.get("digest"), item.get("size")
    if not isinstance(digest, str) or not isinstance(size, int) or isinstance(size, bool):
        raise PullError("descriptor without digest or size in manifest")
    valid = valid_digest(digest)  # it becomes a URL and a file name next
    if valid is None:
        raise PullError(f"descriptor with an invalid digest {digest[:80]!r} in manifest")
    return Descriptor(str(item.get("mediaType") or ""), valid, size)


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to report from a failed task group: a PullError if there is one."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop(0)
        if isinstance(exc, BaseExceptionGroup):
            stack.extend(exc.exceptions)
        else:
            leaves.append(exc)
    return next((e for e in leaves if isinstance(e, PullError)), leaves[0])
