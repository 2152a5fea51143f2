"""Build real container images in pure Python (no engine, no network).

Contract:
- Every layer is a gzip'd tar (directories ``etc/`` and ``data/`` with a few text
  files, plus ``data/random.bin`` of ``size`` pseudo-random bytes when asked). Content
  is a pure function of the seed: the same arguments give the same digests.
- A config JSON carries architecture/os(/variant) and ``rootfs.diff_ids`` = sha256 of
  each uncompressed tar; the manifest is OCI or Docker schema2 (``fmt``); an index /
  manifest list of several platforms has one distinct image per platform.
- Manifests and configs are serialised with ``indent=3`` (as docker does), not
  canonical JSON, so a cache that re-serialises them changes their digest.
- With ``workdir`` the layer is streamed to a file there (a 1 GiB layer needs a few
  MiB of RAM); without, it is kept in memory.
- Client-visible digests: ``Layer.digest`` (the compressed bytes a client pulls),
  ``Layer.diff_id``, ``Image.config.digest``, ``Image.digest`` (manifest),
  ``ImageIndex.digest``.

``push`` (here for convenience) is ``push.push_image``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Literal, Protocol, cast

if TYPE_CHECKING:
    from .push import PushResult

Format = Literal["oci", "docker"]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"

MEDIA_TYPES: dict[Format, dict[str, str]] = {
    "oci": {"manifest": OCI_MANIFEST, "index": OCI_INDEX, "config": OCI_CONFIG, "layer": OCI_LAYER},
    "docker": {
        "manifest": DOCKER_MANIFEST,
        "index": DOCKER_LIST,
        "config": DOCKER_CONFIG,
        "layer": DOCKER_LAYER,
    },
}
ALL_MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)

CREATED = "2024-01-01T00:00:00Z"
TAR_MTIME = 1704067200  # CREATED as a Unix time
CHUNK = 1 << 20
DEFAULT_PLATFORMS: tuple[tuple[str, str, str | None], ...] = (
    ("linux", "amd64", None),
    ("linux", "arm64", "v8"),
)


def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> str:
    """``sha256:<hex>`` of a file, read in chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def dump_json(obj: object) -> bytes:
    """The serialisation used for every manifest and config (docker's indent=3)."""
    return json.dumps(obj, indent=3, sort_keys=False).encode()


@dataclass(frozen=True)
class Blob:
    """Content-addressed bytes held in memory (``data``) or in a file (``path``)."""

    media_type: str
    digest: str
    size: int
    data: bytes | None = None
    path: Path | None = None

    @classmethod
    def from_bytes(cls, media_type: str, data: bytes) -> Blob:
        return cls(media_type, sha256_digest(data), len(data), data=data)

    def open(self) -> BinaryIO:
        """A fresh binary stream over the content."""
        if self.data is not None:
            return io.BytesIO(self.data)
        assert self.path is not None
        return self.path.open("rb")

    def read(self) -> bytes:
        """All the bytes (avoid for huge spooled layers)."""
        if self.data is not None:
            return self.data
        assert self.path is not None
        return self.path.read_bytes()

    def descriptor(self, **extra: object) -> dict[str, object]:
        """An OCI descriptor ``{mediaType, digest, size, ...}``."""
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}


@dataclass(frozen=True)
class Layer:
    """A gzip'd tar layer: ``blob`` is what registries store, ``diff_id`` the tar's digest."""

    blob: Blob
    diff_id: str
    files: tuple[str, ...]

    @property
    def digest(self) -> str:
        return self.blob.digest

    @property
    def size(self) -> int:
        return self.blob.size


@dataclass(frozen=True)
class Platform:
    os: str = "linux"
    architecture: str = "amd64"
    variant: str | None = None

    def as_dict(self) -> dict[str, str]:
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        return out

    def __str__(self) -> str:
        base = f"{self.os}/{self.architecture}"
        return f"{base}/{self.variant}" if self.variant else base


@dataclass(frozen=True)
class Image:
    """One image: manifest bytes plus the config and layer blobs it references."""

    manifest: Blob
    config: Blob
    layers: tuple[Layer, ...]
    platform: Platform
    fmt: Format

    @property
    def digest(self) -> str:
        """The manifest digest (what ``@sha256:...`` references)."""
        return self.manifest.digest

    @property
    def media_type(self) -> str:
        return self.manifest.media_type

    @property
    def layer_digests(self) -> list[str]:
        return [layer.digest for layer in self.layers]

    @property
    def diff_ids(self) -> list[str]:
        return [layer.diff_id for layer in self.layers]

    @property
    def blobs(self) -> list[Blob]:
        """Config first, then layers: everything to upload before the manifest."""
        return [self.config, *(layer.blob for layer in self.layers)]


@dataclass(frozen=True)
class ImageIndex:
    """An OCI index or Docker manifest list over distinct per-platform images."""

    manifest: Blob
    images: tuple[Image, ...]
    fmt: Format

    @property
    def digest(self) -> str:
        return self.manifest.digest

    @property
    def media_type(self) -> str:
        return self.manifest.media_type

    def for_platform(self, platform: str) -> Image:
        """The child for ``"linux/arm64"`` (variant optional in the query)."""
        for image in self.images:
            if str(image.platform) == platform or (
                f"{image.platform.os}/{image.platform.architecture}" == platform
            ):
                return image
        raise KeyError(platform)

    @property
    def blobs(self) -> list[Blob]:
        seen: dict[str, Blob] = {}
        for image in self.images:
            for blob in image.blobs:
                seen.setdefault(blob.digest, blob)
        return list(seen.values())


# -- deterministic streams ---------------------------------------------------
class _RandomReader:
    """``size`` pseudo-random bytes from ``seed``, generated in fixed 1 MiB blocks."""

    def __init__(self, seed: str, size: int) -> None:
        self._rng = random.Random(seed)
        self._left = size
        self._block = b""
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        if self._pos >= len(self._block):
            if self._left <= 0:
                return b""
            size = min(CHUNK, self._left)
            self._block, self._pos = self._rng.randbytes(size), 0
            self._left -= size
        end = len(self._block) if n < 0 else min(len(self._block), self._pos + n)
        out = self._block[self._pos : end]
        self._pos = end
        return out


class _Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...

    def flush(self) -> None: ...


class _HashingWriter:
    """Hashes and counts bytes on their way to ``sink`` (write-only stream)."""

    def __init__(self, sink: _Sink) -> None:
        self.sink = sink
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes, /) -> int:
        self.hash.update(data)
        self.size += len(data)
        self.sink.write(data)
        return len(data)

    def flush(self) -> None:
        self.sink.flush()

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


def _tarinfo(name: str, size: int = 0, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime = TAR_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    if directory:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    else:
        info.mode = 0o644
        info.size = size
    return info


def _text_files(seed: str, count: int) -> list[tuple[str, bytes]]:
    files = [("etc/registry-cache-test", f"seed={seed}\n".encode())]
    for i in range(count):
        body = hashlib.sha256(f"{seed}/{i}".encode()).hexdigest() * (i + 1)
        files.append((f"data/file-{i}.txt", f"{seed} file {i}\n{body}\n".encode()))
    return files


def make_layer(
    seed: str,
    *,
    files: int = 3,
    size: int | None = None,
    fmt: Format = "oci",
    workdir: Path | None = None,
    compresslevel: int | None = None,
) -> Layer:
    """A deterministic layer; ``size`` adds ``data/random.bin`` of that many random bytes.

    ``compresslevel`` defaults to 6, or 0 when ``size`` is given: random bytes do not
    compress, and level 0 (stored deflate blocks, still valid gzip) runs at ~1 GB/s
    where level 1 manages ~50 MB/s.
    """
    level = compresslevel if compresslevel is not None else (6 if size is None else 0)
    names: list[str] = ["etc/", "data/"]
    tmp: Path | None = None
    sink: BinaryIO
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        tmp = workdir / f".layer-{os.getpid()}-{random.random():.12f}.tmp"
        sink = tmp.open("wb")
    else:
        sink = io.BytesIO()
    try:
        compressed = _HashingWriter(sink)
        with gzip.GzipFile(
            filename="", mode="wb", fileobj=compressed, compresslevel=level, mtime=0
        ) as gz:
            uncompressed = _HashingWriter(gz)
            with tarfile.open(
                fileobj=cast(BinaryIO, uncompressed), mode="w|", format=tarfile.PAX_FORMAT
            ) as tar:
                tar.addfile(_tarinfo("etc", directory=True))
                tar.addfile(_tarinfo("data", directory=True))
                for name, body in _text_files(seed, files):
                    tar.addfile(_tarinfo(name, len(body)), io.BytesIO(body))
                    names.append(name)
                if size is not None:
                    reader = _RandomReader(seed, size)
                    tar.addfile(_tarinfo("data/random.bin", size), reader)
                    names.append("data/random.bin")
    finally:
        if tmp is not None:
            sink.close()
    media_type = MEDIA_TYPES[fmt]["layer"]
    if tmp is not None and workdir is not None:
        final = workdir / f"{compressed.digest.split(':')[1]}.tar.gz"
        tmp.replace(final)
        blob = Blob(media_type, compressed.digest, compressed.size, path=final)
    else:
        assert isinstance(sink, io.BytesIO)
        blob = Blob(media_type, compressed.digest, compressed.size, data=sink.getvalue())
    return Layer(blob=blob, diff_id=uncompressed.digest, files=tuple(names))


def make_config(
    seed: str, platform: Platform, layers: Sequence[Layer], fmt: Format = "oci"
) -> Blob:
    """The image config JSON for ``layers`` on ``platform``."""
    config = {
        "architecture": platform.architecture,
        "os": platform.os,
        **({"variant": platform.variant} if platform.variant else {}),
        "created": CREATED,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
            "Labels": {"org.registry-cache.test.seed": seed},
        },
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [
            {"created": CREATED, "created_by": f"registry-cache test layer {i} ({seed})"}
            for i in range(len(layers))
        ],
    }
    return Blob.from_bytes(MEDIA_TYPES[fmt]["config"], dump_json(config))


def make_manifest(config: Blob, layers: Sequence[Layer], fmt: Format = "oci") -> Blob:
    """An image manifest referencing ``config`` and ``layers``."""
    media_type = MEDIA_TYPES[fmt]["manifest"]
    manifest = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": config.descriptor(),
        "layers": [layer.blob.descriptor() for layer in layers],
    }
    return Blob.from_bytes(media_type, dump_json(manifest))


def build_image(
    seed: str = "test",
    *,
    layers: int = 2,
    files: int = 3,
    layer_size: int | None = None,
    fmt: Format = "oci",
    platform: Platform | None = None,
    workdir: Path | None = None,
) -> Image:
    """A single-platform image with ``layers`` distinct layers.

    ``layer_size`` puts that many random bytes in the LAST layer only (the others stay
    small), which is what blob-streaming tests want.
    """
    platform = platform or Platform()
    built: list[Layer] = []
    for i in range(layers):
        size = layer_size if i == layers - 1 else None
        built.append(
            make_layer(f"{seed}/{platform}/{i}", files=files, size=size, fmt=fmt, workdir=workdir)
        )
    config = make_config(seed, platform, built, fmt)
    manifest = make_manifest(config, built, fmt)
    return Image(manifest=manifest, config=config, layers=tuple(built), platform=platform, fmt=fmt)


def build_index(
    seed: str = "test",
    *,
    platforms: Sequence[tuple[str, str, str | None]] = DEFAULT_PLATFORMS,
    layers: int = 2,
    files: int = 3,
    layer_size: int | None = None,
    fmt: Format = "oci",
    workdir: Path | None = None,
) -> ImageIndex:
    """An OCI index (or Docker manifest list) with one distinct image per platform."""
    images = tuple(
        build_image(
            seed,
            layers=layers,
            files=files,
            layer_size=layer_size,
            fmt=fmt,
            platform=Platform(os_, arch, variant),
            workdir=workdir,
        )
        for os_, arch, variant in platforms
    )
    media_type = MEDIA_TYPES[fmt]["index"]
    index = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [
            image.manifest.descriptor(platform=image.platform.as_dict()) for image in images
        ],
    }
    return ImageIndex(
        manifest=Blob.from_bytes(media_type, dump_json(index)), images=images, fmt=fmt
    )


def push(
    registry_url: str,
    repo: str,
    tag: str | None,
    image: Image | ImageIndex,
    auth: tuple[str, str] | None = None,
) -> PushResult:
    """Push ``image`` to ``registry_url``/``repo``:``tag``; see ``push.push_image``."""
    from .push import push_image

    return push_image(registry_url, repo, tag, image, auth=auth)
